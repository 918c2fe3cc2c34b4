"""Keep freed memory in the process instead of handing it back to the OS (glibc only).

PyTorch's CPU tensors come from ``malloc``.  glibc serves large blocks (a 32 x 32 x 72 x 72
activation of dlib's network is 21 MB) with fresh ``mmap`` pages and returns them on
``free``, so every forward and backward pass first-touches tens of megabytes again: about
20,000 page faults per forward + input-gradient pass at batch 32, 10-15% of its CPU time on
this project's (virtualised) CI machine (``benchmarks/bench_floor.py --allocator``).
:func:`keep_freed_memory` tells glibc to serve large blocks from its heap and not to trim it,
so the pages stay mapped and are reused: the process keeps its peak memory, not more.

Face models call :func:`keep_freed_memory_once` on their first CPU pass; set the
environment variable ``FRAD_KEEP_FREED_MEMORY=0`` (or call ``keep_freed_memory(False)``
first) to leave the allocator alone.  On other C libraries (macOS, Windows, musl) it does
nothing and says so by returning ``False``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

__all__ = ["ENV_VAR", "keep_freed_memory", "keep_freed_memory_once"]

ENV_VAR = "FRAD_KEEP_FREED_MEMORY"

# glibc's mallopt parameters (malloc.h) and its documented defaults
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_DEFAULT_TRIM, _DEFAULT_MMAP_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 128 * 1024, 65536
_KEEP_TRIM = 2**31 - 1  # mallopt takes a C int: keep up to 2 GiB free at the heap's top

_lock = threading.Lock()
_decided = False


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
            return None  # mallopt alone exists in musl, as a no-op
    except OSError:
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def keep_freed_memory(enable: bool = True) -> bool:
    """Keep (``True``) or return (``False``: glibc's initial thresholds, then fixed) freed
    memory; process-wide.

    Returns whether glibc accepted the setting (``False`` on other C libraries).  Results of
    computations never change; only where their memory comes from.
    """
    global _decided
    with _lock:
        _decided = True
        libc = _libc()
        if libc is None:
            return False
        if enable:
            ok = libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_TRIM)
        else:
            ok = (libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                  and libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP_THRESHOLD)
                  and libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM))
            if hasattr(libc, "malloc_trim"):
                libc.malloc_trim(0)
        return bool(ok)


def keep_freed_memory_once() -> None:
    """Turn :func:`keep_freed_memory` on the first time this runs, unless the process already
    chose (an earlier call) or ``FRAD_KEEP_FREED_MEMORY`` is ``0``/``false``/``no``/``off``."""
    global _decided
    if _decided:
        return
    if os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
        _decided = True
        return
    keep_freed_memory(True)
