"""frad run on a tiny config: the whole pipeline, resuming, status, config errors."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from frad.cli import main
from frad.pipeline import config as C

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny",
    "seed": 0,
    "threads": 1,
    "data": {"source": "synthetic", "synthetic": {"identities": 5, "images_per_identity": 12}},
    "split": {"n_natural": 2, "n_source": 3, "min_head_images": 3},
    "classifier": {"max_epochs": 300},
    "attacks": {
        "shard_size": 5,
        "batch_size": 5,
        "attacks": [
            {"attack": "bim", "targeted": [True, False], "epsilon": 0.03, "steps": 5},
            {"attack": "mifgsm", "targeted": [True, False], "epsilon": 0.03, "steps": 5},
            {"attack": "cw_l2", "targeted": [True, False], "binary_search_steps": 2, "steps": 20},
        ],
    },
    "deep_features": {"deltas": [5, 10], "max_iter": 50, "workers": 1},
    "detection": {"n_bootstrap": 50, "detector": {"max_epochs": 5, "batch_size": 64}},
    "benchmark": {"detectors": ["lstm-medoid-cosine", "mahalanobis", "mahalanobis-unsupervised", "lid", "deep-knn",
                                "fusion"]},
    "report": {"demo": True, "examples": 2},
    # off for the runs that test other stages; tiny_security_run turns it on
    "security": {"enabled": False, "max_sources": 2, "bim_steps": 2, "cw_binary_search_steps": 1, "cw_steps": 4,
                 "deep_features_max_iter": 4, "curve_epsilons": [0.01, 0.03], "batch_size": 8},
}
SECURE = {**TINY, "security": {**TINY["security"], "enabled": True}}


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def comparable(results: dict) -> dict:
    """results.json without what legitimately differs between runs (times, paths, dates)."""
    drop = {"created", "seconds", "stages", "fit_seconds", "seconds_per_epoch", "run"}

    def clean(x):  # noqa: ANN001, ANN202
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if k not in drop}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return clean(results)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny")
    cfg = write_config(d / "tiny.yaml", TINY)
    t0 = time.perf_counter()
    assert main(["run", str(cfg), "--out", str(d / "run")]) == 0
    elapsed = time.perf_counter() - t0
    assert elapsed < 120, f"the tiny pipeline took {elapsed:.0f} s"
    return d / "run"


@pytest.fixture(scope="module")
def tiny_security_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run with the security stage turned on: only it and the report run."""
    import shutil

    d = tmp_path_factory.mktemp("tiny-security")
    shutil.copytree(tiny_run, d / "run")
    cfg = write_config(d / "secure.yaml", SECURE)
    assert main(["run", str(cfg), "--out", str(d / "run")]) == 0
    log = (d / "run" / "log.txt").read_text()
    assert re.search(r"stage benchmark\s+up to date, skipped", log) and "security: 3 detectors" in log
    return d / "run"


def test_tiny_pipeline_fills_every_table(tiny_run: Path) -> None:
    results = json.loads((tiny_run / "results.json").read_text())
    assert results["dataset"]["synthetic"] is True
    for tid in ("fr_system", "attack_success", "table1", "table2", "table3", "table4", "table5", "table6", "df_success"):
        table = results["tables"][tid]
        assert table["rows"], tid
        for row in table["rows"]:
            assert all(cell is not None and cell != "" for cell in row), (tid, row)
    for fid in ("figure2", "figure3", "figure6", "figure7", "figure8", "figure9", "figure10", "figure11", "figure12"):
        assert (tiny_run / results["figures"][fid]["file"]).is_file(), fid
    html = (tiny_run / "report.html").read_text()
    assert "synthetic" in html.lower() and "demo" in html.lower()
    assert (tiny_run / "report.md").is_file()
    assert (tiny_run / "split.csv").is_file()


