"""`frad run` with `transfer.models`: the run's adversarials scored on a further network, as a
table in the report; the run's own network as the reference row agrees with Table 3."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from frad.cli import main
from frad.models.registry import register_model
from frad.models.registry import _REGISTRY  # noqa: PLC2701 - test-only registration

from test_pipeline import TINY, write_config
from tiny_models import TinyFace


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "tiny_face_target" not in _REGISTRY:
        register_model("tiny_face_target", description="test-only tiny network")(
            lambda: TinyFace(seed=3, metric="cosine", size=32))
    cfg = copy.deepcopy(TINY)
    cfg["name"] = "tiny-transfer"
    cfg["attacks"]["attacks"] = [
        {"attack": "bim", "targeted": [True, False], "epsilon": 0.03, "steps": 5},
        {"attack": "cw_l2", "targeted": [True, False], "binary_search_steps": 2, "steps": 20},
    ]
    cfg["deep_features"] = {"deltas": [5], "max_iter": 30, "workers": 1}
    cfg["transfer"] = {"models": [{"name": "tiny_face_target", "batch_size": 8}]}
    d = tmp_path_factory.mktemp("transfer")
    assert main(["run", str(write_config(d / "t.yaml", cfg)), "--out", str(d / "run")]) == 0
    return d / "run"


def test_transfer_table_in_the_report(transfer_run: Path) -> None:
    results = json.loads((transfer_run / "results.json").read_text())
    t = results["tables"]["transfer"]
    rows = [dict(zip(t["columns"], r)) for r in t["rows"]]
    targets = {r["target"] for r in rows}
    assert targets == {"dlib_resnet_v1", "tiny_face"}
    attacks = {(r["attack"], r["setting"]) for r in rows if r["target"] == "tiny_face"}
    assert {("bim-T-eps0.03", "targeted"), ("bim-U-eps0.03", "untargeted"), ("cw_l2-T", "targeted"),
            ("cw_l2-U", "untargeted"), ("deep_features-delta5", "targeted"), ("deep_features-delta5", "untargeted")} <= attacks
    for r in rows:
        assert r["source"] == "dlib_resnet_v1" and r["n"] > 0
        assert 0.0 <= r["success on target"] <= 1.0
    assert "transfer" in (transfer_run / "report.md").read_text().lower()


def test_own_network_row_agrees_with_the_runs_table3(transfer_run: Path) -> None:
    """The reference row (target = the run's own network) recomputes impersonation exactly as
    the scenarios stage does: same embeddings, threshold, partners."""
    tr = json.loads((transfer_run / "transfer" / "transfer.json").read_text())
    scen = json.loads((transfer_run / "scenarios" / "scenarios.json").read_text())
    own = {(r["attack"], r["setting"]): r for r in tr["rows"] if r["target"] == "dlib_resnet_v1"}
    table3 = scen["verification"]["impersonation"]["rows"]
    ver = json.loads((transfer_run / "recognition" / "verification.json").read_text())
    assert tr["thresholds"]["dlib_resnet_v1"]["threshold"] == pytest.approx(ver["threshold"])
    for setting in ("targeted", "untargeted"):
        mine = own[("cw_l2-" + setting[0].upper(), setting)]["impersonation"]
        theirs = table3["CW"][setting]
        assert mine["n"] == theirs["n"]
        assert mine["adversarial_pct"] == pytest.approx(theirs["adversarial_pct"])
        assert mine["original_pct"] == pytest.approx(theirs["original_pct"])


def test_compare_with_reruns_only_the_report_and_shows_both_directions(transfer_run: Path, tmp_path: Path,
                                                                       capsys) -> None:
    """report.compare_with on a finished run: only the report stage runs again, and the report
    sets the peer beside it.  The peer stands for a run on the other network that transferred
    back: its results.json is this run's with the two networks swapped."""
    import shutil

    import yaml

    run = tmp_path / "runs" / "tiny-transfer"
    shutil.copytree(transfer_run, run)
    peer = tmp_path / "runs" / "tiny-peer"
    (peer / "stages").mkdir(parents=True)
    res = json.loads((run / "results.json").read_text())
    swap = {"dlib_resnet_v1": "tiny_face", "tiny_face": "dlib_resnet_v1"}
    res["tables"]["transfer"]["rows"] = [[swap.get(c, c) if i < 2 else c for i, c in enumerate(r)]
                                         for r in res["tables"]["transfer"]["rows"]]
    res["network"]["name"], res["run"]["name"] = "tiny_face", "tiny-peer"
    (peer / "results.json").write_text(json.dumps(res))
    cfg = yaml.safe_load((transfer_run.parent / "t.yaml").read_text())
    cfg["report"]["compare_with"] = ["../tiny-peer"]
    assert main(["run", str(write_config(tmp_path / "c.yaml", cfg)), "--out", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ran"] == ["report"]

    out = json.loads((run / "results.json").read_text())
    assert out["warnings"] == res["warnings"]  # the peer is complete: nothing to warn about
    assert out["peers"]["runs"][0]["status"] == "ok" and out["peers"]["runs"][0]["network"] == "tiny_face"
    both = out["tables"]["transfer_both_ways"]
    rows = [dict(zip(both["columns"], r)) for r in both["rows"]]
    assert {(r["source"], r["target"], r["Run"]) for r in rows} == {
        ("dlib_resnet_v1", "tiny_face", "tiny-transfer"), ("tiny_face", "dlib_resnet_v1", "tiny-peer")}
    attacks = {(r["attack"], r["setting"]) for r in rows if r["source"] == "tiny_face"}
    assert {("bim-T-eps0.03", "targeted"), ("cw_l2-U", "untargeted"), ("deep_features-delta5", "targeted"),
            ("deep_features-delta5", "untargeted")} <= attacks
    # the orderings' column of this run is the detectors' own check, counts and all
    check = json.loads((run / "detection" / "results.json").read_text())["orderings"]
    col = "dlib_resnet_v1 (this run)"
    o = {r[0]: dict(zip(out["tables"]["peer_orderings"]["columns"], r)) for r in out["tables"]["peer_orderings"]["rows"]}
    cw = check["cw_hardest"]
    assert o["CW is the hardest family to detect"][col].split(";")[0].endswith(f"({cw['count']}/{cw['total']})")
    md = (run / "report.md").read_text()
    assert "Transfer both ways" in md and "tiny\\_face (run tiny-peer)" in md
