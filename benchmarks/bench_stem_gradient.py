"""The input gradient of a face network's stem: PyTorch's own against frad's space-to-depth form.

A stem convolution (3 colours in, stride 2) has an input gradient that oneDNN runs poorly on
CPUs (a transposed convolution to 3 channels).  :mod:`frad.models.space_to_depth` computes the
same sum as a stride-1 transposed convolution to 3 x 2 x 2 channels.  This times, side by side
and interleaved per repeat, ``torch.nn.grad.conv2d_input`` (PyTorch's, the reference) and
``strided_conv_input_grad`` on the stems of dlib's ResNet (3->32, 7x7/2, 150x150), SE-ResNet-50
(3->64, 7x7/2 pad 3, 224x224) and MobileFaceNet (3->64, 3x3/2 pad 1, 112x112), random weights,
in both layouts; prints CPU ms per call (median), the ratio (> 1: frad's faster) and the
largest relative difference.  Only dlib's network uses it (its fused graph).

    python benchmarks/bench_stem_gradient.py [--batches 1 16 32] [--repeats 7] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import interleaved_medians, report

from frad.models.space_to_depth import strided_conv_input_grad

# name -> (in, out, kernel, stride, padding, side)
STEMS = {
    "dlib": (3, 32, 7, 2, 0, 150),
    "senet": (3, 64, 7, 2, 3, 224),
    "mobilefacenet": (3, 64, 3, 2, 1, 112),
}
LAYOUTS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 32])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name, (cin, cout, k, s, p, side) in STEMS.items():
        out = (side + 2 * p - k) // s + 1
        w0 = torch.randn(cout, cin, k, k, generator=gen) * 0.05
        for batch in args.batches:
            g0 = torch.randn(batch, cout, out, out, generator=gen)
            for layout, fmt in LAYOUTS.items():
                w, g = w0.contiguous(memory_format=fmt), g0.contiguous(memory_format=fmt)
                size = (batch, cin, side, side)
                fns = {
                    "pytorch": lambda: torch.nn.grad.conv2d_input(size, w, g, stride=s, padding=p),
                    "frad": lambda: strided_conv_input_grad(g, w, s, p, (side, side)),
                }
                ref, got = fns["pytorch"](), fns["frad"]()
                diff = float((got - ref).abs().max() / ref.abs().max())
                med = {key: v * 1000 for key, v in interleaved_medians(fns, args.repeats, time.process_time).items()}
                rows.append({"stem": name, "batch": batch, "layout": layout, "pytorch_ms": med["pytorch"],
                             "frad_ms": med["frad"], "ratio": med["pytorch"] / med["frad"], "max_rel_diff": diff})
    lines = [f"stem input gradient, CPU ms per call (median of {args.repeats}), {args.threads} thread(s)",
             f"  {'stem':<14}{'batch':>6}  {'layout':<14}{'pytorch':>9}{'frad':>9}{'ratio':>8}  max rel diff"]
    lines += [f"  {r['stem']:<14}{r['batch']:>6}  {r['layout']:<14}{r['pytorch_ms']:>9.1f}{r['frad_ms']:>9.1f}"
              f"{r['ratio']:>7.2f}x  {r['max_rel_diff']:.1e}" for r in rows]
    report({"settings": vars(args), "rows": rows}, "\n".join(lines), args.json)


if __name__ == "__main__":
    main()
