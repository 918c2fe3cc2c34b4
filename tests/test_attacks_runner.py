"""Attack runs: the config (validation, grid expansion, YAML), deterministic targets, shard files
that match direct attack calls, resuming (also after the process is killed), loading back."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from frad.attacks import (
    BIM,
    AttackSpec,
    RunConfig,
    TargetedMisclassification,
    draw_targets,
    format_success_table,
    load_results,
    paper_grid,
    run_attacks,
)
from frad.attacks.shards import COLUMNS
from frad.errors import ConfigError
from tiny_models import TinyFace


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ config
def test_paper_grid_is_the_papers():
    cfg = paper_grid()
    by = {}
    for a in cfg.attacks:
        by.setdefault(a.attack, []).append(a)
    assert len(by["bim"]) == len(by["mifgsm"]) == 4 * 2 * 2
    assert {(a.epsilon, a.params["steps"], a.targeted) for a in by["bim"]} == {
        (e, s, t) for e in (0.03, 0.07, 0.1, 0.3) for s in (30, 50) for t in (True, False)}
    assert all(a.params["epsilon_mode"] == "minimal" for a in by["bim"] + by["mifgsm"])
    assert {a.targeted for a in by["cw_l2"]} == {True, False} and all(a.params == {} for a in by["cw_l2"])
    assert {(a.epsilon, a.targeted) for a in by["deep_features"]} == {
        (d, t) for d in (5.0, 7.0, 10.0) for t in (True, False)}
    assert "bim-T-eps0.03-steps30" in {a.name for a in cfg.attacks}


def test_config_round_trips_through_yaml(tmp_path):
    cfg = paper_grid(seed=3, shard_size=10)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert RunConfig.from_yaml(path) == cfg
    # the hand-written form: lists expand, hyper-parameters as keys
    path.write_text("seed: 1\nattacks:\n  - {attack: bim, targeted: [true, false], epsilon: 0.03, steps: [30, 50]}\n")
    names = [a.name for a in RunConfig.from_yaml(path).attacks]
    assert names == ["bim-T-eps0.03-steps30", "bim-T-eps0.03-steps50", "bim-U-eps0.03-steps30", "bim-U-eps0.03-steps50"]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"attacks": [{"attack": "bim", "epsilon": 0.03}], "shards": 3}, "unknown key.*shards"),
        ({"attacks": [{"attack": "bimm", "epsilon": 0.03}]}, "unknown attack 'bimm'"),
        ({"attacks": [{"attack": "bim", "epsilon": 0.03, "stepz": 3}]}, r"attacks\[0\].*unknown parameter.*stepz"),
        ({"attacks": [{"attack": "bim", "epsilon": 0.03, "steps": 0}]}, "steps must be an int >= 1"),
        ({"attacks": [{"attack": "bim"}]}, "epsilon is required"),
        ({"attacks": [{"attack": "bim", "epsilon": -1}]}, "epsilon must be a number >= 0"),
        ({"attacks": [{"attack": "bim", "epsilon": 0.03, "targeted": "yes"}]}, "targeted must be true or false"),
        ({"attacks": [{"attack": "cw_l2"}, {"attack": "cw_l2"}]}, "unique.*cw_l2-U"),
        ({"attacks": [{"attack": "cw_l2"}], "shard_size": 0}, "shard_size must be an int >= 1"),
        ({"attacks": []}, "at least one attack"),
        ({"attacks": [{"attack": "bim", "epsilon": [0.1, 0.2], "name": "x"}]}, "'name' cannot be given"),
    ],
)
def test_config_errors_name_the_field(data, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_dict(data)


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("attacks: [{attack: bim, epsilon: 0.03, stepz: 3}]\n")
    with pytest.raises(ConfigError, match="bad.yaml.*stepz"):
        RunConfig.from_yaml(bad)


# ------------------------------------------------------------------ targets
def test_targets_are_deterministic_and_never_the_true_label():
    ids = [f"img{i}" for i in range(3000)]
    labels = np.arange(3000) % 7
    t = draw_targets(0, ids, "bim", labels, np.arange(7))
    assert (t != labels).all() and t.min() >= 0 and t.max() <= 6
    # a source's target depends on (seed, id, family) only, not on its position
    perm = np.random.default_rng(0).permutation(3000)
    t2 = draw_targets(0, [ids[i] for i in perm], "bim", labels[perm], np.arange(7))
    np.testing.assert_array_equal(t2, t[perm])
    assert (draw_targets(1, ids, "bim", labels, np.arange(7)) != t).mean() > 0.7
    assert (draw_targets(0, ids, "cw_l2", labels, np.arange(7)) != t).mean() > 0.7
    # uniform over the other classes: each class is drawn about 3000 / 7 times, and for a given
    # true label the six others about equally often
    expected = 3000 / 7
    assert np.all(np.abs(np.bincount(t, minlength=7) - expected) < 5 * np.sqrt(expected))
    pairs = np.bincount(labels * 7 + t, minlength=49).reshape(7, 7)
    assert np.all(np.diag(pairs) == 0)
    off = pairs[~np.eye(7, dtype=bool)]
    assert np.all(np.abs(off - 3000 / 42) < 5 * np.sqrt(3000 / 42))


# ------------------------------------------------------------------ runs


@pytest.fixture(scope="module")
def data():
    from frad.models.classifier import FaceClassifier

    face = TinyFace(0, size=8)
    clf = FaceClassifier(face, 4, dropout=0.0)
    with torch.no_grad():
        clf.head[1].weight.mul_(5)
    clf.eval()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(7, 3, 8, 8, generator=g) * 255
    with torch.no_grad():
        y = clf(x).argmax(1).numpy()
        emb = face(x)
    templates = emb[[0, 1, 2, 3]].numpy() + 0.01  # four identities' templates
    return face, clf, x.numpy(), y, templates


def _config(**kw):
    return RunConfig.from_dict({
        "seed": 5, "shard_size": 3, "batch_size": 2, **kw,
        "attacks": [
            {"attack": "bim", "targeted": True, "epsilon": 0.05, "steps": 4},
            {"attack": "bim", "targeted": False, "epsilon": 0.05, "steps": 4, "epsilon_mode": "minimal",
             "search_steps": 3},
            {"attack": "cw_l2", "targeted": True, "steps": 10, "binary_search_steps": 2, "stepsize": 0.05},
            {"attack": "deep_features", "targeted": True, "epsilon": 10.0, "max_iterations": 20},
        ],
    })


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_run_writes_shards_that_match_direct_attacks(tmp_path, data, caplog):
    face, clf, x, y, templates = data
    cfg = _config()
    report = run_attacks(cfg, tmp_path, images=x, labels=y, source_ids=[f"s{i}" for i in range(7)],
                         classifier=clf, face_model=face, templates=templates)
    assert [r.status for r in report] == ["done"] * 12  # 4 attacks x 3 shards (3 + 3 + 1 sources)
    run = load_results(tmp_path)
    assert len(run) == 4 * 7
    assert set(run.table) == {c for c, _ in COLUMNS} | {"shard", "row"}
    name = "bim-T-eps0.05"
    rows = run.rows(name)
    advs = run.adversarials(name)
    assert advs.shape == (7, 3, 8, 8) and advs.dtype == np.float32
    # the targets are the deterministic draw; the shard results equal direct calls, batch by batch
    targets = draw_targets(5, [f"s{i}" for i in range(7)], "bim", y, np.arange(4))
    np.testing.assert_array_equal(run.table["target"][rows], targets)
    for b in (0, 2, 3, 5, 6):  # batches of 2 within shards of 3
        e = min(b + 2, 3 * (b // 3) + 3, 7)
        direct = BIM(steps=4)(clf, torch.as_tensor(x[b:e]), TargetedMisclassification(targets[b:e]), epsilons=0.05,
                              quantise=True)
        np.testing.assert_array_equal(advs[b:e], direct.clipped[0].numpy())
        np.testing.assert_array_equal(run.table["success"][rows][b:e], direct.success[0].numpy())
        np.testing.assert_array_equal(run.table["success_quantised"][rows][b:e], direct.success_quantised[0].numpy())
        np.testing.assert_allclose(run.table["l2"][rows][b:e], direct.l2[0].numpy(), rtol=1e-6)
    assert (run.table["source_id"][rows] == np.array([f"s{i}" for i in range(7)])).all()
    assert (run.table["true_label"][rows] == y).all()
    # deep features: targets over the templates' classes, box of 10 grey levels
    df = run.rows("deep_features-T-eps10")
    assert np.abs(run.adversarials("deep_features-T-eps10") - x).max() <= 10 + 1e-4
    assert (run.table["target"][df] != y).all()
    assert (run.table["mode"][run.rows("bim-U-eps0.05")] == "minimal").all()
    rates = run.success_rates()
    assert set(rates) == set(run.attack_names) and all(0 <= r["success"] <= 1 for r in rates.values())
    assert "bim-T-eps0.05" in format_success_table(run)

    # rerunning redoes nothing, says so, and leaves the files as they were
    before = _files(tmp_path)
    with caplog.at_level(logging.INFO, logger="frad.attacks.runner"):
        again = run_attacks(cfg, tmp_path, images=x, labels=y, source_ids=[f"s{i}" for i in range(7)],
                            classifier=clf, face_model=face, templates=templates)
    assert [r.status for r in again] == ["skipped"] * 12
    assert "bim-T-eps0.05: skipped 3 complete shard(s): 0-2" in caplog.text
    assert _files(tmp_path) == before


def test_a_folder_with_another_run_is_refused(tmp_path, data):
    face, clf, x, y, templates = data
    cfg = RunConfig([AttackSpec("bim", targeted=False, epsilon=0.05, params={"steps": 2}, name="bim")], shard_size=4)
    run_attacks(cfg, tmp_path, images=x, labels=y, classifier=clf)
    other = RunConfig([AttackSpec("bim", targeted=False, epsilon=0.05, params={"steps": 3}, name="bim")], shard_size=4)
    with pytest.raises(ConfigError, match="spec.json.*different settings"):
        run_attacks(other, tmp_path, images=x, labels=y, classifier=clf)
    with pytest.raises(ConfigError, match="run.json.*different inputs or models"):
        run_attacks(cfg, tmp_path, images=x[::-1].copy(), labels=y, classifier=clf)
    # adding an attack to an existing run is fine: finished ones are kept
    more = RunConfig(cfg.attacks + [AttackSpec("fgsm", epsilon=0.05, name="fgsm")], shard_size=4)
    report = run_attacks(more, tmp_path, images=x, labels=y, classifier=clf)
    assert [r.status for r in report] == ["skipped", "skipped", "done", "done"]
    with pytest.raises(ConfigError, match="need a face_model"):
        run_attacks(RunConfig([AttackSpec("deep_features", epsilon=5.0)]), tmp_path / "df", images=x, labels=y)


_SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    import numpy as np, torch
    from torch import nn
    from frad.attacks import RunConfig, run_attacks

    def main():
        torch.set_num_threads(1)
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        g = torch.Generator().manual_seed(0)
        m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3))
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        m.eval()
        x = (torch.rand(8, 3, 8, 8, generator=g) * 255).numpy()
        y = np.arange(8) % 3
        cfg = RunConfig.from_dict({"shard_size": 2, "batch_size": 2, "attacks": [
            {"attack": "bim", "targeted": [True, False], "epsilon": 0.05, "steps": 5},
        ]})
        pause = float(sys.argv[2])
        run_attacks(cfg, sys.argv[1], images=x, labels=y, classifier=m, callback=lambda done: time.sleep(pause))

    if __name__ == "__main__":
        main()
    """
)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_files(tmp_path):
    script = tmp_path / "attack_run.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "FRAD_PROGRESS": "0"}
    killed, ref = tmp_path / "killed", tmp_path / "ref"

    proc = subprocess.Popen([sys.executable, str(script), str(killed), "0.5"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first = killed / "bim-T-eps0.05" / "shard-00000.csv"
        deadline = time.monotonic() + 120
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.exists(), "the run did not finish a shard"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    done_before = sorted(p.name for p in killed.rglob("shard-*.csv"))
    assert 1 <= len(done_before) < 8  # killed part-way

    resumed = subprocess.run([sys.executable, str(script), str(killed), "0"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "bim-T-eps0.05: skipped" in resumed.stderr
    full = subprocess.run([sys.executable, str(script), str(ref), "0"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert full.returncode == 0, full.stderr

    visible = {k: v for k, v in _files(killed).items() if not Path(k).name.startswith(".")}
    assert visible == _files(ref)
    assert len(_files(ref)) == 1 + 2 * (1 + 2 * 4)  # run.json; per attack spec.json + 4 x (npy, csv)
    assert not [p for p in killed.rglob(".shard-*.tmp")]
