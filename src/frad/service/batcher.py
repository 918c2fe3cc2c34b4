"""A micro-batcher: requests that reach the network within a few milliseconds of each other
run as one batch.

One worker thread owns the network.  It takes the first queued request and, while other
requests are still being decoded and aligned (``expecting()`` counts them) and the batch is
not full, waits up to ``window_ms`` for them; a lone request therefore runs at once.
``max_batch=1`` turns batching off (the baseline of the benchmark).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["MicroBatcher"]

log = logging.getLogger("frad.serve")


class MicroBatcher:
    """``submit(item) -> Future``; ``fn(list of items) -> list of results`` runs in the worker."""

    def __init__(
        self,
        fn: Callable[[list[Any]], list[Any]],
        *,
        max_batch: int = 32,
        window_ms: float = 5.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.fn = fn
        self.max_batch = int(max_batch)
        self.window = max(0.0, float(window_ms)) / 1000.0
        self.on_batch = on_batch
        self._q: queue.Queue[tuple[Any, cf.Future[Any]] | None] = queue.Queue()
        self._upstream = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="frad-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Mark a request that is being prepared and will submit soon (the worker waits for it)."""
        with self._lock:
            self._upstream += 1
        try:
            yield
        finally:
            with self._lock:
                self._upstream -= 1

    def submit(self, item: Any) -> cf.Future[Any]:
        fut: cf.Future[Any] = cf.Future()
        self._q.put((item, fut))
        return fut

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.window
            while len(batch) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    left = deadline - time.monotonic()
                    with self._lock:
                        waiting = self._upstream > 0
                    if not waiting or left <= 0:
                        break
                    try:
                        nxt = self._q.get(timeout=min(left, 0.001))
                    except queue.Empty:
                        continue
                if nxt is None:
                    self._q.put(None)
                    break
                batch.append(nxt)
            items = [b[0] for b in batch]
            futs = [b[1] for b in batch]
            try:
                results = self.fn(items)
                for f, r in zip(futs, results):
                    f.set_result(r)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
                log.exception("batch of %d failed", len(batch))
                for f in futs:
                    if not f.done():
                        f.set_exception(exc)
            if self.on_batch is not None:
                self.on_batch(len(batch))
