"""Which layer should ART's BinaryActivationDetector read?  Its validation and test AUC per tap.

frad's ART peer reads, by default, the face model's last block before the embedding
(``frad.detection.art_peer``).  This script trains the same detector on every tap of a
finished run (the run's own benchmark rows, splits and seeds; nothing in the run folder is
overwritten) and prints, per setting and tap, the validation macro-AUC (the fair criterion
for choosing a layer) beside the test macro-AUC.

    python benchmarks/art_layers.py runs/demo [--taps block10 block14 embedding] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--taps", nargs="*", default=None, help="taps to try (default: every tap)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import frad.evaluation.benchmark as B
    from frad.detection.art_peer import ARTActivationDetector
    from frad.pipeline.benchmark_stage import run_benchmark_stage
    from frad.pipeline.context import RunContext
    from frad.pipeline.run import open_run_config

    cfg = open_run_config(args.run)
    cfg.benchmark.uint8 = False  # AUCs on float32 adversarials; no uint8 feature pass
    cfg.benchmark.detectors = ["art-binary-activation"]
    ctx = RunContext(cfg, args.run)
    taps = args.taps or list(ctx.model.tap_names)
    torch.set_num_threads(1)  # small networks: as the benchmark stage runs them

    real_run, real_build = B.run_benchmark, B._build
    rows = []
    for tap in taps:
        captured = {}

        def build(name, taps_, seed, device=None, _tap=tap):
            return ARTActivationDetector(layer=_tap, taps=taps_, random_state=seed, device=device)

        def run(*a, **kw):
            kw.update(out_dir=None, checkpoint_dir=None)  # nothing written into the run folder
            captured["res"] = real_run(*a, **kw)
            return captured["res"]

        B._build, B.run_benchmark = build, run
        try:
            t0 = time.perf_counter()
            run_benchmark_stage(ctx)
            secs = time.perf_counter() - t0
        finally:
            B._build, B.run_benchmark = real_build, real_run
        for s, recs in captured["res"]["results"].items():
            r = recs["art-binary-activation"]
            g = r.get("generalisation")
            rows.append({"setting": s, "tap": tap, "validation_macro_auc": r["validation_macro_auc"],
                         "test_macro_auc": r["float32"]["macro_auc"],
                         "test_families": {f: m["auc"] for f, m in r["float32"]["families"].items()},
                         "deep_features_min_auc": min((m["auc"] for m in g["families"].values()), default=None)
                         if g else None, "seconds": secs})
    if args.json:
        json.dump({"run": str(args.run), "rows": rows}, sys.stdout, indent=1)
        print()
    else:
        print(f"ART BinaryActivationDetector per tap, run {args.run}")
        print(f"{'setting':<11} {'tap':<10} {'val macro-AUC':>13} {'test macro-AUC':>14} {'DF min AUC':>10}")
        for r in rows:
            df = "n/a" if r["deep_features_min_auc"] is None else f"{r['deep_features_min_auc']:.3f}"
            print(f"{r['setting']:<11} {r['tap']:<10} {r['validation_macro_auc']:>13.3f} {r['test_macro_auc']:>14.3f} "
                  f"{df:>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
