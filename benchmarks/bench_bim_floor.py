"""BIM and its floor on dlib's classifier, before and after issue 16's floor work.

The floor is ``steps`` x (one forward pass + the input gradient, weights frozen), as in
``bench_attacks.py``.  Network variants (``set_memory_format`` / ``set_fused``):

- "before": PyTorch's default NCHW layout and the plain graph (the floor before issue 16);
- "channels-last": NHWC, plain graph (the first issue-16 floor);
- "new": channels-last and the fused graph (frad's defaults).

and glibc's allocator as it comes (``default``) or keeping freed memory (``keep``,
:mod:`frad.utils.allocator`, frad's default).  BIM runs through the unchanged attack code.
The allocator is process-wide, so ``--allocator both`` runs this script in child processes,
alternating the two for ``--rounds`` rounds; within a process everything is interleaved per
repeat.  Targets: floor before (default allocator) / new floor (keep) >= 1.3; BIM / new floor <= 1.1.

    python benchmarks/bench_bim_floor.py [--lfw-dir DIR] [--batch 32] [--steps 10] [--repeats 5]
        [--allocator default|keep|both] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from _common import report
from bench_attacks import chips_for

from frad.attacks import BIM, Misclassification
from frad.attacks.base import attack_mode
from frad.attacks.gradient import input_gradient
from frad.models import create_model
from frad.models.base import to_pixels
from frad.models.classifier import FaceClassifier
from frad.utils import allocator

ALLOCATORS = ("default", "keep")


def measure(args: argparse.Namespace, alloc: str) -> dict:
    if alloc == "keep":
        allocator.keep_freed_memory(True)
    else:
        os.environ[allocator.ENV_VAR] = "0"  # glibc as it comes: never call mallopt
    torch.manual_seed(0)
    old = FaceClassifier(create_model("dlib_resnet_v1").set_memory_format("contiguous").set_fused(False),
                         10, dropout=0.0).eval()
    with torch.no_grad():
        old.head[1].weight.mul_(20)
    cl = FaceClassifier(create_model("dlib_resnet_v1").set_fused(False), 10, dropout=0.0).eval()
    cl.head.load_state_dict(old.head.state_dict())
    new = FaceClassifier(create_model("dlib_resnet_v1").set_fused(True), 10, dropout=0.0).eval()
    new.head.load_state_dict(old.head.state_dict())
    x = to_pixels(chips_for(args.lfw_dir, args.batch))
    with torch.no_grad():
        y = old(x).argmax(1)
    step = 2 * args.eps * 255 / args.steps

    def floor(clf: torch.nn.Module) -> Callable[[], object]:
        def run() -> None:
            with attack_mode(clf):
                xx = x
                for _ in range(args.steps):
                    g, _ = input_gradient(clf, xx, y)
                    xx = (xx + step * g.sign()).clamp(0, 255)

        return run

    def bim(clf: torch.nn.Module) -> Callable[[], object]:
        return lambda: BIM(steps=args.steps, early_stop=False)(clf, x, Misclassification(y), epsilons=args.eps)

    runs = {"floor, before (NCHW)": floor(old), "floor, channels-last": floor(cl), "floor, new": floor(new),
            "BIM, before (NCHW)": bim(old), "BIM, new": bim(new)}
    a = BIM(steps=args.steps, early_stop=False)
    r_old = a(old, x, Misclassification(y), epsilons=args.eps)
    r_cl = a(cl, x, Misclassification(y), epsilons=args.eps)
    r_new = a(new, x, Misclassification(y), epsilons=args.eps)
    same = {"success_equal": bool(torch.equal(r_old.success, r_new.success)),
            "adversarial_max_diff": float((r_old.clipped[0] - r_new.clipped[0]).abs().max()),
            "pixels_differing_share": float((r_old.clipped[0] != r_new.clipped[0]).float().mean()),
            "fused_success_equals_channels_last": bool(torch.equal(r_cl.success, r_new.success)),
            "fused_vs_channels_last_pixels_differing_share":
                float((r_cl.clipped[0] != r_new.clipped[0]).float().mean())}
    times: dict[str, list[float]] = {f"{k}@{alloc}": [] for k in runs}
    cpu: dict[str, list[float]] = {f"{k}@{alloc}": [] for k in runs}
    for _ in range(args.repeats):
        for k, fn in runs.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            cpu[f"{k}@{alloc}"].append(time.process_time() - c)
            times[f"{k}@{alloc}"].append(time.perf_counter() - t)
        print(f"[{alloc}] " + "  ".join(f"{k.split('@')[0]} {v[-1]:.2f}" for k, v in cpu.items()) + " (cpu s)",
              file=sys.stderr, flush=True)
    return {"all_seconds": times, "all_cpu_seconds": cpu, "results": {alloc: same}}


def in_children(args: argparse.Namespace) -> dict:
    merged: dict = {"all_seconds": {}, "all_cpu_seconds": {}, "results": {}}
    child = [sys.executable, os.path.abspath(__file__), "--batch", str(args.batch), "--steps", str(args.steps),
             "--eps", str(args.eps), "--repeats", str(args.repeats), "--json"]
    if args.lfw_dir:
        child += ["--lfw-dir", args.lfw_dir]
    if args.threads:
        child += ["--threads", str(args.threads)]
    for r in range(args.rounds):
        for alloc in ALLOCATORS if r % 2 == 0 else ALLOCATORS[::-1]:
            print(f"round {r + 1}/{args.rounds}: allocator {alloc}", file=sys.stderr, flush=True)
            out = json.loads(subprocess.run([*child, "--allocator", alloc], check=True, stdout=subprocess.PIPE,
                                            text=True).stdout)
            for field in ("all_seconds", "all_cpu_seconds"):
                for k, v in out[field].items():
                    merged[field].setdefault(k, []).extend(v)
            merged["results"].update(out["results"])
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw-dir", default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eps", type=float, default=0.03)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--allocator", default="both", choices=[*ALLOCATORS, "both"])
    ap.add_argument("--rounds", type=int, default=3, help="with --allocator both: child processes per allocator")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = in_children(args) if args.allocator == "both" else measure(args, args.allocator)
    times, cpu = data["all_seconds"], data["all_cpu_seconds"]
    base_alloc = "default" if args.allocator == "both" else args.allocator
    new_alloc = "keep" if args.allocator == "both" else args.allocator

    def rat(med: dict[str, float]) -> dict[str, float]:
        b, n = base_alloc, new_alloc
        out = {
            "old_floor_over_new_floor": med[f"floor, before (NCHW)@{b}"] / med[f"floor, new@{n}"],
            "bim_new_over_new_floor": med[f"BIM, new@{n}"] / med[f"floor, new@{n}"],
            "bim_old_over_bim_new": med[f"BIM, before (NCHW)@{b}"] / med[f"BIM, new@{n}"],
            "bim_old_over_old_floor": med[f"BIM, before (NCHW)@{b}"] / med[f"floor, before (NCHW)@{b}"],
            "old_floor_over_channels_last_floor": med[f"floor, before (NCHW)@{b}"] / med[f"floor, channels-last@{b}"],
            "channels_last_floor_over_fused_floor": med[f"floor, channels-last@{b}"] / med[f"floor, new@{b}"],
        }
        if b != n:
            out["fused_floor_default_over_keep"] = med[f"floor, new@{b}"] / med[f"floor, new@{n}"]
            out["old_floor_default_over_keep"] = med[f"floor, before (NCHW)@{b}"] / med[f"floor, before (NCHW)@{n}"]
        return out

    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    ratios, ratios_cpu = rat(med), rat(med_cpu)
    n = len(next(iter(cpu.values())))
    lines = [f"dlib classifier, batch {args.batch}, BIM {args.steps} steps at eps {args.eps}; median of "
             f"{n} interleaved repeats, {torch.get_num_threads()} threads (allocator: {args.allocator})"]
    lines += [f"  {k:<36} {v:8.2f} s wall  {med_cpu[k]:8.2f} s cpu" for k, v in med.items()]
    lines += [f"  {k:<36} {v:8.2f}x wall  {ratios_cpu[k]:8.2f}x cpu" for k, v in ratios.items()]
    lines.append(f"  same result: {data['results']}")
    lines.append("targets: old_floor_over_new_floor >= 1.3; bim_new_over_new_floor <= 1.1")
    report({"settings": vars(args), "seconds": med, "all_seconds": times, "ratios": ratios, "cpu_seconds": med_cpu,
            "all_cpu_seconds": cpu, "cpu_ratios": ratios_cpu, "results": data["results"]},
           "\n".join(lines), args.json)


if __name__ == "__main__":
    main()
