"""Hand freed heap memory back to the operating system (glibc only; elsewhere a no-op).

A training loop frees and allocates tensors of many sizes every step; glibc keeps the freed
pages inside its heaps, fragmented, so the process's memory climbs for the whole run although
little of it is in use. `malloc_trim(0)` returns every free page, not only the heap's top
(figures: docs/benchmarks.md, "Memory"). A call takes about a millisecond.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


def release_free_heap() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
