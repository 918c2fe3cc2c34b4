"""The floor under every attack: one forward pass, and one forward pass + input gradient.

For dlib's network (150x150) and SE-ResNet-50 (224x224, random weights: speed does not
depend on the values) at several batch sizes, times the two operations in each variant:

- ``nchw``: PyTorch's default layout, plain graph (``set_memory_format("contiguous")``,
  ``set_fused(False)``): the floor before issue 16;
- ``channels_last``: NHWC weights and activations, plain graph (the first issue-16 floor);
- ``cl+fused``: channels-last and the model's cheaper equivalent graph (``set_fused(True)``,
  frad's default; dlib only: max-pool before the stem's ReLU, in-place ReLU and residual add,
  the stem's input gradient as a stride-1 convolution, :mod:`frad.models.space_to_depth`);
- ``compile`` / ``compile+cl``: ``torch.compile`` of the network on top of either layout
  (``--compile``; compiling takes minutes per shape on 2 cores, so it is opt-in);

each at every torch thread count of ``--threads``, and with glibc's allocator as it comes
(``default``) or keeping freed memory (``keep``, :mod:`frad.utils.allocator`, frad's default).
The allocator is process-wide, so ``--allocator both`` runs this script in child processes,
alternating ``default`` and ``keep`` for ``--rounds`` rounds; within a process the model
variants are interleaved within each repeat (machine load hits them alike).  The figures are
the medians over all repeats of the wall seconds and of the CPU seconds
(``time.process_time``) per call.  On a machine shared with other jobs, CPU time at one
thread is the steadier measure of the work done.  Ratios are ``nchw@default / variant`` at
the same thread count (> 1 = faster), and ``max_diff`` the largest difference of embeddings
and input gradients from ``nchw``.

    python benchmarks/bench_floor.py [--models dlib senet] [--batches 1 16 32]
        [--threads 1 2] [--repeats 5] [--allocator default|keep|both] [--rounds 3]
        [--compile] [--json]
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
from torch import Tensor, nn

from frad.models import create_model
from frad.models.senet import senet50_ft
from frad.utils import allocator

# name -> (builder, input side, has a fused graph of its own)
MODELS: dict[str, tuple[Callable[[], nn.Module], int, bool]] = {
    "dlib": (lambda: create_model("dlib_resnet_v1"), 150, True),
    "senet": (lambda: senet50_ft(pretrained=False, num_classes=0), 224, False),
}
ALLOCATORS = ("default", "keep")


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


def measure(args: argparse.Namespace, alloc: str) -> list[dict]:
    """Every (model, batch, op) with its model variants interleaved, in this process."""
    if alloc == "keep":
        allocator.keep_freed_memory(True)
    else:
        os.environ[allocator.ENV_VAR] = "0"  # glibc as it comes: never call mallopt
    ops = {"forward": forward, "forward+grad": forward_grad}
    torch.manual_seed(0)
    rows: list[dict] = []
    for mname in args.models:
        build, size, has_fused = MODELS[mname]
        nchw = build().eval().set_memory_format("contiguous").set_fused(False)
        cl = build().eval()
        cl.load_state_dict(nchw.state_dict())
        cl.set_memory_format("channels_last").set_fused(False)
        variants: dict[str, Callable[[Tensor], Tensor]] = {"nchw": nchw, "channels_last": cl}
        if has_fused:
            fused = build().eval()
            fused.load_state_dict(nchw.state_dict())
            fused.set_memory_format("channels_last").set_fused(True)
            variants["cl+fused"] = fused
        if args.compile:
            variants["compile"] = _Compiled(nchw)
            variants["compile+cl"] = _Compiled(cl)
        for batch in args.batches:
            x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch)) * 255
            for opname in args.ops:
                op = ops[opname]
                ref = op(nchw, x)
                diffs, calls, first_s = {}, {}, {}
                for vname, m in variants.items():
                    t = time.perf_counter()
                    out = op(m, x)  # warm-up (and compilation)
                    first_s[vname] = time.perf_counter() - t
                    diffs[vname] = float((out - ref).abs().max())
                    t = time.perf_counter()
                    op(m, x)
                    one = time.perf_counter() - t
                    calls[vname] = max(1, round(args.min_seconds / max(one, 1e-6)))
                keys = [f"{v}@{th}@{alloc}" for v in variants for th in args.threads]
                times: dict[str, list[float]] = {k: [] for k in keys}
                cpu: dict[str, list[float]] = {k: [] for k in keys}
                for _ in range(args.repeats):
                    for th in args.threads:
                        torch.set_num_threads(th)
                        for vname, m in variants.items():
                            t, c = time.perf_counter(), time.process_time()
                            for _ in range(calls[vname]):
                                op(m, x)
                            cpu[f"{vname}@{th}@{alloc}"].append((time.process_time() - c) / calls[vname])
                            times[f"{vname}@{th}@{alloc}"].append((time.perf_counter() - t) / calls[vname])
                rows.append({"model": mname, "batch": batch, "op": opname, "all_seconds": times,
                             "all_cpu_seconds": cpu, "max_diff": {f"{k}@{alloc}": v for k, v in diffs.items()},
                             "ref_scale": float(ref.abs().max()),
                             "first_call_seconds": {f"{k}@{alloc}": v for k, v in first_s.items()}})
                print(f"[{alloc}] {mname} b{batch} {opname}: " + "  ".join(
                    f"{k.split('@')[0]}@{k.split('@')[1]} {statistics.median(v) * 1e3:.1f} ms cpu"
                    for k, v in cpu.items()), file=sys.stderr, flush=True)
    return rows


def in_children(args: argparse.Namespace) -> list[dict]:
    """``--rounds`` rounds of one child per allocator (order alternating), samples merged."""
    merged: dict[tuple, dict] = {}
    child = [sys.executable, os.path.abspath(__file__), "--models", *args.models, "--batches",
             *map(str, args.batches), "--threads", *map(str, args.threads), "--ops", *args.ops,
             "--repeats", str(args.repeats), "--min-seconds", str(args.min_seconds), "--json"]
    if args.compile:
        child.append("--compile")
    for r in range(args.rounds):
        for alloc in ALLOCATORS if r % 2 == 0 else ALLOCATORS[::-1]:
            print(f"round {r + 1}/{args.rounds}: allocator {alloc}", file=sys.stderr, flush=True)
            out = subprocess.run([*child, "--allocator", alloc], check=True, stdout=subprocess.PIPE, text=True)
            for row in json.loads(out.stdout)["rows"]:
                key = (row["model"], row["batch"], row["op"])
                into = merged.setdefault(key, {**row, "all_seconds": {}, "all_cpu_seconds": {},
                                                "max_diff": {}, "first_call_seconds": {}})
                for field in ("all_seconds", "all_cpu_seconds"):
                    for k, v in row[field].items():
                        into[field].setdefault(k, []).extend(v)
                for field in ("max_diff", "first_call_seconds"):
                    for k, v in row[field].items():
                        into[field][k] = max(into[field].get(k, 0.0), v)
    return list(merged.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16, 32])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--ops", nargs="+", default=["forward", "forward+grad"], choices=["forward", "forward+grad"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=0.2, help="calls per timing sample: at least this long")
    ap.add_argument("--allocator", default="keep", choices=[*ALLOCATORS, "both"],
                    help="glibc as it comes, keeping freed memory (frad's default), or both in alternating children")
    ap.add_argument("--rounds", type=int, default=3, help="with --allocator both: child processes per allocator")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    if args.allocator == "both":
        rows = in_children(args)
        base_alloc = "default"
    else:
        rows = measure(args, args.allocator)
        base_alloc = args.allocator
    results: list[dict] = []
    n = args.repeats * (args.rounds if args.allocator == "both" else 1)
    lines = [f"median seconds per call over {n} repeats (variants interleaved); ratio = nchw@default / variant",
             "(cpu = time.process_time, the steadier measure on a shared machine)"]
    for row in rows:
        med = {k: statistics.median(v) for k, v in row["all_seconds"].items()}
        med_cpu = {k: statistics.median(v) for k, v in row["all_cpu_seconds"].items()}

        def base(k: str) -> str:
            _, th, _ = k.split("@")
            return f"nchw@{th}@{base_alloc}"

        ratios = {k: med[base(k)] / v for k, v in med.items()}
        ratios_cpu = {k: med_cpu[base(k)] / v for k, v in med_cpu.items()}
        results.append({**row, "seconds": med, "cpu_seconds": med_cpu, "ratio_vs_nchw": ratios,
                        "cpu_ratio_vs_nchw": ratios_cpu})
        lines.append(f"{row['model']} b{row['batch']} {row['op']}")
        for k in med:
            vname, _, alloc = k.split("@")
            diff = row["max_diff"].get(f"{vname}@{alloc}", float("nan"))
            lines.append(f"    {k:<28} {med[k] * 1e3:9.1f} ms ({ratios[k]:.2f}x)   cpu {med_cpu[k] * 1e3:9.1f} ms "
                         f"({ratios_cpu[k]:.2f}x)   max|diff| {diff:.1e}")
        lines.append(f"    (output scale {row['ref_scale']:.1e})")
    report({"settings": vars(args), "rows": results}, "\n".join(lines), args.json)


if __name__ == "__main__":
    main()
