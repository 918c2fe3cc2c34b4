"""Executors and the run-folder lock: attack shards on a local Ray cluster equal the local
executor's files byte for byte, a worker killed mid-task is retried without losing or
doubling a shard, and one run folder has one driver at a time."""

from __future__ import annotations

import hashlib
import json
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

import tiny_models
from frad.attacks import RunConfig, load_results, run_attacks
from frad.errors import ConfigError
from frad.utils.executors import ExecutorSpec, LocalExecutor, create_executor
from frad.utils.locking import FolderBusy, FolderLock
from tiny_models import TinyFace

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ the setting
@pytest.mark.parametrize(("text", "kind", "address"), [
    ("local", "local", None), ("ray", "ray", None), ("ray:10.0.0.5:6379", "ray", "10.0.0.5:6379"),
    ("RAY:auto", "ray", "auto"),
])
def test_executor_setting_parses(text: str, kind: str, address: str | None) -> None:
    spec = ExecutorSpec.parse(text)
    assert (spec.kind, spec.address) == (kind, address)


@pytest.mark.parametrize(("text", "match"), [("dask", "unknown kind 'dask'"), ("local:host:1", "only for the ray")])
def test_bad_executor_setting_names_the_field(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=f"executor: .*{match}"):
        ExecutorSpec.parse(text)


def test_config_refuses_a_bad_executor_before_any_work(tmp_path: Path) -> None:
    from frad.pipeline.config import config_from_dict
    from test_pipeline import TINY

    with pytest.raises(ConfigError, match="executor: unknown kind 'slurm'"):
        config_from_dict({**TINY, "executor": "slurm"})
    cfg = config_from_dict({**TINY, "executor": "ray:127.0.0.1:6379"})
    assert cfg.executor_spec == ExecutorSpec("ray", "127.0.0.1:6379")
    assert isinstance(create_executor(None), LocalExecutor)


# ------------------------------------------------------------------ the lock
_HOLD = textwrap.dedent("""
    import sys, time
    from frad.utils.locking import FolderLock
    with FolderLock(sys.argv[1], what="run"):
        print("held", flush=True)
        time.sleep(120)
""")


