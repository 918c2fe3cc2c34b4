"""report.compare_with: other runs beside this one in its report (frad.pipeline.peers).

Two small run folders are written by hand (results.json with the tables the pipeline makes,
built with the pipeline's own table builders, and stage records); the orderings' counts are
made by :func:`frad.evaluation.detection.check_orderings` on detector AUCs chosen so that the
counts are known in advance.  The end-to-end check (``frad run`` reruns only the report) is in
test_pipeline_transfer.py, on its tiny run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from frad.errors import ConfigError
from frad.evaluation.detection import check_orderings
from frad.evaluation.transfer import transfer_table
from frad.pipeline.config import config_from_dict
from frad.pipeline.peers import add_peers, load_peer, orderings_of, resolve_peer
from frad.pipeline.report import render_markdown, write_report
from frad.pipeline.results import _orderings
from frad.pipeline.stages import STAGES

ATTACKS = [("bim-T-eps0.03", "targeted"), ("bim-U-eps0.03", "untargeted"), ("cw_l2-T", "targeted"),
           ("cw_l2-U", "untargeted"), ("deep_features-delta5", "targeted"), ("deep_features-delta5", "untargeted")]


def detector_results(*, lstm_wins: int, cw_miss_pairs: int) -> dict[str, Any]:
    """AUCs of the paper's 8 configurations x 2 settings: untargeted always below targeted; the
    LSTM ahead of its MLP in the first ``lstm_wins`` of the 8 (setting, representative, metric)
    pairs; CW not the lowest family in both configurations of the first ``cw_miss_pairs`` pairs."""
    dets: dict[str, Any] = {}
    for s_i, setting in enumerate(("targeted", "untargeted")):
        dets[setting] = {}
        for k, (rep, met) in enumerate([(r, m) for r in ("medoid", "centroid") for m in ("euclidean", "cosine")]):
            pair = 4 * s_i + k
            for arch in ("lstm", "mlp"):
                b = 0.90 - 0.15 * s_i - 0.01 * k + (0.02 if (arch == "lstm") == (pair < lstm_wins) else 0.0)
                fams = {"BIM": b + 0.04, "MI-FGSM": b + 0.03, "CW": b - 0.07 if pair >= cw_miss_pairs else b + 0.05}
                dets[setting][f"{arch}-{rep}-{met}"] = {"families": {f: {"auc": v} for f, v in fams.items()},
                                                        "macro_auc": sum(fams.values()) / 3}
    return dets


def auc_table(dets: dict[str, Any]) -> dict[str, Any]:
    cols = ["Configuration", "BIM", "MI-FGSM", "CW", "Macro-AUC"]
    return {"columns": cols, "rows": [[k, *[{"value": v["families"][f]["auc"], "ci": [0.5, 1.0]}
                                            for f in cols[1:4]], {"value": v["macro_auc"], "ci": [0.6, 1.0]}]
                                      for k, v in dets.items()]}


def make_run(root: Path, *, name: str, network: str, other: str, success0: float, lstm_wins: int,
             cw_miss_pairs: int, seed: int = 0, created: str = "2026-12-01T10:00:00",
             with_orderings: bool = True) -> tuple[Path, dict[str, Any]]:
    """A finished run folder: results.json (as the pipeline shapes it) and done stage records."""
    dets = detector_results(lstm_wins=lstm_wins, cw_miss_pairs=cw_miss_pairs)
    check = check_orderings({"detectors": dets})
    rows = []
    for target in (network, other):  # the reference rows (own network) and the transfer rows
        for i, (attack, setting) in enumerate(ATTACKS):
            s = success0 + 0.01 * i + (0.5 if target == network else 0.0)
            rows.append({"source": network, "target": target, "attack": attack, "setting": setting, "n": 40 + i,
                         "source_success": 1.0, "clean_accuracy": 0.975, "success": s, "success_given_source": s,
                         "impersonation": {"original_pct": 2.5, "adversarial_pct": 100 * s},
                         "evasion": {"original_pct": 5.0, "adversarial_pct": 50.0}})
    tr = transfer_table({"rows": rows, "thresholds": {network: {"metric": "cosine", "threshold": 0.5}}})
    results: dict[str, Any] = {
        "frad_version": "0.1.0", "created": created, "commit": f"abc{seed}{name[-1]}",
        "title": f"frad run: {name}",
        "run": {"name": name, "config": {"name": name, "seed": seed, "model": {"name": network},
                                         "data": {"source": "lfw", "path": f"/data/{name}", "min_images": 10},
                                         "transfer": {"models": [{"name": other}]}}},
        "dataset": {"name": "lfw", "variant": "lfw-deepfunneled", "synthetic": False, "identities": 158,
                    "images": 4324, "model": network},
        "network": {"name": network, "architecture": f"{network} net", "weights": None},
        "warnings": [],
        "tables": {
            "attack_success": {"columns": ["Attack", "Setting", "Sources", "Success (float32)"],
                               "rows": [[a, s, 40, 0.9 + 0.01 * i] for i, (a, s) in enumerate(ATTACKS)]},
            "table1": auc_table(dets["targeted"]), "table2": auc_table(dets["untargeted"]),
            "orderings": _orderings(check), "transfer": tr,
        },
        "summary": {"head_top1": 0.98, "identification_top1": 0.99 if network == "mobilefacenet" else 0.995,
                    "verification_auc": 0.999 if network == "mobilefacenet" else 0.9994,
                    "verification_threshold": 0.3},
        "orderings": check if with_orderings else None,
    }
    folder = root / name
    (folder / "stages").mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))
    for st in STAGES:
        (folder / "stages" / f"{st.name}.json").write_text(json.dumps(
            {"name": st.name, "status": "done", "finished": "2026-12-01T09:59:00" if st.name != "report" else created}))
    return folder, results


@pytest.fixture()
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    mfn, _ = make_run(tmp_path, name="lfw-mobilefacenet", network="mobilefacenet", other="dlib_resnet_v1",
                      success0=0.10, lstm_wins=8, cw_miss_pairs=0)
    dlib, _ = make_run(tmp_path, name="lfw-dlib", network="dlib_resnet_v1", other="mobilefacenet",
                       success0=0.30, lstm_wins=5, cw_miss_pairs=2)
    return mfn, dlib


def rows_of(table: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(zip(table["columns"], r)) for r in table["rows"]]


def rebuild(run: Path, compare_with: list[str]) -> dict[str, Any]:
    """What the report stage does: results.json plus its peers, written, then the report."""
    results = json.loads((run / "results.json").read_text())
    results = add_peers(results, compare_with, run)
    (run / "results.json").write_text(json.dumps(results))
    write_report(run)
    return results


def test_report_sets_the_peer_beside_this_run(two_runs: tuple[Path, Path]) -> None:
    mfn, dlib = two_runs
    res = rebuild(mfn, ["../lfw-dlib"])
    assert res["warnings"] == []
    t = res["tables"]
    cols = ["mobilefacenet (this run)", "dlib_resnet_v1 (run lfw-dlib)"]
    # (a) the paper's orderings, one column per network, with the counts set up above
    o = {r["Claim (the paper)"]: r for r in rows_of(t["peer_orderings"])}
    assert t["peer_orderings"]["columns"][1:] == cols
    assert [o["CW is the hardest family to detect"][c] for c in cols] == ["yes (16/16)", "partly (12/16); on average yes"]
    assert [o["Untargeted attacks are harder to detect than targeted"][c] for c in cols] == ["yes (8/8)", "yes (8/8)"]
    assert [o["LSTM detectors are ahead of MLP detectors"][c] for c in cols] == ["yes (8/8)", "partly (5/8); on average no"]
    assert [o["Orderings that hold in every comparison"][c] for c in cols] == ["3 of 3", "1 of 3"]
    dl = json.loads((dlib / "results.json").read_text())["orderings"]["best_targeted_macro_auc"]
    assert o["Best targeted macro-AUC >= 0.9"][cols[1]] == (
        f"{'yes' if dl['meets_target'] else 'no'} ({dl['value']:.3f}, {dl['configuration']})")
    # (b) transfer both ways, each direction from the run that crafted it, numbers carried unchanged
    tb = rows_of(t["transfer_both_ways"])
    ways = {(r["source"], r["target"]) for r in tb}
    assert ways == {("mobilefacenet", "dlib_resnet_v1"), ("dlib_resnet_v1", "mobilefacenet")}
    for src, run, s0 in (("mobilefacenet", "lfw-mobilefacenet", 0.10), ("dlib_resnet_v1", "lfw-dlib", 0.30)):
        mine = [r for r in tb if r["source"] == src]
        assert [(r["attack"], r["setting"]) for r in mine] == ATTACKS  # BIM, CW, deep features; T and U
        assert all(r["Run"] == run for r in mine)
        assert [r["success on target"] for r in mine] == pytest.approx([s0 + 0.01 * i for i in range(len(ATTACKS))])
    g = rows_of(t["transfer_at_a_glance"])  # both directions side by side, one row per attack and setting
    assert [(r["Attack"], r["Setting"]) for r in g] == ATTACKS
    assert g[2]["mobilefacenet -> dlib_resnet_v1: success on target"] == pytest.approx(0.12)
    assert g[2]["dlib_resnet_v1 -> mobilefacenet: success on target"] == pytest.approx(0.32)
    # (c) headline figures side by side
    h = {r["Measure"]: r for r in rows_of(t["peer_headline"])}
    assert h["Verification ROC AUC"][cols[0]]["value"] == 0.999
    assert h["Verification ROC AUC"][cols[1]]["value"] == 0.9994
    assert h["Best detector, targeted: configuration"][cols[1]] == dl["configuration"]
    # the runs compared: name, network, date and commit of the peer's results; the settings that differ
    r = rows_of(t["peer_runs"])
    assert [x["Run"] for x in r] == ["lfw-mobilefacenet", "lfw-dlib"]
    assert r[1]["Results written"] == "2026-12-01T10:00:00" and r[1]["Commit"] == "abc0b"
    assert "nothing but the network" in t["peer_runs"]["notes"][0]
    peer = res["peers"]["runs"][0]
    assert peer["status"] == "ok" and peer["path"] == str(dlib.resolve()) and peer["network"] == "dlib_resnet_v1"
    assert peer["orderings"]["cw_hardest"]["count"] == 12
    md = (mfn / "report.md").read_text()
    assert "dlib\\_resnet\\_v1 (run lfw-dlib)" in md and "partly (12/16)" in md and "Transfer both ways" in md
    html = (mfn / "report.html").read_text()
    assert "dlib_resnet_v1 (run lfw-dlib)" in html and "abc0b" in html


def test_older_results_without_the_counts_read_the_orderings_table(tmp_path: Path) -> None:
    _, new = make_run(tmp_path, name="a", network="n1", other="n2", success0=0.1, lstm_wins=3, cw_miss_pairs=1)
    _, old = make_run(tmp_path, name="b", network="n1", other="n2", success0=0.1, lstm_wins=3, cw_miss_pairs=1,
                      with_orderings=False)
    a, b = orderings_of(new), orderings_of(old)
    for key in ("cw_hardest", "untargeted_harder", "lstm_ahead_of_mlp"):
        assert (a[key]["holds"], a[key]["count"], a[key]["total"]) == (b[key]["holds"], b[key]["count"], b[key]["total"])
    assert a["best"]["value"] == pytest.approx(b["best"]["value"], abs=5e-4)
    assert a["best"]["configuration"] == b["best"]["configuration"] and a["best"]["meets"] == b["best"]["meets"]


def test_a_missing_peer_gives_one_warning_and_the_report_is_written(two_runs: tuple[Path, Path]) -> None:
    mfn, _ = two_runs
    res = rebuild(mfn, ["../lfw-nothing"])
    where = str((mfn / ".." / "lfw-nothing").resolve())
    assert len(res["warnings"]) == 1 and where in res["warnings"][0] and "no such run folder" in res["warnings"][0]
    assert res["peers"]["runs"][0]["status"] == "missing"
    assert "peer_orderings" not in res["tables"] and "transfer_both_ways" not in res["tables"]
    md = (mfn / "report.md").read_text()
    assert "Read these numbers with care" in md and "lfw-nothing" in md


def test_an_unfinished_peer_says_how_far_it_got(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    mfn, _ = two_runs
    busy = tmp_path / "busy"
    (busy / "stages").mkdir(parents=True)
    (busy / "config.yaml").write_text("name: busy\n")
    (busy / "stages" / "data.json").write_text(json.dumps({"status": "done"}))
    (busy / "stages" / "features.json").write_text(json.dumps({"status": "running"}))
    res = rebuild(mfn, ["../busy"])
    (w,) = res["warnings"]
    assert str(busy.resolve()) in w and "no results.json yet" in w
    assert f"1 of {len(STAGES)} stages done" in w and "features running" in w
    assert res["peers"]["runs"][0]["status"] == "unfinished" and "peer_headline" not in res["tables"]


def test_a_peer_changed_since_its_results_is_shown_with_a_warning(two_runs: tuple[Path, Path]) -> None:
    mfn, dlib = two_runs
    (dlib / "stages" / "detectors.json").write_text(json.dumps({"status": "done", "finished": "2026-12-01T11:00:00"}))
    (dlib / "stages" / "scenarios.json").write_text(json.dumps({"status": "running"}))
    res = rebuild(mfn, ["../lfw-dlib"])
    (w,) = res["warnings"]
    assert str(dlib.resolve()) in w and "2026-12-01T10:00:00" in w
    assert "stage detectors ran again" in w and "stage scenarios is running (or was interrupted)" in w
    assert res["peers"]["runs"][0]["status"] == "changed" and "peer_orderings" in res["tables"]


def test_unreadable_self_and_differing_peers(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    mfn, _ = two_runs
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text("{not json")
    assert load_peer(str(bad), mfn).status == "unreadable"
    assert "not readable JSON" in (load_peer(str(bad), mfn).warning or "")
    assert load_peer(".", mfn).status == "self"
    assert load_peer("../lfw-dlib/results.json", mfn).status == "ok"  # the file instead of its folder
    other, _ = make_run(tmp_path, name="seeded", network="dlib_resnet_v1", other="x", success0=0.2, lstm_wins=4,
                        cw_miss_pairs=0, seed=1)
    res = json.loads((mfn / "results.json").read_text())
    res = add_peers(res, [str(other)], mfn)  # an absolute path works too
    assert res["peers"]["runs"][0]["differs"] == ["seed"]  # data.path, model and transfer are not compared
    notes = " ".join(res["tables"]["transfer_both_ways"]["notes"])
    assert "mobilefacenet -> dlib_resnet_v1" not in notes  # this run scored its adversarials on dlib
    assert "dlib_resnet_v1 -> mobilefacenet: run seeded did not score" in notes


def test_compare_with_setting(tmp_path: Path) -> None:
    assert resolve_peer("../a", tmp_path / "runs" / "b") == (tmp_path / "runs" / "a").resolve()
    assert resolve_peer("/x/y", tmp_path) == Path("/x/y").resolve()
    base = {"data": {"source": "synthetic"}, "split": {"n_natural": 2, "n_source": 3}, "attacks": {"attacks": [{"attack": "bim", "epsilon": 0.03}]}}
    cfg = config_from_dict({**base, "report": {"compare_with": ["../lfw-dlib"]}})
    assert cfg.report.compare_with == ["../lfw-dlib"]
    for bad, msg in ((["../a", "../a"], "named twice"), ([""], "compare_with[0]"), ("../a", "a list of")):
        with pytest.raises(ConfigError, match=r"report\.compare_with"):
            config_from_dict({**base, "report": {"compare_with": bad}})
        try:
            config_from_dict({**base, "report": {"compare_with": bad}})
        except ConfigError as exc:
            assert msg in str(exc)
    # the setting is the report stage's input only: no other stage's fingerprint moves
    from frad.pipeline.run import stage_fingerprints

    a = stage_fingerprints(config_from_dict(base))
    b = stage_fingerprints(cfg)
    assert [s for s in a if a[s] != b[s]] == ["report"]


def test_no_compare_with_leaves_results_as_they_were(two_runs: tuple[Path, Path]) -> None:
    mfn, _ = two_runs
    res = json.loads((mfn / "results.json").read_text())
    before = json.dumps(res, sort_keys=True)
    assert json.dumps(add_peers(res, [], mfn), sort_keys=True) == before
    assert "peer" not in render_markdown(res).lower()
