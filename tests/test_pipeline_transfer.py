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
