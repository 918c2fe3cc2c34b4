"""Shared bits of the benchmark scripts: machine description and JSON/text output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch


def machine() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
    }


def report(payload: dict[str, Any], text: str, as_json: bool) -> None:
    payload = {"machine": machine(), **payload}
    if as_json:
        json.dump(payload, sys.stdout, default=lambda o: o.item() if hasattr(o, "item") else str(o))
        sys.stdout.write("\n")
    else:
        print(text)


def interleaved_medians(
    jobs: dict[str, Callable[[], object]], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """Median seconds per call of each job on ``clock``, the jobs interleaved within each repeat
    (so machine load hits them alike)."""
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):
        for k, fn in jobs.items():
            t = clock()
            fn()
            times[k].append(clock() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call of ``fn``."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