def test_status_and_second_run_skips_everything(tiny_run: Path, capsys, tmp_path: Path) -> None:
    assert main(["status", str(tiny_run), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["complete"] and all(s["state"] == "done" for s in st["stages"])
    cfg = write_config(tmp_path / "tiny.yaml", TINY)
    assert main(["run", str(cfg), "--out", str(tiny_run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ran"] == [] and len(out["skipped"]) == len(st["stages"])


def test_changed_detector_settings_rerun_only_what_follows(tiny_run: Path, tmp_path: Path, capsys) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    changed = json.loads(json.dumps(TINY))
    changed["detection"]["n_bootstrap"] = 20
    cfg = write_config(tmp_path / "changed.yaml", changed)
    assert main(["run", str(cfg), "--out", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # the benchmark reuses the detectors' settings; the security stage attacks the benchmark's detectors
    assert out["ran"] == ["detectors", "benchmark", "security", "report"]


def test_interrupted_attack_stage_resumes_to_the_same_results(tiny_run: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "tiny.yaml", TINY)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "frad", "run", str(cfg), "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not list((run / "attacks" / "classifier").glob("*/shard-00000.csv")):
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run / "results.json").exists()
    assert main(["run", str(cfg), "--out", str(run)]) == 0
    log = (run / "log.txt").read_text()
    assert re.search(r"stage data\s+up to date, skipped", log)
    assert "resuming an interrupted run" in log
    assert re.search(r"skipped \d+ complete shard", log)
    a = comparable(json.loads((tiny_run / "results.json").read_text()))
    b = comparable(json.loads((run / "results.json").read_text()))
    assert a == b


def test_security_stage_fills_its_tables_and_summary(tiny_security_run: Path, capsys) -> None:
    run = tiny_security_run
    results = json.loads((run / "results.json").read_text())
    sec = json.loads((run / "security" / "results.json").read_text())
    # paper-best, mahalanobis and frad-best: three detectors, each with its role
    assert set(sec["detectors"]) == {"lstm-medoid-cosine", "mahalanobis", "fusion"}
    assert sec["detectors"]["fusion"]["roles"] == ["frad-best"]
    assert sec["sources"]["attacked"] == 2
    verdict = results["tables"]["security"]
    assert [r[0].split(" [")[0] for r in verdict["rows"]] == [sec["detectors"][d]["title"] for d in sec["detectors"]]
    for row in verdict["rows"]:
        assert all(0.0 <= v <= 1.0 for v in row[2:8])
        assert row[4] >= max(row[2], row[3]) and row[7] >= max(row[5], row[6])  # either: per source, the better
    assert any("BPDA" in n for n in verdict["notes"])
    cells = results["tables"]["security_float32"]["rows"]
    assert len(cells) == 3 * 3 * 2 and len(results["tables"]["security_uint8"]["rows"]) == len(cells)
    # one cell recomputed from the stage's per-source outcomes: targeted BIM against Mahalanobis
    unit = json.loads((run / "security" / "units" / "adaptive-mahalanobis-bim-targeted-0.03.json").read_text())
    o = unit["outcomes"]["mahalanobis"]["float32"]
    thr = sec["detectors"]["mahalanobis"]["threshold"]["targeted"]
    through = sum(f and s < thr for f, s in zip(o["fooled"], o["score"])) / 2
    row = next(r for r in sec["rows"] if (r["detector"], r["attack"], r["goal"], r["rounding"])
               == ("mahalanobis", "bim", "targeted", "float32"))
    assert row["adaptive_through"] == through
    # the curve: one point per budget, detector, float32 / uint8
    assert sorted({r["budget"] for r in sec["curve"]}) == [0.01, 0.03] and len(sec["curve"]) == 2 * 3 * 2
    assert (run / results["figures"]["security_curve"]["file"]).is_file()
    key = "security_mahalanobis_through_adaptive"
    assert results["summary"][key] is not None and key in results["summary_labels"]
    report = (run / "report.md").read_text()
    assert "Security: share of attacks that get through undetected at 5% false positives" in report
    assert main(["run", str(write_config(run.parent / "again.yaml", SECURE)), "--out", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ran"] == [] and key in out["summary"]


def test_interrupted_security_stage_resumes_its_finished_runs(tiny_security_run: Path, tmp_path: Path) -> None:
    """A security stage stopped after some attack runs redoes only the others, and ends with the
    numbers of the uninterrupted stage."""
    import shutil

    import frad

    run = tmp_path / "run"
    shutil.copytree(tiny_security_run, run)
    units = sorted((run / "security" / "units").glob("*.json"))
    redo = [units[0], units[-1]]
    kept = {p.name: p.read_bytes() for p in units if p not in redo}
    lost = {p.name: json.loads(p.read_text()) for p in redo}
    # the state an interruption leaves: some runs saved, no results, the stage's record 'running'
    for p in redo:
        p.unlink()
    (run / "security" / "results.json").unlink()
    rec = json.loads((run / "stages" / "security.json").read_text())
    (run / "stages" / "security.json").write_text(json.dumps({**rec, "status": "running"}))
    out = frad.run(write_config(tmp_path / "secure.yaml", SECURE), run)
    assert out.ran == ["security", "report"]
    log = (run / "log.txt").read_text()
    assert "resuming an interrupted run" in log
    assert re.search(rf"{len(units)} attack runs, {len(units) - 2} done already", log)
    assert {p.name: p.read_bytes() for p in units if p not in redo} == kept  # not redone
    for p in redo:  # redone, to the same outcomes
        again = json.loads(p.read_text())
        assert again["key"] == lost[p.name]["key"] and again["outcomes"] == lost[p.name]["outcomes"]
    a = comparable(json.loads((tiny_security_run / "results.json").read_text()))
    b = comparable(json.loads((run / "results.json").read_text()))
    assert a == b


# ---------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"split": {"n_naturel": 2}}, "split.n_naturel: unknown setting"),
        ({"split": {"n_natural": "two"}}, "split.n_natural: an integer is needed"),
        ({"data": {"source": "synthetic", "synthetic": {"identities": 5, "images_per_identity": 6}}},
         "data.synthetic.images_per_identity = 6 is fewer than the split needs"),
        ({"data": {"min_images": 5}, "split": {"n_natural": 10}}, "more than data.min_images"),
        ({"detection": {"configurations": ["lstm-mean-euclidean"]}}, "detection.configurations"),
        ({"attacks": {"attacks": [{"attack": "bim", "epsilon": 0.03, "stepz": 3}]}}, "unknown parameter"),
        ({"deep_features": {"deltas": [0]}}, "deep_features.deltas: a positive number"),
        ({"model": {"name": "resnet9000"}}, "model.name: unknown face model"),
        ({"detection": {"test_size": 1.5}}, "detection.test_size"),
        ({"security": {"detectors": ["lstm-centroid-euclidean"]}}, "security.detectors: lstm-centroid-euclidean not among"),
        ({"security": {"attacks": ["pgd"]}}, "security.attacks[0]: one of"),
    ],
)
def test_bad_config_fails_before_any_work_with_one_line(tmp_path: Path, capsys, change: dict, message: str) -> None:
    data = json.loads(json.dumps(TINY))
    for k, v in change.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    cfg = write_config(tmp_path / "bad.yaml", data)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "bad.yaml" in err
    assert not out.exists()


def test_shipped_configs_are_valid() -> None:
    for path in sorted((REPO / "configs").glob("*.yaml")):
        C.load_config(path, {"data.path": "/nonexistent"} if "synthetic" not in path.name else {})


def test_every_setting_is_documented() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()

    def walk(cls: type, prefix: str) -> list[str]:
        out = []
        for f in dataclasses.fields(cls):
            sub = getattr(C, f.type, None) if isinstance(f.type, str) else None
            key = f"{prefix}{f.name}"
            if sub is not None and dataclasses.is_dataclass(sub):
                out += walk(sub, "" if cls is C.ExperimentConfig else f"{key}.")
            else:
                out.append(key)
        return out

    keys = walk(C.ExperimentConfig, "")
    missing = [k for k in keys if f"`{k}`" not in doc]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_frad_run_from_python_takes_a_file_and_overrides(tmp_path: Path) -> None:
    """``frad.run`` is ``frad run`` from Python: a YAML path plus ``--set``-style overrides."""
    import frad

    cfg = write_config(tmp_path / "tiny.yaml", TINY)
    out = frad.run(cfg, tmp_path / "run", overrides={"seed": 3}, until="data")
    assert out.ran == ["data"]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["seed"] == 3
    with pytest.raises(C.ConfigError, match="overrides apply to a config file"):
        frad.run(C.load_config(cfg), tmp_path / "run2", overrides={"seed": 1})


# ---------------------------------------------------------------- executors
@pytest.fixture()
def local_ray():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'frad[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _interrupt_after(monkeypatch, shards: int) -> None:
    """Make the attacks stage stop (as Ctrl-C would) once ``shards`` shards are written."""
    import frad.attacks.runner as runner

    written = []
    real = runner.write_shard

    def write_then_maybe_stop(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        real(*args, **kwargs)
        written.append(args[1:3])
        if len(written) == shards:
            raise KeyboardInterrupt

    monkeypatch.setattr(runner, "write_shard", write_then_maybe_stop)


@pytest.mark.parametrize(("first", "then"), [("local", "ray"), ("ray", "local")])
def test_a_run_interrupted_under_one_executor_resumes_under_the_other(
    tiny_run: Path, tmp_path: Path, monkeypatch, local_ray, first: str, then: str
) -> None:
    """Resume, status and results do not know which executor ran: the resumed run's
    results.json equals the uninterrupted local run's."""
    import frad

    cfg = write_config(tmp_path / "tiny.yaml", TINY)
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        with pytest.raises(KeyboardInterrupt):
            frad.run(cfg, run, overrides={"executor": first})
    shards = list((run / "attacks" / "classifier").glob("*/shard-*.csv"))
    assert len(shards) == 2 and not (run / "results.json").exists()
    frad.run(cfg, run, overrides={"executor": then})
    assert "resuming an interrupted run" in (run / "log.txt").read_text()
    a = comparable(json.loads((tiny_run / "results.json").read_text()))
    b = comparable(json.loads((run / "results.json").read_text()))
    assert a == b


def test_run_context_invalidates_and_provides_only_its_artefacts(tmp_path: Path) -> None:
    from frad.pipeline.context import RunContext

    ctx = RunContext(C.config_from_dict(TINY), tmp_path)
    assert {"model", "dataset", "split", "features", "head", "classifier", "identifier"} <= set(ctx.artefacts())
    ctx.provide("metric", "cosine")
    assert ctx.metric == "cosine"
    ctx.invalidate("metric")
    assert "metric" not in ctx.__dict__
    with pytest.raises(AttributeError, match="no artefact splt"):
        ctx.invalidate("splt")


def test_detect_gives_the_verdicts_of_the_runs_own_evaluation(tiny_run: Path, tmp_path: Path) -> None:
    """`frad detect` on natural images and on adversarials the run wrote as PNG files agrees with
    the run's detector on the run's own features (feature cache; cached uint8 adversarial features)."""
    import numpy as np
    from PIL import Image

    from frad.detection import load_run_detector
    from frad.pipeline.context import RunContext
    from frad.pipeline.detect import export_adversarials
    from frad.pipeline.run import open_run_config
    from frad.utils.io import load_npz

    ctx = RunContext(open_run_config(tiny_run), tiny_run)
    det = load_run_detector(tiny_run)
    nat_idx = ctx.split.indices("natural")[:20]
    chips = ctx.images(nat_idx)
    nat_dir = tmp_path / "natural"
    nat_dir.mkdir()
    expected: dict[str, tuple[bool, float]] = {}
    nat_feats = {t: v[nat_idx] for t, v in ctx.features.taps.items()}
    nat_scores = det.score_features(nat_feats)
    for i, chip in enumerate(chips):
        p = nat_dir / f"natural-{i:02d}.png"
        Image.fromarray(chip).save(p)
        expected[str(p)] = (bool(nat_scores[i] >= det.threshold_), float(nat_scores[i]))

    adv_dir = tmp_path / "adversarial"
    files = export_adversarials(tiny_run, adv_dir, limit=20)
    from frad.attacks import load_results

    res = load_results(tiny_run / "attacks" / "classifier")
    n_adv = 0
    for f in files:
        attack, src = f.stem.split("--")
        cache = tiny_run / "trajectories" / "adversarial_uint8" / "classifier" / f"{attack}.npz"
        z = load_npz(cache)
        srcs = ["".join(c if c.isalnum() or c in "-_." else "_" for c in str(s))
                for s in res.table["source_id"][res.rows(attack)]]
        j = srcs.index(src)
        pos = np.flatnonzero(z["rows"] == j)
        if pos.size == 0:
            continue  # a training-side source: the run evaluates only test sources as uint8
        s = det.score_features({t: z[t][pos] for t in det.taps_})[0]
        expected[str(f)] = (bool(s >= det.threshold_), float(s))
        n_adv += 1
    assert n_adv >= 4
    (tmp_path / "notes.txt").write_text("not an image")

    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["detect", str(tiny_run), str(nat_dir), str(adv_dir), str(tmp_path / "notes.txt"), "--json"]) == 0
    out = json.loads(buf.getvalue())
    got = {r["file"]: r for r in out["images"] if r["face"]}
    for path, (verdict, score) in expected.items():
        assert got[path]["adversarial"] == verdict, path
        assert got[path]["score"] == pytest.approx(score, abs=1e-5), path
        assert got[path]["identity"].startswith("synthetic")
    assert [s["file"] for s in out["skipped"]] == [str(tmp_path / "notes.txt")]
    assert out["threshold"] == det.threshold_
