"""Threads for the NumPy passes: how many, a shared pool, and the BLAS kept out of their way.

``parallel`` cuts an element-wise pass (or many small matrix products) along a leading axis and
runs the pieces on a pool of threads; NumPy releases the GIL inside its loops, so they run on
separate cores. Every element is computed by the same code whatever the cut, so results do not
depend on the number of threads. A multi-threaded BLAS left to itself keeps its worker threads
spinning after every call, and they would take a core from whatever runs next; ``parallel`` sets
it to one thread while its pieces run (``threadpoolctl``).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager

import numpy as np

from threadpoolctl import ThreadpoolController

_NUM_THREADS: int | None = None
_DEFAULT_THREADS: int | None = None
_POOL = None
_POOL_LOCK = threading.Lock()
MIN_PARALLEL = 1 << 17  # elements: below this, starting threads costs more than it saves
# Pieces per thread in ``parallel``, taken as threads come free: on a busy machine a thread the
# scheduler leaves waiting holds up one small piece, not a whole 1/n share (the others take the
# rest). More pieces cost more: 256-row pieces of a (1024, 768) @ (768, 3072) product took 3% longer
# than one product on one thread, 128-row pieces 7% (a BLAS packs the weights again for each call).
PIECES_PER_THREAD = 2
FEW_ROWS = 16  # a matrix product with fewer rows than this is a generation step's
# Generation steps' products on one BLAS thread (``one_blas_thread``): a large gain on a machine whose
# cores other work keeps busy, a loss on a quiet one (GPT-2 124M cached decode on two quiet cores:
# 41-46 tokens/s against 53-57 with the BLAS's two threads), so it is asked for, not the default.
DECODE_ONE_BLAS_THREAD = os.environ.get("ENGINE_DECODE_ONE_BLAS_THREAD", "") == "1"


def get_num_threads() -> int:
    """Threads for NumPy element-wise passes: ``set_num_threads``, else $ENGINE_NUM_THREADS, else the
    BLAS variables ($OPENBLAS_NUM_THREADS, $OMP_NUM_THREADS, $MKL_NUM_THREADS), else the usable cores
    (the variables are read on first use)."""
    global _DEFAULT_THREADS
    if _NUM_THREADS is not None:
        return _NUM_THREADS
    if _DEFAULT_THREADS is None:  # read once: this runs for every LayerNorm, GELU and softmax
        _DEFAULT_THREADS = _threads_from_environment()
    return _DEFAULT_THREADS


def _threads_from_environment() -> int:
    for var in ("ENGINE_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        v = os.environ.get(var, "").strip()
        if v.isdigit() and int(v) > 0:
            return int(v)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads for element-wise passes (None: back to the default of ``get_num_threads``)."""
    global _NUM_THREADS
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"the number of threads must be a positive integer, got {n!r}")
    _NUM_THREADS = n


def _pool(n: int):
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < n:
            _POOL = ThreadPoolExecutor(n, thread_name_prefix="engine-kernels")
        return _POOL


_BUSY = False  # the main thread is inside ``parallel``: a nested call runs inline
_BLAS = None  # threadpoolctl controllers of the BLAS libraries loaded (found on first use)


def _blas_controllers() -> list:
    global _BLAS
    if _BLAS is None:
        try:
            _BLAS = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        except Exception:  # no threadpoolctl, or a BLAS it cannot drive: pieces stay serial
            _BLAS = []
    return _BLAS


def one_blas_thread(fn, *args) -> None:
    """``fn(*args)`` with the BLAS on one thread, then its thread count put back.

    For the products of a generation step (one row times a weight matrix): each reads a few MB of
    weights once and is over in a fraction of a millisecond, so a second BLAS thread has little to
    share, and on a busy machine it is worse than useless: the caller waits until the scheduler
    gives that thread a core. Measured on two shared cores (load 5, GPT-2 124M, 48 cached tokens,
    medians of 7 interleaved runs): 30.7 tokens/s with these products on one BLAS thread, 5.9 on
    two. A single core here already streams about the memory bandwidth that two do (24 against
    24-28 GB/s).
    """
    with blas_on_one_thread():
        fn(*args)


