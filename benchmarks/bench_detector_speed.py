"""Benchmark: scoring speed of a run's detectors from pixels, beside the face network itself.

For a batch of 32 real face chips of the run (its natural images), timed side by side and
interleaved, median of ``--repeats``:

- ``face network``: ``model(pixels)`` (the embedding; what the FR system runs anyway);
- ``face network + taps``: ``forward_intermediates`` with the detector's taps, pooled;
- ``score_samples``: each detector's whole raw path (taps + its own computation).

It prints images per second and the detector's share of ``score_samples``' time
(``1 - t(face network) / t(score_samples)``; the issue asks for < 20%), and the steadier
estimate from timing the detector's own part (``score_features`` on taps computed once):
``t(own) / (t(face network + taps) + t(own))``.

Run: ``python benchmarks/bench_detector_speed.py RUN [--detectors targeted/fusion ...] [--json]``.
The machine is shared: compare the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from _common import interleaved_medians, report
from frad.detection import load_run_detector, run_detector_index
from frad.detection.base import pixel_features
from frad.models.base import to_pixels
from frad.pipeline.context import RunContext
from frad.pipeline.run import open_run_config


def stand_ins(ctx: RunContext) -> dict:
    """Every detector kind at the run's scale (its classes, taps, head-training rows), fitted on the
    run's cached features with random natural/adversarial labels: the same cost, meaningless scores."""
    from frad.detection import (ClassRepresentatives, DeepKNNDetector, FusionDetector, LIDDetector,
                                MahalanobisDetector, TrajectoryFaceDetector)

    blocks = ctx.model.resolve_taps("blocks")
    taps = [*blocks, "embedding"]
    ref, lab = ctx.role_features("train")
    nat, nat_lab = ctx.role_features("natural")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, len(nat_lab))
    y[:2] = [0, 1]
    out = {}
    for arch in ("lstm", "mlp"):
        reps = ClassRepresentatives("medoid", layers=blocks).fit({t: ref[t] for t in blocks}, lab)
        d = TrajectoryFaceDetector(arch, "medoid", "euclidean", representatives=reps, max_epochs=1,
                                   bidirectional=True) if arch == "lstm" else \
            TrajectoryFaceDetector(arch, "medoid", "euclidean", representatives=reps, max_epochs=1)
        out[f"{arch}-medoid-euclidean"] = d.fit_features({t: nat[t] for t in blocks}, y, source_ids=np.arange(len(y)))
    for name, d in (("mahalanobis", MahalanobisDetector(taps=taps)), ("lid", LIDDetector(taps=taps)),
                    ("deep-knn", DeepKNNDetector(taps=taps)), ("fusion", FusionDetector(taps=taps, epochs=5))):
        d.fit_reference(ref, lab)
        out[name] = d.fit_features(nat, y, labels=nat_lab)
    for d in out.values():
        d.bind(ctx.model)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--detectors", nargs="*", default=None, help="default: every detector of the run's targeted setting")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--stand-ins", action="store_true",
                    help="time detectors of the run's size fitted on its cached features with random labels "
                         "(for runs whose benchmark stage has not run yet)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = RunContext(open_run_config(args.run_dir), args.run_dir)
    idx = ctx.split.indices("natural")[: args.batch]
    pixels = to_pixels(ctx.images(idx))
    model = ctx.model
    if (args.run_dir / "detection" / "benchmark" / "index.json").is_file() and not args.stand_ins:
        names = args.detectors or [k for k in run_detector_index(args.run_dir)["detectors"] if k.startswith("targeted/")]
        dets = {n: load_run_detector(args.run_dir, n, face_model=model) for n in names}
        what = "the run's trained detectors"
    else:
        dets = stand_ins(ctx)
        what = "stand-ins of the run's size fitted on random labels (timing only; scores meaningless)"
    taps = sorted({t for d in dets.values() for t in d.taps_}, key=model.tap_names.index)

    def t_forward() -> None:
        with torch.no_grad():
            model(pixels)

    def t_taps() -> None:
        pixel_features(model, pixels, taps, batch_size=args.batch)

    feats = pixel_features(model, pixels, taps, batch_size=args.batch)
    jobs = {"face network": t_forward, "face network + taps": t_taps}
    for n, d in dets.items():
        jobs[n] = (lambda d=d: d.score_samples(pixels, batch_size=args.batch))
        jobs[f"{n} (its own part)"] = (lambda d=d: d.score_features(feats))
    for f in jobs.values():  # warm-up
        f()
    med = interleaved_medians(jobs, args.repeats)
    base = med["face network"]
    rows = {k: {"seconds_per_batch": v, "images_per_second": len(pixels) / v,
                "detector_share": None if k in ("face network",) or k.endswith("(its own part)") else 1.0 - base / v}
            for k, v in med.items()}
    for n in dets:  # the steadier estimate: the detector's own part against the whole raw path
        own = med[f"{n} (its own part)"]
        rows[n]["own_part_share"] = own / (med["face network + taps"] + own)
    lines = [f"batch {len(pixels)} chips of {args.run_dir}, median of {args.repeats} (machine shared: ratios count)",
             f"detectors: {what}",
             f"{'':<44} {'s/batch':>8} {'img/s':>8} {'share':>7} {'own part':>9}"]
    for k, r in rows.items():
        share = "" if r["detector_share"] is None else f"{100 * r['detector_share']:6.1f}%"
        own = f"{100 * r['own_part_share']:8.1f}%" if "own_part_share" in r else ""
        lines.append(f"{k:<44} {r['seconds_per_batch']:8.3f} {r['images_per_second']:8.1f} {share:>7} {own:>9}")
    report({"batch": len(pixels), "repeats": args.repeats, "detectors": what, "results": rows}, "\n".join(lines), args.json)


if __name__ == "__main__":
    main()