def _hold(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_driver_stops_at_once_naming_the_holder_and_a_dead_ones_lock_is_taken_over(tmp_path: Path) -> None:
    proc = _hold(tmp_path)
    try:
        t0 = time.perf_counter()
        with pytest.raises(FolderBusy, match=rf"in use by pid {proc.pid} on "):
            FolderLock(tmp_path, what="run").acquire()
        assert time.perf_counter() - t0 < 2
        assert FolderLock(tmp_path).held_by()["pid"] == proc.pid  # what frad status shows
        proc.send_signal(signal.SIGKILL)  # dies holding it: the lock it leaves is stale
        proc.wait()
        with FolderLock(tmp_path, what="run") as lock:
            assert lock.took_over is not None and lock.took_over["pid"] == proc.pid
            assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        assert lock.path.read_text() == ""  # released: names no holder
        assert FolderLock(tmp_path).held_by() is None
    finally:
        if proc.poll() is None:
            proc.kill()


def test_frad_run_on_a_held_folder_fails_with_one_line(tmp_path: Path, capsys) -> None:
    from frad.cli import main

    import yaml
    from test_pipeline import TINY

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    proc = _hold(run)
    try:
        assert main(["run", str(cfg), "--out", str(run)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"in use by pid {proc.pid}" in err
        assert not (run / "config.yaml").exists()  # nothing of the held run was touched
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ attack shards on Ray
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'frad[ray]')")
    from ray import cloudpickle

    # the workers import frad from the environment; the test's own helpers travel by value
    cloudpickle.register_pickle_by_value(tiny_models)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def shard_data():
    from frad.models.classifier import FaceClassifier

    face = TinyFace(0, size=8)
    clf = FaceClassifier(face, 4, dropout=0.0)
    with torch.no_grad():
        clf.head[1].weight.mul_(5)
    clf.eval()
    x = torch.rand(9, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 255
    with torch.no_grad():
        y = clf(x).argmax(1).numpy()
        templates = face(x)[[0, 1, 2, 3]].numpy() + 0.01
    cfg = RunConfig.from_dict({"seed": 5, "shard_size": 3, "batch_size": 2, "attacks": [
        {"attack": "bim", "targeted": [True, False], "epsilon": 0.05, "steps": 4},
        {"attack": "cw_l2", "targeted": True, "steps": 10, "binary_search_steps": 2, "stepsize": 0.05},
        {"attack": "deep_features", "targeted": True, "epsilon": 10.0, "max_iterations": 20},
    ]})
    return cfg, dict(images=x.numpy(), labels=y, source_ids=[f"s{i}" for i in range(9)], classifier=clf,
                     face_model=face, templates=templates)


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


class _DiesOnce:
    """A worker factory whose worker kills its own process on its first task of ``shard``
    (once: a marker file remembers), as a crashed or pre-empted Ray worker would."""

    def __init__(self, inner, marker: str, shard: int) -> None:  # noqa: ANN001
        self.inner, self.marker, self.shard = inner, marker, shard

    def __call__(self):  # noqa: ANN204
        worker = self.inner()

        def run(task):  # noqa: ANN001, ANN202
            if task.shard == self.shard and not os.path.exists(self.marker):
                Path(self.marker).write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return worker(task)

        return run


class _KillingExecutor:
    """The Ray executor, with each worker wrapped in :class:`_DiesOnce`."""

    def __init__(self, marker: Path) -> None:
        from frad.utils.executors import RayExecutor

        self.ray, self.marker = RayExecutor(max_retries=2), str(marker)

    def imap(self, factory, tasks):  # noqa: ANN001, ANN201
        return self.ray.imap(_DiesOnce(factory, self.marker, shard=1), tasks)


def test_ray_shards_equal_local_shards_and_a_killed_worker_loses_nothing(tmp_path: Path, ray_cluster, shard_data) -> None:
    from frad.utils.executors import RayExecutor

    cfg, kw = shard_data
    run_attacks(cfg, tmp_path / "local", **kw)
    ex = RayExecutor()
    done = run_attacks(cfg, tmp_path / "ray", executor=ex, **kw)
    assert run_attacks(cfg, tmp_path / "ray2", executor=ex, **kw)  # the same actors serve a second map
    ex.close()
    assert sorted((d.attack, d.shard) for d in done) == sorted((a.name, s) for a in cfg.attacks for s in range(3))
    assert _files(tmp_path / "ray") == _files(tmp_path / "local") == _files(tmp_path / "ray2")

    marker = tmp_path / "killed.pid"
    killing = _KillingExecutor(marker)
    done = run_attacks(cfg, tmp_path / "killed", executor=killing, **kw)
    killing.ray.close()
    assert marker.is_file() and int(marker.read_text()) != os.getpid()  # a worker process did die
    assert len(done) == len(cfg.attacks) * 3 and len({(d.attack, d.shard) for d in done}) == len(done)
    assert _files(tmp_path / "killed") == _files(tmp_path / "local")
    assert len(load_results(tmp_path / "killed")) == len(cfg.attacks) * 9
    assert not list((tmp_path / "killed").rglob("*.tmp"))


def test_feature_chunks_on_ray_equal_local_ones_and_fill_the_same_cache(tmp_path: Path, ray_cluster) -> None:
    from frad.data.features import extract_features
    from frad.utils.executors import RayExecutor

    face = TinyFace(1, size=8)
    x = (torch.rand(11, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 255).numpy()
    local = extract_features(face, x, chunk_size=4, cache=tmp_path / "local")
    ex = RayExecutor()
    remote = extract_features(face, x, chunk_size=4, cache=tmp_path / "ray", executor=ex)
    assert remote.computed == local.computed == 3
    for t in local.taps:
        np.testing.assert_array_equal(remote.taps[t], local.taps[t])
    again = extract_features(face, x, chunk_size=4, cache=tmp_path / "ray", executor=ex)
    ex.close()
    assert again.computed == 0  # every chunk came from the cache the Ray run wrote
    np.testing.assert_array_equal(again.embedding, local.embedding)


def test_frad_run_executor_flag_is_checked_before_any_work(tmp_path: Path, capsys) -> None:
    import yaml

    from frad.cli import main
    from test_pipeline import TINY

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--executor", "dask"]) == 2
    err = capsys.readouterr().err
    assert "executor: unknown kind 'dask'" in err and not (tmp_path / "run").exists()
