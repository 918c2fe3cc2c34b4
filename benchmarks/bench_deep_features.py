"""Seconds per image of the kNN-guided deep-features attack on dlib's network.

Sources are LFW faces (one per identity), templates the centroids of each identity's other
faces, targets the next identity (targeted) or any other (untargeted).  The reference is
the floor: the attack's own count of network evaluations x the time of one forward pass plus
input gradient at batch 1 (what SciPy's L-BFGS-B asks for), divided over the workers; the
ratio is the overhead of L-BFGS-B, the k-NN checks and the worker processes.

    python benchmarks/bench_deep_features.py --lfw-dir DIR [--n 8] [--delta 5] [--workers 1 2] [--json]

Without --lfw-dir it uses random pixels and random templates (timings only; success is then
meaningless).
"""

from __future__ import annotations

import argparse
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

    results = {}
    lines = [f"{args.n} images, delta {args.delta}, one evaluation (batch 1) = {t_eval * 1e3:.0f} ms, "
             f"{torch.get_num_threads()} threads in this process"]
    for w in args.workers:
        for targeted in (True, False):
            crit = TargetedMisclassification(targets) if targeted else Misclassification(y)
            with DeepFeaturesAttack(max_iterations=args.max_iterations, workers=w) as attack:
                t = time.perf_counter()
                res = attack(model, x, crit, epsilons=args.delta, templates=templates)
                sec = time.perf_counter() - t
            evals = int(res.evaluations.sum())
            floor = evals * t_eval / w
            key = f"workers{w}-{'T' if targeted else 'U'}"
            results[key] = {
                "seconds_per_image": sec / args.n, "success": float(res.success.float().mean()),
                "mean_iterations": float(res.iterations.float().mean()), "evaluations": evals,
                "floor_seconds": floor, "over_floor": sec / floor if floor else float("nan"),
                "changed_share_above_5": float(res.changed_share.mean()),
            }
            r = results[key]
            lines.append(f"  {key:<12} {r['seconds_per_image']:7.2f} s/image  success {r['success']:.0%}  "
                         f"iterations {r['mean_iterations']:.1f}  {r['over_floor']:.2f}x the floor")
    report({"settings": vars(args), "eval_seconds": t_eval, "results": results}, "\n".join(lines), args.json)


if __name__ == "__main__":
    main()