_SERIAL = False  # inside ``blas_on_one_thread``: the BLAS is already on one thread


@contextmanager
def blas_on_one_thread():
    """Run the block with the BLAS on one thread, then put its thread count back (on the main thread,
    outside ``parallel``; elsewhere it changes nothing).

    A training step runs in one (``GPT.loss_and_grads``, ``AdamW.step``): every product in it is cut
    across the cores by ``parallel`` or ``kernels.linear`` / ``kernels.matmul``, so the BLAS's own
    workers never start, and never spin on a core after a call while the element-wise pieces
    that come next need it (with them spinning, a second thread gained those pieces nothing).
    """
    global _SERIAL
    main = threading.current_thread() is threading.main_thread()  # other threads leave the BLAS alone
    saved = [(c, c.num_threads) for c in _blas_controllers()] if main and not _BUSY and not _SERIAL else []
    if saved:
        _SERIAL = True
    try:
        for c, k in saved:
            if k != 1:
                c.set_num_threads(1)
        yield
    finally:
        for c, k in saved:
            if k != 1:
                c.set_num_threads(k)
        if saved:
            _SERIAL = False


def parallel(fn, *arrays, blas: bool = False, axes: int | None = None) -> None:
    """Run ``fn(*pieces)`` on pieces of ``arrays`` cut along one leading axis (never the last), in threads.

    The arrays share their leading shape; ``fn`` writes its results into them (or into views of
    arrays it closes over, cut the same way). Every element is computed by the same code whatever
    the cut, so the result is identical to ``fn(*arrays)``. The pieces (``PIECES_PER_THREAD`` per
    thread) are handed out as threads come free, the calling thread among them. Runs inline when small, single-threaded,
    not on NumPy, nested in another ``parallel``, or called from a thread other than the main one
    (the trainer's workers already fill the cores).

    ``axes``: cut only along one of the first ``axes`` axes (2: batch or head, when the other axes
    must stay whole). ``blas=True``: ``fn`` makes many small matrix products (attention, head by
    head), which a multi-threaded BLAS runs poorly (it splits each small matrix and synchronises its
    threads every call); the BLAS is then set to one thread while the pieces run, so the cores go
    to the pieces instead.
    """
    global _BUSY
    a = arrays[0]
    if a.size < MIN_PARALLEL or not isinstance(a, np.ndarray):  # generation: one token at a time
        fn(*arrays)
        return
    n = get_num_threads()
    axis = next((i for i, d in enumerate(a.shape[:-1][:axes]) if d >= n), None)
    if (n <= 1 or axis is None or _BUSY or (blas and not _blas_controllers())
            or threading.current_thread() is not threading.main_thread()):
        fn(*arrays)
        return
    k = min(a.shape[axis], PIECES_PER_THREAD * n)
    edges = np.linspace(0, a.shape[axis], k + 1).astype(int)
    pieces = [tuple(x[(slice(None),) * axis + (slice(lo, hi),)] for x in arrays)
              for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
    todo, lock = list(reversed(pieces)), threading.Lock()

    def take_pieces():  # each thread takes the next piece when it is done with one
        while True:
            with lock:
                if not todo:
                    return
                piece = todo.pop()
            fn(*piece)

    saved = [(c, c.num_threads) for c in _blas_controllers()] if blas and not _SERIAL else []
    _BUSY = True
    try:
        for c, _ in saved:
            c.set_num_threads(1)
        futures = [_pool(n).submit(take_pieces) for _ in range(min(n, len(pieces)) - 1)]
        try:
            take_pieces()
        finally:
            wait(futures)  # every piece has stopped before the BLAS gets its threads back
        for f in futures:
            f.result()  # re-raises a piece's exception
    finally:
        for c, k in saved:
            c.set_num_threads(k)
        _BUSY = False
