"""Seconds per image of the kNN-guided deep-features attack on dlib's network.

Sources are LFW faces (one per identity), templates the centroids of each identity's other
faces, targets the next identity (targeted) or any other (untargeted).  The reference is
the floor: the attack's own count of network evaluations x the time of one forward pass plus
input gradient at batch 1 (what SciPy's L-BFGS-B asks for), divided over the workers; the
ratio is the overhead of L-BFGS-B, the k-NN checks and the worker processes.

    python benchmarks/bench_deep_features.py --lfw-dir DIR [--n 8] [--delta 5] [--workers 1 2]
        [--solvers batched one-at-a-time] [--repeats 1] [--json]

``--solvers`` compares the lockstep solver that shares one batched network pass per step
(``batched``, the default since issue 16) with SciPy's ``minimize`` one image at a time
(``one-at-a-time``, the solver before), interleaved per repeat; it also reports whether
both give every image the same success and iterations, and how far their adversarials differ.

Without --lfw-dir it uses random pixels and random templates (timings only; success is then
meaningless).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from _common import report
from frad.attacks import DeepFeaturesAttack, Misclassification, TargetedMisclassification
from frad.models import create_model
from frad.models.base import embed_images, to_pixels


def lfw_data(lfw_dir: str, n: int, model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from frad.data.alignment import align_images

    root = Path(lfw_dir, "images")
    ids = sorted(p for p in root.iterdir() if p.is_dir())[: max(n, 10)]
    paths, labels = [], []
    for c, d in enumerate(ids):
        files = sorted(d.glob("*.jpg"))[:6]
        paths += files
        labels += [c] * len(files)
    labels_np = np.array(labels)
    chips = align_images(paths).chips
    emb = embed_images(model, chips)
    first = np.array([np.flatnonzero(labels_np == c)[0] for c in range(len(ids))])
    rest = np.setdiff1d(np.arange(len(paths)), first)
    templates = np.stack([emb[rest][labels_np[rest] == c].mean(0) for c in range(len(ids))])
    return chips[first[:n]], np.arange(n), templates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw-dir", default=None)
    ap.add_argument("--n", type=int, default=8, help="source images")
    ap.add_argument("--delta", type=float, default=5.0, help="per-pixel box, grey levels")
    ap.add_argument("--max-iterations", type=int, default=700)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=None, help="torch threads in this process (default: torch's)")
    ap.add_argument("--solvers", nargs="+", default=["batched", "one-at-a-time"], choices=["batched", "one-at-a-time"])
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats (median time)")
    ap.add_argument("--control", action="store_true",
                    help="also rerun one-at-a-time in NCHW: how far float rounding alone moves the adversarials")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = create_model("dlib_resnet_v1")
    if args.lfw_dir:
        chips, labels, templates = lfw_data(args.lfw_dir, args.n, model)
    else:
        rng = np.random.default_rng(0)
        chips = rng.integers(0, 256, (args.n, 150, 150, 3), dtype=np.uint8)
        labels = np.arange(args.n) % 10
        templates = rng.normal(size=(10, 128)).astype(np.float32) * 0.1
    x = to_pixels(chips)
    y = torch.as_tensor(labels)
    n_cls = len(templates)
    targets = (y + 1) % n_cls

    # one forward + input gradient at batch 1: the unit L-BFGS-B pays per evaluation
    x1 = x[:1].clone()
    for _ in range(2):
        xx = x1.clone().requires_grad_(True)
        torch.autograd.grad(model(xx).pow(2).sum(), xx)
    t = time.perf_counter()
    reps = 10
    for _ in range(reps):
        xx = x1.clone().requires_grad_(True)
        torch.autograd.grad(model(xx).pow(2).sum(), xx)
    t_eval = (time.perf_counter() - t) / reps

    results: dict = {}
    lines = [f"{args.n} images, delta {args.delta}, one evaluation (batch 1) = {t_eval * 1e3:.0f} ms, "
             f"{torch.get_num_threads()} threads in this process; median of {args.repeats}"]
    keys = [(w, targeted, solver) for w in args.workers for targeted in (True, False) for solver in args.solvers]
    secs: dict[str, list[float]] = {}
    outs: dict[str, object] = {}
    for _ in range(args.repeats):
        for w, targeted, solver in keys:
            crit = TargetedMisclassification(targets) if targeted else Misclassification(y)
            key = f"{solver}-workers{w}-{'T' if targeted else 'U'}"
            with DeepFeaturesAttack(max_iterations=args.max_iterations, workers=w,
                                    batched=solver == "batched") as attack:
                t = time.perf_counter()
                outs[key] = attack(model, x, crit, epsilons=args.delta, templates=templates)
                secs.setdefault(key, []).append(time.perf_counter() - t)
    for w, targeted, solver in keys:
        key = f"{solver}-workers{w}-{'T' if targeted else 'U'}"
        res = outs[key]
        sec = statistics.median(secs[key])
        evals = int(res.evaluations.sum())
        floor = evals * t_eval / w
        results[key] = {
            "seconds_per_image": sec / args.n, "images_per_second": args.n / sec,
            "all_seconds": secs[key], "success": float(res.success.float().mean()),
            "mean_iterations": float(res.iterations.float().mean()), "evaluations": evals,
            "floor_seconds": floor, "over_floor": sec / floor if floor else float("nan"),
            "changed_share_above_5": float(res.changed_share.mean()),
        }
        r = results[key]
        lines.append(f"  {key:<28} {r['seconds_per_image']:7.3f} s/image ({r['images_per_second']:.2f} images/s)  "
                     f"success {r['success']:.0%}  iterations {r['mean_iterations']:.2f}  "
                     f"evaluations {evals}")
    comparisons = {}
    if len(args.solvers) == 2:
        for w in args.workers:
            for tag in ("T", "U"):
                a, b = outs[f"batched-workers{w}-{tag}"], outs[f"one-at-a-time-workers{w}-{tag}"]
                ka, kb = f"batched-workers{w}-{tag}", f"one-at-a-time-workers{w}-{tag}"
                both = a.success[0] & b.success[0]
                c = {
                    "speedup_images_per_second": results[ka]["images_per_second"] / results[kb]["images_per_second"],
                    "same_success_per_image": bool(torch.equal(a.success, b.success)),
                    "same_iterations_per_image": bool(torch.equal(a.iterations, b.iterations)),
                    "images_with_other_iterations": int((a.iterations != b.iterations).sum()),
                    "max_adversarial_diff_where_both_succeed": float(
                        (a.clipped[0][both] - b.clipped[0][both]).abs().max()) if both.any() else float("nan"),
                    "mean_adversarial_diff_where_both_succeed": float(
                        (a.clipped[0][both] - b.clipped[0][both]).abs().mean()) if both.any() else float("nan"),
                }
                if args.control and w == args.workers[0]:
                    # the same one-at-a-time solver, only the float rounding of the network changed
                    # (NCHW instead of channels-last): how far rounding alone moves an adversarial
                    crit = TargetedMisclassification(targets) if tag == "T" else Misclassification(y)
                    model.set_memory_format("contiguous")
                    try:
                        r = DeepFeaturesAttack(max_iterations=args.max_iterations, workers=1, batched=False)(
                            model, x, crit, epsilons=args.delta, templates=templates)
                    finally:
                        model.set_memory_format("channels_last")
                    both2 = r.success[0] & b.success[0]
                    c["control_nchw_vs_channels_last_one_at_a_time"] = {
                        "same_iterations_per_image": bool(torch.equal(r.iterations, b.iterations)),
                        "max_adversarial_diff": float((r.clipped[0][both2] - b.clipped[0][both2]).abs().max()),
                        "mean_adversarial_diff": float((r.clipped[0][both2] - b.clipped[0][both2]).abs().mean()),
                    }
                comparisons[f"workers{w}-{tag}"] = c
                lines.append(f"  batched / one-at-a-time, workers {w}, {tag}: {c['speedup_images_per_second']:.2f}x "
                             f"images/s; same success {c['same_success_per_image']}, same iterations "
                             f"{c['same_iterations_per_image']} ({c['images_with_other_iterations']} differ), "
                             f"|adv diff| max {c['max_adversarial_diff_where_both_succeed']:.2e} mean "
                             f"{c['mean_adversarial_diff_where_both_succeed']:.2e} grey levels")
                if "control_nchw_vs_channels_last_one_at_a_time" in c:
                    cc = c["control_nchw_vs_channels_last_one_at_a_time"]
                    lines.append(f"    control, one-at-a-time NCHW vs channels-last: same iterations "
                                 f"{cc['same_iterations_per_image']}, |adv diff| max {cc['max_adversarial_diff']:.2e} "
                                 f"mean {cc['mean_adversarial_diff']:.2e}")
    results["comparisons"] = comparisons
    report({"settings": vars(args), "eval_seconds": t_eval, "results": results}, "\n".join(lines), args.json)


if __name__ == "__main__":
    main()
