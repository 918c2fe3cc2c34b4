"""Issue 17: a user's own data gives no silent garbage, no silent drops, and a report that
explains itself.  One test (or more) per defect of the issue, on tiny inputs."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from frad.cli import main

REPO = Path(__file__).resolve().parents[1]


def _noise_folder(root: Path, identities: int = 5, images: int = 6, size: int = 120) -> Path:
    rng = np.random.default_rng(17)
    for i in range(identities):
        d = root / f"person{i}"
        d.mkdir(parents=True)
        for j in range(images):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"img{j}.jpg")
    return root


def _face_folder(root: Path, counts: list[int]) -> Path:
    """Synthetic faces written as identity folders, ``counts[i]`` images for identity i."""
    assert main(["data", "synthetic", str(root), "--identities", str(len(counts)), "--images", str(max(counts)),
                 "--json"]) == 0
    for d, n in zip(sorted(p for p in root.iterdir() if p.is_dir()), counts):
        for f in sorted(d.iterdir())[n:]:
            f.unlink()
    return root


def _config(path: Path, **sections: dict) -> Path:
    data = {
        "name": "user", "threads": 1,
        "split": {"n_natural": 2, "n_source": 2, "min_head_images": 3},
        "classifier": {"max_epochs": 50},
        "attacks": {"attacks": [{"attack": "bim", "targeted": False, "epsilon": 0.03, "steps": 3}]},
        "detection": {"n_bootstrap": 0, "detector": {"max_epochs": 2}},
    }
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------- 1 + 8: noise in, a clear stop out
def test_noise_images_stop_with_the_setting_to_override(tmp_path: Path, capsys) -> None:
    data = _noise_folder(tmp_path / "noise")
    cfg = _config(tmp_path / "c.yaml", data={"source": "folder", "detector": "hog"},
                  split={"n_natural": 1, "n_source": 1, "min_head_images": 3})
    run = tmp_path / "run"
    assert main(["run", str(cfg), "--data", str(data), "--out", str(run), "--until", "recognition"]) == 2
    err = capsys.readouterr().err
    assert "found no face in 30 of 30 images" in err and "checks.max_face_fallback" in err
    # frad status says the stage failed, and why (not "interrupted")
    assert main(["status", str(run), "--json"]) == 0
    st = {s["stage"]: s for s in json.loads(capsys.readouterr().out)["stages"]}
    assert st["features"]["state"] == "failed" and "found no face" in st["features"]["error"]
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"features\s+failed", out) and "error: the face finder found no face" in out
    # past the face gate, the FR system is near chance on noise: the second gate stops it
    assert main(["run", str(cfg), "--data", str(data), "--out", str(run), "--until", "recognition",
                 "--set", "checks.max_face_fallback=1"]) == 2
    err = capsys.readouterr().err
    assert "near chance" in err and "checks.min_verification_auc" in err
    rec = json.loads((run / "stages" / "features.json").read_text())
    assert rec["status"] == "done" and rec["summary"]["face_finding"]["fallback"] == 30


# ---------------------------------------------------------------- 4: small datasets
def test_small_identities_are_counted_as_dropped_and_named(tmp_path: Path, capsys) -> None:
    data = _face_folder(tmp_path / "faces", [8, 8, 8, 8, 5, 5, 4])
    cfg = _config(tmp_path / "c.yaml", data={"source": "folder", "max_identities": 3})
    run = tmp_path / "run"
    assert main(["run", str(cfg), "--data", str(data), "--out", str(run), "--until", "data"]) == 0
    rec = json.loads((run / "stages" / "data.json").read_text())["summary"]
    assert rec["identities"] == 3
    assert rec["dropped_identities"] == 3 and rec["dropped_images"] == 14
    assert rec["warnings"] and "3 identities (14 images) were left out" in rec["warnings"][0]
    assert "left out for having fewer than 7" in (run / "log.txt").read_text()
    # a min_images above what the split needs: one message naming the setting to change
    cfg2 = _config(tmp_path / "c2.yaml", data={"source": "folder", "min_images": 10})
    assert main(["run", str(cfg2), "--data", str(data), "--out", str(tmp_path / "run2"), "--until", "data"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "data.min_images = 10" in err and "data.min_images=null" in err and "needs 7" in err


def test_thin_representatives_warn() -> None:
    from frad.pipeline.checks import thin_representatives

    assert thin_representatives([2, 2, 3, 1]) is not None and "about 2 image" in thin_representatives([2, 2, 3, 1])
    assert thin_representatives([5, 6, 4]) is None


# ---------------------------------------------------------------- 5: folders not named like LFW
def test_a_folder_not_named_like_lfw_gets_a_hint(tmp_path: Path, capsys) -> None:
    from frad.data.lfw import lfw_image_root
    from frad.errors import DataError

    data = _face_folder(tmp_path / "mine" / "images", [8, 8, 8])  # called 'images', not LFW's naming
    with pytest.raises(DataError, match="no LFW image folder"):
        lfw_image_root(tmp_path / "mine")
    cfg = _config(tmp_path / "c.yaml")
    assert main(["run", str(cfg), "--data", str(data.parent), "--out", str(tmp_path / "run"), "--until", "data"]) == 2
    assert "set data.source=folder" in capsys.readouterr().err
    # the shared LFW copy keeps working (its images/ folder holds Name/Name_0001.jpg)
    lfw = os.environ.get("FRAD_LFW_DIR") or "/work/shared/data/lfw"
    if Path(lfw, "images").is_dir():
        assert lfw_image_root(lfw).name == "images"


# ---------------------------------------------------------------- 2 + 3: which sources are attacked
def test_misrecognised_sources_are_left_out_and_counted() -> None:
    from frad.pipeline.sources import recognised_sources

    sel = recognised_sources(["a", "b", "c", "d"], np.array([0, 1, 2, 3]), np.array([0, 2, 2, 1]))
    assert sel.ids == ["a", "c"] and sel.left_out == ["b", "d"]
    assert sel.summary()["left_out_misrecognised"] == 2 and "2 of 4 source images" in sel.warning()


def test_max_sources_caps_the_sources_not_the_pooled_test_split() -> None:
    from frad.pipeline.sources import deep_features_sources

    sources = [f"s{i}" for i in range(20)]
    test_split = {f"n{i}" for i in range(30)} | set(sources[:12])  # natural and source ids pooled
    chosen = deep_features_sources(sources, set(sources) - {"s0"}, test_split, 8, seed=0)
    assert len(chosen) == 8 and set(chosen) <= set(sources[1:12])
    assert chosen == deep_features_sources(sources, set(sources) - {"s0"}, test_split, 8, seed=0)
    assert deep_features_sources(sources, set(sources), None, None, 0) == sorted(sources)


def test_pipeline_attacks_only_recognised_sources(pipeline_run: Path, tmp_path: Path, monkeypatch) -> None:
    """The classifier 'gets two sources wrong': they are not attacked, and are counted; the
    deep-features cap gives exactly the sources asked for."""
    import frad.pipeline.sources as src_mod
    from frad.attacks import load_results

    run = tmp_path / "run"
    shutil.copytree(pipeline_run, run)
    real = src_mod.recognised_sources
    wrong: list[str] = []

    def fake(source_ids, labels, predicted, system="classifier"):  # noqa: ANN001, ANN202
        predicted = np.array(predicted).copy()
        if system == "classifier":
            predicted[:2] = (np.asarray(labels)[:2] + 1) % 5
            wrong[:] = [str(i) for i in list(source_ids)[:2]]
        return real(source_ids, labels, predicted, system)

    monkeypatch.setattr(src_mod, "recognised_sources", fake)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["deep_features"]["max_sources"] = 3
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(cfg_path), "--out", str(run), "--until", "deep_features", "--force", "attacks"]) == 0
    rec = json.loads((run / "stages" / "attacks.json").read_text())["summary"]
    assert rec["selection"]["left_out_misrecognised"] == 2
    res = load_results(run / "attacks" / "classifier")
    attacked = {str(s) for s in res.table["source_id"]}
    assert wrong and not attacked & set(wrong)
    assert not any(ok and it == 0 for ok, it in zip(res.table["success"], res.table["iterations"]))
    df = json.loads((run / "stages" / "deep_features.json").read_text())["summary"]
    assert df["sources"] == 3
    assert any("rest on 3 source images" in w for w in df["warnings"])


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_pipeline import TINY

    d = tmp_path_factory.mktemp("p17")
    (d / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    assert main(["run", str(d / "tiny.yaml"), "--out", str(d / "run")]) == 0
    return d / "run"


# ---------------------------------------------------------------- 6: the report explains itself
def test_report_names_network_dataset_and_abbreviations(pipeline_run: Path, capsys) -> None:
    results = json.loads((pipeline_run / "results.json").read_text())
    assert results["network"]["name"] == "dlib_resnet_v1"
    ff = results["dataset"]["face_finding"]
    assert ff["images"] > 0 and ff["searched"] == 0  # synthetic chips: taken as they are
    html = (pipeline_run / "report.html").read_text()
    head = html[: html.index('id="tables"')]
    assert "<dt>Network</dt><dd>dlib_resnet_v1" in head and "<dt>Dataset</dt>" in head
    assert "<dt>Face finding</dt>" in head
    # the banner states this run's own scale, not a config's fixed text
    ident = results["dataset"]["identities"]
    assert re.search(rf"Demo-scale run[^<]*This run: {ident} identities", html)
    # every abbreviation the tables use is explained
    for abbr in ("M / C", "T / UT", "CW", "BIM", "MI-FGSM", "DF", "AUC", "EER", "MPP", "Org / Adv"):
        assert f"<dt>{abbr}</dt>" in html, abbr
    md = (pipeline_run / "report.md").read_text()
    assert "## Abbreviations" in md and "**M / C:**" in md


def test_tables_1_2_put_the_paper_beside_the_run_in_the_papers_order(pipeline_run: Path) -> None:
    from frad.evaluation.paper import paper_table

    results = json.loads((pipeline_run / "results.json").read_text())
    for tid in ("table1", "table2"):
        t = results["tables"][tid]
        p = paper_table(tid)
        assert t["columns"] == ["Configuration", "BIM", "BIM (paper)", "CW", "CW (paper)", "MI-FGSM",
                                "MI-FGSM (paper)", "Macro-AUC", "Macro-AUC (paper)"]
        assert [r[0] for r in t["rows"]] == [r[0] for r in p["rows"]]
        for row, prow in zip(t["rows"], p["rows"]):
            assert row[2::2] == prow[1:]


def test_one_unit_per_quantity(pipeline_run: Path, tmp_path: Path, capsys) -> None:
    results = json.loads((pipeline_run / "results.json").read_text())
    s, labels = results["summary"], results["summary_labels"]
    assert set(s) <= set(labels)
    rates = [k for k, (_, fmt) in labels.items() if fmt == "pct1" and k in s]
    assert any(k.startswith("deep_features_success") for k in rates)
    for k in rates:
        assert 0.0 <= s[k] <= 1.0, (k, s[k])  # fractions everywhere, printed as percentages
    for tid in ("table3", "table4", "df_success", "mpp"):
        t = results["tables"][tid]
        for i, (c, f) in enumerate(zip(t["columns"], t["formats"])):
            if c in ("Targeted", "Untargeted") or c.endswith(("Original", "Adversarial")):
                assert f == "pct1"
                assert all(r[i] is None or 0 <= r[i] <= 1 for r in t["rows"]), (tid, c)
    fr = {r[0]: r[1] for r in results["tables"]["fr_system"]["rows"]}
    assert all(isinstance(v, dict) and v["format"] == "pct1" and 0 <= v["value"] <= 1
               for k, v in fr.items() if "top-" in k)
    html = (pipeline_run / "report.html").read_text()
    assert "deep_features_success_" not in html.split('id="config"')[0]  # labels, not raw keys
    cfg = tmp_path / "c.yaml"
    cfg.write_text((pipeline_run / "config.yaml").read_text())
    assert main(["run", str(cfg), "--out", str(pipeline_run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert all(0 <= out["summary"][k] <= 1 for k in rates)


def test_verification_figures_bin_at_the_threshold(pipeline_run: Path) -> None:
    results = json.loads((pipeline_run / "results.json").read_text())
    for fid in ("figure10", "figure11"):
        data = results["figures"][fid]["data"]
        thr = data["threshold"]
        for by_setting in data["rows"].values():
            for r in by_setting.values():
                assert any(abs(e - thr) < 1e-12 for e in r["bin_edges"]), fid


def test_verification_figure_draws_each_attack_in_its_own_panel() -> None:
    from frad.evaluation.figures import plot_verification
    from frad.evaluation.scenarios import verification_rates

    rng = np.random.default_rng(0)
    o, a = rng.uniform(-1, 1, 50), rng.uniform(-1, 1, 50)
    r = verification_rates(o, a, 0.91, "impersonation", bins=40, value_range=(-1, 1))
    assert 0.91 in r["bin_edges"]
    summary = {"scenario": "impersonation", "threshold": 0.91, "metric": "cosine",
               "rows": {"δ = 5": {"targeted": r}, "δ = 7": {"targeted": r}}}
    fig = plot_verification(summary)
    axes = [ax for ax in fig.axes if ax.lines]
    assert len(axes) == 2  # identical curves of δ = 5 and δ = 7 are both visible


def test_readme_figure_list_matches_the_report() -> None:
    from frad.pipeline.report import FIGURE_ORDER

    readme = (REPO / "README.md").read_text()
    assert "Figures 2-12" not in readme
    numbers = sorted(int(f.removeprefix("figure")) for f in FIGURE_ORDER)
    assert numbers == [2, 3, 6, 7, 8, 9, 10, 11, 12]
    assert "Figures 2, 3 and 6-12" in readme


# ---------------------------------------------------------------- 7: docs agree, configs ship
def test_docs_agree_with_each_other_and_the_configs() -> None:
    readme = (REPO / "README.md").read_text()
    conf = (REPO / "docs" / "configuration.md").read_text()
    demo = yaml.safe_load((REPO / "src" / "frad" / "configs" / "demo.yaml").read_text())
    n = demo["data"]["max_identities"]
    for text in (readme, conf):
        assert f"{n} LFW identities" in text
        assert not re.search(r"\b(?!%d\b)\d+ LFW identities, one budget" % n, text)
    assert "every key is optional" not in conf.lower() or "except `attacks.attacks`" in conf
    assert "FRAD_CACHE_DIR" in readme and "cache folder" in readme
    for key in ("rel_stepsize", "abs_stepsize", "search_steps", "early_stop"):
        assert f"`{key}`" in conf, key
    assert "under 2 h" not in conf.split("## Top level")[0] or "about 20 min" in conf
    assert "~20 min" in readme and "about 20 min" in conf  # lfw-dlib.yaml, both docs
    assert "~5 min" in readme and "about 5 min" in conf


def test_shipped_config_names_work_outside_a_checkout(tmp_path: Path, monkeypatch, capsys) -> None:
    from frad.cli.run_cmd import resolve_config_path

    monkeypatch.chdir(tmp_path)
    for name in ("configs/demo.yaml", "demo.yaml", "demo"):
        p = resolve_config_path(name)
        assert p.is_file() and p.name == "demo.yaml", name
    # the config is found; a bad --data is reported before the run folder exists
    assert main(["run", "configs/demo.yaml", "--data", str(tmp_path / "nope"), "--out", "runs/x"]) == 2
    err = capsys.readouterr().err
    assert "data.path" in err and "does not exist" in err and "cannot read the config" not in err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- 8: status shows shard progress
def test_status_of_an_interrupted_attack_stage_shows_shards(pipeline_run: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(pipeline_run, run)
    rec_path = run / "stages" / "attacks.json"
    rec = json.loads(rec_path.read_text())
    rec["status"] = "running"
    rec_path.write_text(json.dumps(rec))
    shards = sorted((run / "attacks" / "classifier").glob("*/shard-*.csv"))
    shards[0].unlink()
    assert main(["status", str(run), "--json"]) == 0
    st = {s["stage"]: s for s in json.loads(capsys.readouterr().out)["stages"]}
    assert st["attacks"]["state"] == "interrupted"
    assert st["attacks"]["shards"]["done"] == len(shards) - 1 == st["attacks"]["shards"]["total"] - 1
    assert main(["status", str(run)]) == 0
    assert f"shards {len(shards) - 1} of {len(shards)} finished" in capsys.readouterr().out


# ---------------------------------------------------------------- 9: permissions
@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_respect_the_umask(tmp_path: Path, umask: int) -> None:
    from matplotlib.figure import Figure

    from frad.evaluation.plots import save_figure
    from frad.utils.io import save_npz, write_json

    old = os.umask(umask)
    try:
        write_json(tmp_path / "r.json", {"a": 1})
        save_npz(tmp_path / "a.npz", x=np.zeros(3))
        save_figure(Figure(), tmp_path / "f.png")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    want = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert want == 0o666 & ~umask
    for name in ("r.json", "a.npz", "f.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == want, name


# ---------------------------------------------------------------- 10: detector training threads
def test_small_model_stages_run_on_one_thread_and_restore(tmp_path: Path) -> None:
    from frad.pipeline import run as R
    from frad.pipeline.config import config_from_dict
    from frad.pipeline.context import RunContext
    from frad.pipeline.stages import STAGES, Stage

    assert {s.name for s in STAGES if s.small_models} == {"detectors", "benchmark"}  # both train small models
    seen: list[int] = []
    stage = Stage("probe", "probe", (), lambda cfg: {}, lambda ctx: seen.append(torch.get_num_threads()) or {},
                  small_models=True)
    ctx = RunContext(config_from_dict({"device": "cpu", "attacks": {"attacks": [{"attack": "bim", "epsilon": 0.03}]}}),
                     tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        R._run_stage(ctx, stage, "fp", None)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
