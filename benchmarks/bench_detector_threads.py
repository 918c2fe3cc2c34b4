"""Detector training under CPU contention: torch threads = all cores vs 1, quiet vs loaded.

Trains the same LSTM and MLP trajectory detectors (fixed epochs, no early stopping) on
random trajectories shaped like the demo's (N rows x 14 layers x C classes), with torch
using every core or one thread, first on the machine as it is, then while ``--busy``
competing processes spin on the CPU (what another job sharing the cores does).  Prints
seconds per epoch, medians of ``--repeats`` runs, and the ratios.

    python benchmarks/bench_detector_threads.py [--rows 400] [--epochs 8] [--busy 2] [--json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import report  # noqa: E402

from frad.detection.detectors import create_detector  # noqa: E402
from frad.utils.threads import torch_threads  # noqa: E402


def one(arch: str, X: np.ndarray, y: np.ndarray, epochs: int, threads: int) -> float:
    det = create_detector(arch, max_epochs=epochs, patience=None, batch_size=256, validation_size=0.2,
                          random_state=0)
    with torch_threads(threads):
        t0 = time.perf_counter()
        det.fit(X, y)
        return (time.perf_counter() - t0) / epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--layers", type=int, default=14)
    ap.add_argument("--classes", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--busy", type=int, default=2, help="competing busy processes in the loaded phase")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    X = rng.random((a.rows, a.layers, a.classes), dtype=np.float32)
    y = (np.arange(a.rows) % 2).astype(np.int64)
    X[y == 1] += 0.05
    cores = os.cpu_count() or 1
    results: dict[str, dict[str, float]] = {}
    for phase in ("quiet", "loaded"):
        procs = []
        if phase == "loaded":
            procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.busy)]
            time.sleep(0.5)
        try:
            for arch in ("lstm", "mlp"):
                for threads in (cores, 1):
                    times = [one(arch, X, y, a.epochs, threads) for _ in range(a.repeats)]
                    results[f"{phase}/{arch}/threads={threads}"] = {"median_s_per_epoch": statistics.median(times),
                                                                     "runs": times}
        finally:
            for p in procs:
                p.kill()
                p.wait()
    lines = [f"{a.rows} rows x {a.layers} layers x {a.classes} classes, {a.epochs} epochs, median of {a.repeats};"
             f" loaded = {a.busy} busy processes on {cores} cores"]
    for k, v in results.items():
        lines.append(f"  {k:<28} {v['median_s_per_epoch']:.4f} s/epoch")
    for phase in ("quiet", "loaded"):
        for arch in ("lstm", "mlp"):
            r = results[f"{phase}/{arch}/threads={cores}"]["median_s_per_epoch"] / results[f"{phase}/{arch}/threads=1"]["median_s_per_epoch"]
            lines.append(f"  {phase} {arch}: {cores} threads / 1 thread = {r:.2f}x")
    report({"rows": a.rows, "epochs": a.epochs, "busy": a.busy, "results": results}, "\n".join(lines), a.json)


if __name__ == "__main__":
    main()
