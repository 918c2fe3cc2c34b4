"""What a config's stages cost on this machine: a fixed share of each stage timed, then extrapolated.

Reads an experiment config (default ``configs/lfw-dlib-full.yaml``) and, on real LFW chips
with dlib's network:

- attacks: times ``--share-steps`` steps of each attack family (BIM, MI-FGSM, CW-L2 with one
  binary-search step and no early abort) on one batch of ``--batch`` sources, and multiplies
  the cost per source-step by the config's steps x sources (CW: search steps x steps, an
  upper bound: ``abort_early`` stops samples sooner);
- deep features: solves ``--df-sources`` problems (delta 5, targeted and untargeted) and
  multiplies the seconds per problem by the config's problems (sources x deltas x settings);
- trajectories: times the all-taps forward pass per image, times the adversarials + naturals;
- detectors: times ``--share-epochs`` epochs of an LSTM and an MLP detector on random
  trajectories with the grid's rows per setting, times epochs x configurations x settings.

Each share runs both before and after issue 16 (NCHW layout and the one-at-a-time
deep-features solver vs channels-last and the batched solver), interleaved, so the ratios
also estimate how much faster a config's stages got.  Features, scenarios and the report are
taken from the recorded lfw-dlib run (under a minute together).  Times are wall seconds and
CPU seconds (``time.process_time``, steadier on a shared machine); run with one torch thread
on a shared machine and note it.

    python benchmarks/time_full_grid.py --lfw-dir DIR [--config configs/lfw-dlib-full.yaml]
        [--sources 316] [--df-problems 570] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from _common import report
from bench_attacks import chips_for
from bench_deep_features import lfw_data
from frad.attacks import MIFGSM, BIM, CarliniWagnerL2, DeepFeaturesAttack, Misclassification, TargetedMisclassification
from frad.models import create_model
from frad.models.base import to_pixels
from frad.models.classifier import FaceClassifier
from frad.pipeline.config import load_config

REPO = Path(__file__).resolve().parents[1]
RECORDED_OTHER_SECONDS = 28 + 25  # features 28 s, scenarios + report + trajectories < 25 s (lfw-dlib, RESULTS.md)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw-dir", required=True)
    ap.add_argument("--config", default=str(REPO / "configs" / "lfw-dlib-full.yaml"))
    ap.add_argument("--sources", type=int, default=316, help="classifier-attack sources (lfw-dlib: 316)")
    ap.add_argument("--df-problems", type=int, default=None,
                    help="deep-features problems (default: 95 test-split sources x deltas x settings)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--share-steps", type=int, default=5)
    ap.add_argument("--df-sources", type=int, default=16)
    ap.add_argument("--share-epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    run_cfg = cfg.attacks.run_config(cfg.seed)

    # ---------------------------------------------------------------- classifier attacks
    torch.manual_seed(0)
    n_cls = 158
    old = FaceClassifier(create_model("dlib_resnet_v1").set_memory_format("contiguous"), n_cls, dropout=0.0).eval()
    new = FaceClassifier(create_model("dlib_resnet_v1"), n_cls, dropout=0.0).eval()
    new.head.load_state_dict(old.head.state_dict())
    x = to_pixels(chips_for(args.lfw_dir, args.batch))
    y = torch.arange(args.batch) % n_cls
    k = args.share_steps
    families = {
        "bim": lambda m: BIM(steps=k)(m, x, Misclassification(y), epsilons=0.03),
        "mifgsm": lambda m: MIFGSM(steps=k)(m, x, Misclassification(y), epsilons=0.03),
        "cw_l2": lambda m: CarliniWagnerL2(binary_search_steps=1, steps=k, abort_early=False)(m, x, Misclassification(y)),
    }
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for fam, fn in families.items():
            for tag, m in (("before", old), ("after", new)):
                w, c = timed(lambda: fn(m))
                wall.setdefault(f"{fam}/{tag}", []).append(w / (k * args.batch))
                cpu.setdefault(f"{fam}/{tag}", []).append(c / (k * args.batch))

    # ---------------------------------------------------------------- deep features
    model_old = create_model("dlib_resnet_v1").set_memory_format("contiguous")
    model_new = create_model("dlib_resnet_v1")
    chips, labels, templates = lfw_data(args.lfw_dir, args.df_sources, model_new)
    xs = to_pixels(chips)
    ys = torch.as_tensor(labels)
    df_stats = {}
    for _ in range(args.repeats):
        for targeted in (True, False):
            crit = TargetedMisclassification((ys + 1) % len(templates)) if targeted else Misclassification(ys)
            for tag, m, batched in (("before", model_old, False), ("after", model_new, True)):
                res = {}
                w, c = timed(lambda: res.setdefault("r", DeepFeaturesAttack(batched=batched)(
                    m, xs, crit, epsilons=5.0, templates=templates)))
                key = f"deep_features/{tag}"
                wall.setdefault(key, []).append(w / (2 * len(xs)))  # two settings share the key: add them
                cpu.setdefault(key, []).append(c / (2 * len(xs)))
                r = res["r"]
                df_stats[f"{tag}-{'T' if targeted else 'U'}"] = {
                    "success": float(r.success.float().mean()), "iterations": float(r.iterations.float().mean())}
    # per problem = (T + U) / 2: pair the two settings of each repeat
    for key in ("deep_features/before", "deep_features/after"):
        for d in (wall, cpu):
            v = d[key]
            d[key] = [v[i] + v[i + 1] for i in range(0, len(v), 2)]

    # ---------------------------------------------------------------- trajectories (all taps)
    for _ in range(args.repeats):
        for tag, m in (("before", model_old), ("after", model_new)):
            def taps() -> None:
                with torch.no_grad():
                    m.forward_intermediates(x, "all", pool=True)
            w, c = timed(taps)
            wall.setdefault(f"trajectories/{tag}", []).append(w / args.batch)
            cpu.setdefault(f"trajectories/{tag}", []).append(c / args.batch)

    # ---------------------------------------------------------------- detectors
    from frad.detection.detectors import create_detector

    settings = len(cfg.detection.settings)
    per_setting = sum(1 for a in run_cfg.attacks if a.targeted) if settings else 0
    rows = int((per_setting * args.sources + args.sources) * (1 - cfg.detection.test_size))
    n_layers = len(model_new.resolve_taps("blocks"))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, n_layers, n_cls)).astype(np.float32)
    yy = (rng.random(rows) < 0.8).astype(int)
    det = {}
    for arch in ("lstm", "mlp"):
        params = {**cfg.detection.detector, **cfg.detection.arch.get(arch, {}), "max_epochs": args.share_epochs}
        params.pop("patience", None)
        w, c = timed(lambda: create_detector(arch, **params).fit(X, yy))
        det[arch] = (w / args.share_epochs, c / args.share_epochs)
    arch_count = {a: sum(1 for c in cfg.detection.configurations if c.startswith(a)) for a in ("lstm", "mlp")}
    epochs = int(cfg.detection.detector.get("max_epochs", 150))

    # ---------------------------------------------------------------- extrapolation
    med_w = {k2: statistics.median(v) for k2, v in wall.items()}
    med_c = {k2: statistics.median(v) for k2, v in cpu.items()}
    steps_of = {}
    for a in run_cfg.attacks:
        fam = a.attack
        s = int(a.params.get("steps", 1000 if fam == "cw_l2" else 10))
        if fam == "cw_l2":
            s *= int(a.params.get("binary_search_steps", 5))
        steps_of[fam] = steps_of.get(fam, 0) + s
    d = cfg.deep_features
    df_problems = args.df_problems or (95 * len(d.deltas) * len(d.settings)) if d.enabled else 0
    n_adv = len(run_cfg.attacks) * args.sources + df_problems
    stages: dict[str, dict[str, float]] = {}
    for tag in ("before", "after"):
        for which, med in (("wall", med_w), ("cpu", med_c)):
            st = {f"attacks:{fam}": steps * args.sources * med[f"{fam}/{tag}"] for fam, steps in steps_of.items()}
            st["deep_features"] = df_problems * med[f"deep_features/{tag}"]
            st["trajectories"] = (n_adv + args.sources) * med[f"trajectories/{tag}"]
            st["detectors"] = sum(arch_count[a] * settings * epochs * det[a][0 if which == "wall" else 1]
                                  for a in ("lstm", "mlp"))
            st["features, scenarios, report (recorded)"] = RECORDED_OTHER_SECONDS
            st["total"] = sum(st.values())
            stages[f"{tag}/{which}"] = st
    lines = [f"{Path(args.config).name}: {len(run_cfg.attacks)} classifier attacks on {args.sources} sources, "
             f"{df_problems} deep-features problems, detectors {sum(arch_count.values())} x {settings} settings x "
             f"{epochs} epochs ({rows} training rows each); {torch.get_num_threads()} thread(s), median of {args.repeats}"]
    lines.append(f"  {'stage':<40} {'before (cpu)':>14} {'after (cpu)':>14} {'after (wall)':>14} {'ratio cpu':>10}")
    for name in stages["after/cpu"]:
        b, a, aw = stages["before/cpu"][name], stages["after/cpu"][name], stages["after/wall"][name]
        lines.append(f"  {name:<40} {b / 60:12.1f} m {a / 60:12.1f} m {aw / 60:12.1f} m {b / a if a else float('nan'):9.2f}x")
    lines.append(f"  deep features success / iterations: {df_stats}")
    lines.append("  unit costs (cpu s): " + ", ".join(f"{k2} {v:.4f}" for k2, v in med_c.items()))
    report({"settings": vars(args), "unit_wall": med_w, "unit_cpu": med_c, "all_wall": wall, "all_cpu": cpu,
            "detector_epoch_seconds": det, "stages_seconds": stages, "deep_features": df_stats,
            "counts": {"attacks": len(run_cfg.attacks), "steps_per_source": steps_of, "df_problems": df_problems,
                       "detector_rows": rows, "adversarials": n_adv}},
           "\n".join(lines), args.json)


if __name__ == "__main__":
    main()
