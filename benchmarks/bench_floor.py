"""The floor under every attack: one forward pass, and one forward pass + input gradient.

For dlib's network (150x150) and SE-ResNet-50 (224x224, random weights: speed does not
depend on the values) at several batch sizes, times the two operations in each variant:

- ``nchw``: PyTorch's default layout (``model.set_memory_format("contiguous")``);
- ``channels_last``: NHWC weights and activations (frad's default since issue 16);
- ``compile`` / ``compile+cl``: ``torch.compile`` of the network on top of either layout
  (``--compile``; compiling takes minutes per shape on 2 cores, so it is opt-in);

each at every torch thread count of ``--threads``.  Variants are interleaved within each
repeat (machine load hits them alike); the figures are the medians over ``--repeats`` of the
wall seconds and of the CPU seconds (``time.process_time``) per call.  On a machine shared
with other jobs, CPU time at one thread is the steadier measure of the work done; wall time
with 2 threads there mostly measures the waiting for the other jobs.  Ratios are ``nchw / variant`` at the same thread count (> 1 = faster), and
``max_diff`` the largest difference of embeddings and input gradients from ``nchw``.

    python benchmarks/bench_floor.py [--models dlib senet] [--batches 1 16 32]
        [--threads 1 2] [--repeats 5] [--compile] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from _common import report
from frad.models import create_model
from frad.models.senet import senet50_ft

MODELS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "dlib": (lambda: create_model("dlib_resnet_v1"), 150),
    "senet": (lambda: senet50_ft(pretrained=False, num_classes=0), 224),
}


def forward(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x)


def forward_grad(model: nn.Module, x: Tensor) -> Tensor:
    """Forward + gradient of a scalar of the output w.r.t. the input only (weights frozen)."""
    xx = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xx).pow(2).sum(), xx)
    return g


class _Compiled(nn.Module):
    """torch.compile of a face model's forward (the model's own layout setting kept)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.fn = torch.compile(model, dynamic=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16, 32])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--ops", nargs="+", default=["forward", "forward+grad"], choices=["forward", "forward+grad"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=0.2, help="calls per timing sample: at least this long")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ops = {"forward": forward, "forward+grad": forward_grad}

    torch.manual_seed(0)
    results: list[dict] = []
    lines = [f"median seconds per call over {args.repeats} interleaved repeats; ratio = nchw / variant"]
    for mname in args.models:
        build, size = MODELS[mname]
        nchw = build().eval().set_memory_format("contiguous")
        cl = build().eval()
        cl.load_state_dict(nchw.state_dict())
        cl.set_memory_format("channels_last")
        variants: dict[str, nn.Module] = {"nchw": nchw, "channels_last": cl}
        if args.compile:
            variants["compile"] = _Compiled(nchw)
            variants["compile+cl"] = _Compiled(cl)
        for batch in args.batches:
            x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch)) * 255
            for opname in args.ops:
                op = ops[opname]
                ref = op(nchw, x)
                diffs, calls, compile_s = {}, {}, {}
                for vname, m in variants.items():
                    t = time.perf_counter()
                    out = op(m, x)  # warm-up (and compilation)
                    compile_s[vname] = time.perf_counter() - t
                    diffs[vname] = float((out - ref).abs().max())
                    t = time.perf_counter()
                    op(m, x)
                    one = time.perf_counter() - t
                    calls[vname] = max(1, round(args.min_seconds / max(one, 1e-6)))
                times: dict[str, list[float]] = {f"{v}@{th}": [] for v in variants for th in args.threads}
                cpu: dict[str, list[float]] = {k: [] for k in times}
                for _ in range(args.repeats):
                    for th in args.threads:
                        torch.set_num_threads(th)
                        for vname, m in variants.items():
                            t, c = time.perf_counter(), time.process_time()
                            for _ in range(calls[vname]):
                                op(m, x)
                            cpu[f"{vname}@{th}"].append((time.process_time() - c) / calls[vname])
                            times[f"{vname}@{th}"].append((time.perf_counter() - t) / calls[vname])
                med = {k: statistics.median(v) for k, v in times.items()}
                med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
                ratios = {k: med[f"nchw@{k.split('@')[1]}"] / v for k, v in med.items()}
                ratios_cpu = {k: med_cpu[f"nchw@{k.split('@')[1]}"] / v for k, v in med_cpu.items()}
                row = {"model": mname, "batch": batch, "op": opname, "seconds": med, "ratio_vs_nchw": ratios,
                       "cpu_seconds": med_cpu, "cpu_ratio_vs_nchw": ratios_cpu,
                       "all_seconds": times, "all_cpu_seconds": cpu, "max_diff": diffs,
                       "ref_scale": float(ref.abs().max()), "first_call_seconds": compile_s}
                results.append(row)
                cells = "  ".join(f"{k} {v * 1e3:8.1f} ms ({ratios[k]:.2f}x, cpu {ratios_cpu[k]:.2f}x)"
                                  for k, v in med.items())
                lines.append(f"{mname:<6} b{batch:<3} {opname:<13} {cells}")
                lines.append(f"{'':<6} {'':<4} {'':<13} max|diff| " +
                             "  ".join(f"{k} {v:.1e}" for k, v in diffs.items()) + f" (scale {row['ref_scale']:.1e})")
                print(lines[-2], file=sys.stderr, flush=True)
    report({"settings": vars(args), "results": results}, "\n".join(lines), args.json)


if __name__ == "__main__":
    main()
