"""Benchmark: trajectory embeddings from cached features, and detector training speed.

Trajectories (the issue's target: 10,000 images x 14 layers x 158 classes in < 10 s): dlib's
tap shapes (3x32, 4x64, 3x128, 4x256 channels), features written to a temporary ``.npz``
feature cache with frad's writer, then timed twice side by side:

- ``frad``: ``load_npz`` + ``compute_trajectories`` (torch, batched);
- ``reference``: the same load + SciPy's ``cdist`` per layer (float64; Euclidean) or a NumPy
  matrix product of L2-normalised rows (cosine similarity).

It prints both times, their ratio and the largest difference between the two results.

With ``--detectors`` it also times detector training on random trajectories of that shape
(seconds per epoch for the MLP and the LSTM, and the implied time of the paper's 16
detectors x 150 epochs); there is no reference implementation for that part.

Run: ``python benchmarks/bench_trajectories.py [--n 10000] [--classes 158] [--json]``.
Timings depend on the machine's load; repeat on a quiet machine before quoting them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.distance import cdist

from frad.detection import ClassRepresentatives, LSTMDetector, MLPDetector, compute_trajectories
from frad.utils.io import load_npz, save_npz

DLIB_CHANNELS = (32, 32, 32, 64, 64, 64, 64, 128, 128, 128, 256, 256, 256, 256)


def make_features(n: int, channels: tuple[int, ...], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Post-ReLU-like pooled features (non-negative, norms of a few units as dlib's taps)."""
    return {
        f"block{i + 1}": np.maximum(rng.normal(0.8, 1.0, size=(n, c)), 0).astype(np.float32)
        for i, c in enumerate(channels)
    }


def reference_trajectories(features: dict[str, np.ndarray], reps: dict[str, np.ndarray], metric: str) -> np.ndarray:
    out = np.empty((next(iter(features.values())).shape[0], len(reps), next(iter(reps.values())).shape[0]))
    for li, (t, r) in enumerate(reps.items()):
        x = features[t].astype(np.float64)
        r64 = r.astype(np.float64)
        if metric == "euclidean":
            out[:, li, :] = cdist(x, r64)
        else:
            xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            rn = r64 / np.maximum(np.linalg.norm(r64, axis=1, keepdims=True), 1e-12)
            out[:, li, :] = xn @ rn.T
    return out


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def bench_trajectories(args: argparse.Namespace) -> dict[str, object]:
    rng = np.random.default_rng(0)
    channels = DLIB_CHANNELS
    # representatives: centroids of a labelled reference set (2 images per class is enough here)
    ref = make_features(args.classes * 4, channels, rng)
    labels = np.repeat(np.arange(args.classes), 4)
    reps = ClassRepresentatives("centroid").fit(ref, labels)
    rep_arrays = {t: reps.representatives_[t] for t in reps.layers_}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "features.npz"
        save_npz(cache, **make_features(args.n, channels, rng))
        for metric in args.metrics:
            t_ours, ours = best_of(
                lambda: compute_trajectories(load_npz(cache), reps, metric, device=args.device), args.repeat
            )
            t_ref, ref_out = best_of(lambda: reference_trajectories(load_npz(cache), rep_arrays, metric), args.repeat)
            diff = np.abs(np.asarray(ours, dtype=np.float64) - np.asarray(ref_out))
            rows.append(
                {
                    "metric": metric,
                    "shape": list(np.asarray(ours).shape),
                    "frad_seconds": t_ours,
                    "reference_seconds": t_ref,
                    "speedup_vs_reference": t_ref / t_ours,
                    "max_abs_diff": float(diff.max()),
                    "max_rel_diff": float((diff / np.maximum(np.abs(ref_out), 1e-6)).max()),
                    "target_seconds": 10.0,
                    "meets_target": t_ours < 10.0,
                }
            )
    return {"n": args.n, "classes": args.classes, "layers": len(channels), "results": rows}


def bench_detectors(args: argparse.Namespace) -> dict[str, object]:
    rng = np.random.default_rng(1)
    n = args.train_samples
    X = rng.normal(size=(n, len(DLIB_CHANNELS), args.classes)).astype(np.float32)
    y = (rng.random(n) < 0.8).astype(np.int64)
    X[y == 1, -3:, :] += 0.3
    groups = np.where(y == 1, rng.choice(["BIM", "MI-FGSM", "CW"], n), "natural")
    out = {}
    MLPDetector(max_epochs=1, random_state=0).fit(X[:300], y[:300], groups=groups[:300])  # warm-up: torch imports
    for name, klass in (("mlp", MLPDetector), ("lstm", LSTMDetector)):
        det = klass(max_epochs=args.epochs, random_state=0, device=args.device)
        t0 = time.perf_counter()
        det.fit(X, y, groups=groups)
        secs = time.perf_counter() - t0
        per_epoch = float(np.median(det.epoch_seconds_))
        out[name] = {"epochs": det.n_epochs_, "seconds": secs, "seconds_per_epoch": per_epoch}
    per_pair = out["mlp"]["seconds_per_epoch"] + out["lstm"]["seconds_per_epoch"]
    return {
        "train_samples": n,
        "shape": [len(DLIB_CHANNELS), args.classes],
        "detectors": out,
        # 16 detectors = 8 MLP + 8 LSTM (4 representative x metric pairs x 2 settings)
        "paper_grid_150_epochs_minutes": 8 * per_pair * 150 / 60,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="images (default 10000)")
    p.add_argument("--classes", type=int, default=158, help="classes (default 158: LFW identities with >= 10 images)")
    p.add_argument("--metrics", nargs="+", default=["euclidean", "cosine"], choices=["euclidean", "cosine"])
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    p.add_argument("--device", default=None, help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--detectors", action="store_true", help="also time detector training")
    p.add_argument("--train-samples", type=int, default=4000, help="training rows for --detectors")
    p.add_argument("--epochs", type=int, default=5, help="epochs timed for --detectors")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    report: dict[str, object] = {
        "benchmark": "trajectories",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device or "cpu",
        "trajectories": bench_trajectories(args),
    }
    if args.detectors:
        report["detector_training"] = bench_detectors(args)

    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    tr = report["trajectories"]
    print(f"trajectories: {tr['n']} images x {tr['layers']} layers x {tr['classes']} classes "
          f"(torch threads {report['threads']}, device {report['device']})")
    for r in tr["results"]:
        print(
            f"  {r['metric']:9s} frad {r['frad_seconds']:6.2f} s"
            f"   reference (scipy/numpy) {r['reference_seconds']:6.2f} s"
            f"   ratio {r['speedup_vs_reference']:5.2f}x   max |diff| {r['max_abs_diff']:.2e}"
            f"   target < 10 s: {'yes' if r['meets_target'] else 'NO'}"
        )
    if args.detectors:
        d = report["detector_training"]
        for name, v in d["detectors"].items():
            print(f"  {name} training: {v['seconds_per_epoch']:.3f} s/epoch on {d['train_samples']} rows")
        minutes = d["paper_grid_150_epochs_minutes"]
        print(f"  paper grid (8 MLP + 8 LSTM, 150 epochs, no early stop): ~{minutes:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
