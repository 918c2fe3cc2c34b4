"""BIM and its floor on dlib's classifier, before and after the channels-last floor (issue 16).

The floor is ``steps`` x (one forward pass + the input gradient, weights frozen), as in
``bench_attacks.py``.  "Today's floor" runs the network in PyTorch's default NCHW layout
(``model.memory_format = "contiguous"``), the new floor in channels-last (frad's default);
BIM runs on the new one through the unchanged attack code.  All interleaved per repeat.
Targets: old floor / new floor >= 1.3; BIM / new floor <= 1.1.

    python benchmarks/bench_bim_floor.py [--lfw-dir DIR] [--batch 32] [--steps 10] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import statistics
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw-dir", default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eps", type=float, default=0.03)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    old = FaceClassifier(create_model("dlib_resnet_v1").set_memory_format("contiguous"), 10, dropout=0.0).eval()
    with torch.no_grad():
        old.head[1].weight.mul_(20)
    new = FaceClassifier(create_model("dlib_resnet_v1"), 10, dropout=0.0).eval()
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

    runs = {"floor, today (NCHW)": floor(old), "floor, new (channels-last)": floor(new),
            "BIM, today (NCHW)": bim(old), "BIM, new (channels-last)": bim(new)}
    a = BIM(steps=args.steps, early_stop=False)
    r_old = a(old, x, Misclassification(y), epsilons=args.eps)
    r_new = a(new, x, Misclassification(y), epsilons=args.eps)
    same = {"success_equal": bool(torch.equal(r_old.success, r_new.success)),
            "adversarial_max_diff": float((r_old.clipped[0] - r_new.clipped[0]).abs().max()),
            "pixels_differing_share": float((r_old.clipped[0] != r_new.clipped[0]).float().mean())}
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, fn in runs.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            cpu[k].append(time.process_time() - c)
            times[k].append(time.perf_counter() - t)

    def rat(med: dict[str, float]) -> dict[str, float]:
        return {
            "old_floor_over_new_floor": med["floor, today (NCHW)"] / med["floor, new (channels-last)"],
            "bim_new_over_new_floor": med["BIM, new (channels-last)"] / med["floor, new (channels-last)"],
            "bim_old_over_bim_new": med["BIM, today (NCHW)"] / med["BIM, new (channels-last)"],
            "bim_old_over_old_floor": med["BIM, today (NCHW)"] / med["floor, today (NCHW)"],
        }

    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    ratios, ratios_cpu = rat(med), rat(med_cpu)
    lines = [f"dlib classifier, batch {args.batch}, BIM {args.steps} steps at eps {args.eps}; median of "
             f"{args.repeats} interleaved, {torch.get_num_threads()} threads"]
    lines += [f"  {k:<28} {v:8.2f} s wall  {med_cpu[k]:8.2f} s cpu" for k, v in med.items()]
    lines += [f"  {k:<28} {v:8.2f}x wall  {ratios_cpu[k]:8.2f}x cpu" for k, v in ratios.items()]
    lines.append(f"  same result: {same}")
    lines.append("targets: old_floor_over_new_floor >= 1.3; bim_new_over_new_floor <= 1.1")
    report({"settings": vars(args), "seconds": med, "all_seconds": times, "ratios": ratios, "cpu_seconds": med_cpu,
            "all_cpu_seconds": cpu, "cpu_ratios": ratios_cpu, "results": same},
           "\n".join(lines), args.json)


if __name__ == "__main__":
    main()
