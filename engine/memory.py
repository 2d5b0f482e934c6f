"""Memory: have glibc's malloc reuse the pages freed arrays leave behind (``reuse_freed_memory``), and
keep the arrays too large for that for reuse by the engine itself (``empty``, ``zeros``)."""
from __future__ import annotations

import ctypes
import math
import os
import platform
import sys
import threading

import numpy as np

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
    if _system_malloc(env):
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


def _system_malloc(env: str | None = None) -> bool:
    env = os.environ.get("ENGINE_MALLOC", "") if env is None else env
    return env.strip().lower() == "system"


# ---------------------------------------------------------------------- arrays above the mmap threshold
# glibc serves a block larger than MMAP_THRESHOLD (the largest it allows) from a mapping of its own and
# unmaps it when it is freed, so each such array costs fresh pages: the prefill logits of GPT-2 124M
# (1 x 1,024 x 50,257 float32, 206 MB), a generation's KV cache (75 MB), a training batch's logits.
# On a virtual machine whose balloon driver reports free pages to the host, fresh pages are far dearer
# than zeroing: the first 206 MB array after a 3 s forward took 350-600 ms of system time here, a second
# one right after 20 ms. The engine therefore keeps its own large arrays after the caller lets go of
# them, as onnxruntime's arena does, and hands them out again for the next array of the same size.
POOL_BYTES = 1 << 30  # at most this much memory is kept in arrays nobody uses (TRIM_THRESHOLD's budget)
_POOL: list = []  # 1-D uint8 buffers, least recently handed out first
_POOL_LOCK = threading.Lock()
_FREE_REFS = None  # sys.getrefcount(_POOL[i]) of a buffer that only the pool holds (measured on first use)


def _free(i: int) -> bool:
    # Every array made from a pooled buffer (the one handed out, views of it) keeps a reference to it in
    # ``.base``; when only the pool's list holds it, nobody can read or write its memory any more.
    return sys.getrefcount(_POOL[i]) <= _FREE_REFS


def empty(shape, dtype=np.float32):
    """``np.empty(shape, dtype)``, except that an array larger than ``MMAP_THRESHOLD`` is a freed one of the
    same size when there is one (its old contents are still in it, as in any ``np.empty``).

    The pool never hands out an array something still refers to: the caller, a view, a cache. It keeps
    at most ``POOL_BYTES`` of unused arrays, dropping the least recently used first. With
    $ENGINE_MALLOC=system this is plain ``np.empty``.
    """
    global _FREE_REFS
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes <= MMAP_THRESHOLD or _system_malloc():
        return np.empty(shape, dtype)
    with _POOL_LOCK:
        if _FREE_REFS is None:
            probe = [np.empty(0, np.uint8)]
            _FREE_REFS = sys.getrefcount(probe[0])  # the same expression as in _free: list + argument
        hit = next((i for i in range(len(_POOL)) if _POOL[i].nbytes == nbytes and _free(i)), None)
        if hit is None:
            free = [i for i in range(len(_POOL)) if _free(i)]  # least recently used first
            kept = sum(_POOL[i].nbytes for i in free)
            drop = set()
            for i in free:
                if kept + nbytes <= POOL_BYTES:
                    break
                drop.add(i)
                kept -= _POOL[i].nbytes
            _POOL[:] = [b for i, b in enumerate(_POOL) if i not in drop]
            _POOL.append(np.empty(nbytes, np.uint8))
        else:
            _POOL.append(_POOL.pop(hit))
        return _POOL[-1].view(dtype).reshape(shape)


def zeros(shape, dtype=np.float32):
    """``np.zeros``, through ``empty``'s pool for large arrays."""
    a = empty(shape, dtype)
    a.fill(0)
    return a


def pooled_bytes() -> tuple[int, int]:
    """(bytes in use, bytes free for reuse) of the large arrays ``empty`` keeps."""
    with _POOL_LOCK:
        if _FREE_REFS is None:
            return 0, 0
        free = sum(_POOL[i].nbytes for i in range(len(_POOL)) if _free(i))
        return sum(b.nbytes for b in _POOL) - free, free
