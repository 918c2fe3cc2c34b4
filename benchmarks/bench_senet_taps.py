"""Cost of returning senet50_ft's 16 block taps, against a plain forward, in one run.

Times (median of interleaved repeats, same process, same input): the plain forward (the
embedding alone), ``forward_intermediates`` returning all 16 block taps as maps, the same
pooled to vectors (what the detector reads), and the same 16 taps read through forward
hooks by :func:`frad.models.tap_model` on the same network (the adapter's cost).  The
goal is under 5% for the 16 taps.  Random weights unless ``--weights`` is given (speed
does not depend on the values).

    python benchmarks/bench_senet_taps.py [--batch 8] [--size 224] [--repeats 7] [--weights PATH] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from _common import report
from frad.models import create_model, tap_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--weights", default=None, help="a senet50_ft weight file (default: random weights)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.weights:
        model = create_model("senet50_ft", weights=args.weights, num_classes=0)
    else:
        model = create_model("senet50_ft", pretrained=False, num_classes=0)
    model = model.to(device)
    blocks = model.resolve_taps("blocks")
    hooked = tap_model(
        model, {t.name: t.module for t in model.feature_info if t.name in blocks}, embedding="avgpool",
        input_size=(args.size, args.size), name="senet50_ft via tap_model",
    )
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(args.batch, 3, args.size, args.size, generator=gen) * 255).to(device)

    def timed(fn: Callable[[], object]) -> Callable[[], float]:
        @torch.no_grad()
        def run() -> float:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t

        return run

    fns = {
        "plain_forward": timed(lambda: model(x)),
        "16_taps": timed(lambda: model.forward_intermediates(x, "blocks")),
        "16_taps_pooled": timed(lambda: model.forward_intermediates(x, "blocks", pool=True)),
        "16_taps_via_hooks": timed(lambda: hooked.forward_intermediates(x, "blocks")),
    }
    with torch.no_grad():  # the hooked taps are the native ones
        _, native = model.forward_intermediates(x[:1], "blocks")
        _, via_hooks = hooked.forward_intermediates(x[:1], "blocks")
    same = all(torch.equal(native[k], via_hooks[k]) for k in blocks)

    for f in fns.values():  # warm-up
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(args.repeats):
        order = list(fns) if i % 2 == 0 else list(reversed(fns))  # interleave; alternate the order
        for k in order:
            times[k].append(fns[k]())
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["plain_forward"]
    others = [k for k in fns if k != "plain_forward"]
    overhead = {k: med[k] / base - 1 for k in others}
    # Under a shared CPU the minimum and the per-repeat ratio (runs adjacent in time) are steadier.
    best = {k: min(v) for k, v in times.items()}
    overhead_min = {k: best[k] / best["plain_forward"] - 1 for k in others}
    paired = {k: statistics.median(a / b for a, b in zip(times[k], times["plain_forward"])) - 1 for k in others}
    payload = {
        "batch": args.batch,
        "size": args.size,
        "repeats": args.repeats,
        "device": str(device),
        "taps": len(blocks),
        "seconds_per_batch": med,
        "all_seconds": times,
        "overhead_vs_plain": overhead,
        "overhead_vs_plain_min": overhead_min,
        "overhead_vs_plain_paired": paired,
        "goal_overhead": 0.05,
        "meets_goal": overhead["16_taps"] < 0.05,
        "hooked_taps_equal_native": same,
    }
    text = "\n".join(
        [f"senet50_ft, batch {args.batch}, {args.size}x{args.size}, {device}, median of {args.repeats} interleaved runs"]
        + [
            f"  {k:<20} {med[k]:.3f} s/batch (min {best[k]:.3f})"
            + (f"  {100 * overhead[k]:+.1f}% (min {100 * overhead_min[k]:+.1f}%, paired {100 * paired[k]:+.1f}%)" if k in overhead else "")
            for k in fns
        ]
        + [
            f"  16 taps vs plain forward: ratio {med['16_taps'] / base:.3f} (goal < 1.05: {'met' if payload['meets_goal'] else 'NOT met'})",
            f"  taps through hooks equal the native taps: {same}",
        ]
    )
    report(payload, text, args.json)


if __name__ == "__main__":
    main()
