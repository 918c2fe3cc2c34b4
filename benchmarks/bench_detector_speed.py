"""Benchmark: scoring speed of a run's detectors from pixels, beside the face network itself.

For a batch of 32 real face chips of the run (its natural images), timed side by side and
interleaved, median of ``--repeats``:

- ``face network``: ``model(pixels)`` (the embedding; what the FR system runs anyway);
- ``face network + taps``: ``forward_intermediates`` with the detector's taps, pooled;
- ``score_samples``: each detector's whole raw path (taps + its own computation).

It prints images per second and the detector's share of ``score_samples``' time
(``1 - t(face network) / t(score_samples)``); the issue asks for < 20%.

Run: ``python benchmarks/bench_detector_speed.py RUN [--detectors targeted/fusion ...] [--json]``.
The machine is shared: compare the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from _common import report
from frad.detection import load_run_detector, run_detector_index
from frad.detection.base import pixel_features
from frad.models.base import to_pixels
from frad.pipeline.context import RunContext
from frad.pipeline.run import open_run_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--detectors", nargs="*", default=None, help="default: every detector of the run's targeted setting")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = RunContext(open_run_config(args.run_dir), args.run_dir)
    idx = ctx.split.indices("natural")[: args.batch]
    pixels = to_pixels(ctx.images(idx))
    names = args.detectors or [k for k in run_detector_index(args.run_dir)["detectors"] if k.startswith("targeted/")]
    model = ctx.model
    dets = {n: load_run_detector(args.run_dir, n, face_model=model) for n in names}
    taps = sorted({t for d in dets.values() for t in d.taps_}, key=model.tap_names.index)

    def t_forward() -> None:
        with torch.no_grad():
            model(pixels)

    def t_taps() -> None:
        pixel_features(model, pixels, taps, batch_size=args.batch)

    jobs = {"face network": t_forward, "face network + taps": t_taps}
    for n, d in dets.items():
        jobs[n] = (lambda d=d: d.score_samples(pixels, batch_size=args.batch))
    for f in jobs.values():  # warm-up
        f()
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(args.repeats):
        for k, f in jobs.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["face network"]
    rows = {k: {"seconds_per_batch": v, "images_per_second": len(pixels) / v,
                "detector_share": None if k in ("face network",) else 1.0 - base / v} for k, v in med.items()}
    lines = [f"batch {len(pixels)} chips of {args.run_dir}, median of {args.repeats} (machine shared: ratios count)",
             f"{'':<44} {'s/batch':>8} {'img/s':>8} {'share':>7}"]
    for k, r in rows.items():
        share = "" if r["detector_share"] is None else f"{100 * r['detector_share']:6.1f}%"
        lines.append(f"{k:<44} {r['seconds_per_batch']:8.3f} {r['images_per_second']:8.1f} {share:>7}")
    report({"batch": len(pixels), "repeats": args.repeats, "results": rows}, "\n".join(lines), args.json)


if __name__ == "__main__":
    main()
