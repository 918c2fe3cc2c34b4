"""Torch CPU thread counts, set for a block and restored after it.

Small models (the trajectory detectors: an LSTM or MLP over a few dozen layer distances)
gain nothing from intra-op parallelism, and on a CPU shared with other jobs their many tiny
operations make torch's worker threads wait on each other: measured in
``benchmarks/RESULTS.md`` (detector training under CPU contention), an epoch took many times
longer with two threads than with one.  :func:`torch_threads` scopes the setting so the
rest of a run keeps its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["torch_threads", "SMALL_MODEL_THREADS"]

#: Threads for small models on a CPU (the detectors): one never collapses under contention.
SMALL_MODEL_THREADS = 1


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run the block with ``n`` torch intra-op threads (``None``: leave as is); restore after."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(int(n))
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
