"""Memory: have glibc's malloc reuse the pages freed arrays leave behind (see ``reuse_freed_memory``)."""
from __future__ import annotations

import ctypes
import os
import platform

MMAP_THRESHOLD = 32 << 20  # bytes: glibc's own ceiling for the threshold it adapts by itself
TRIM_THRESHOLD = 1 << 30  # bytes of free memory kept at the top of the heap before it is returned
_MALLOC_TUNED = None


def reuse_freed_memory(env: str | None = None) -> bool:
    """Have glibc's malloc keep the memory freed arrays leave behind for the next arrays. Returns whether it did.

    A forward or a backward pass allocates each layer's outputs afresh (a few MB each). By default
    glibc hands blocks that large back to the operating system as soon as they are freed (a
    separate mapping per block, or a heap it trims), so the next layer, and the next step, take
    new pages: a page fault and a page of zeroing every 4 KiB, on every pass. Serving blocks up to
    32 MB from the heap (``M_MMAP_THRESHOLD``) and keeping up to 1 GiB of freed memory in it
    (``M_TRIM_THRESHOLD``) turns that into reuse: on two cores a training step of the course model
    on one thread took 0.86-0.92 s instead of 1.18-1.35 s (medians of 10, same machine, minutes
    apart). The price: memory a pass has freed stays with the process (for reuse) instead of going
    back to the system.

    ``import engine`` calls this once. $ENGINE_MALLOC=system (or ``env="system"``) leaves malloc
    alone. Elsewhere than glibc (macOS, Windows, musl) it does nothing and returns False.
    """
    global _MALLOC_TUNED
    env = os.environ.get("ENGINE_MALLOC", "") if env is None else env
    if env.strip().lower() == "system":
        return False
    if _MALLOC_TUNED is None:
        _MALLOC_TUNED = False
        try:
            if platform.libc_ver()[0] == "glibc":
                libc = ctypes.CDLL("libc.so.6")
                m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
                mmap_set = libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)
                trim_set = libc.mallopt(m_trim_threshold, TRIM_THRESHOLD)
                _MALLOC_TUNED = bool(mmap_set and trim_set)
        except (OSError, AttributeError):  # no libc.so.6 or no mallopt in it
            pass
    return _MALLOC_TUNED
