"""Attention layouts: the masks against their definitions and hand-drawn cases, and the fast
banded / strided / fixed kernels against a naive full-softmax reference written here."""
import numpy as np
import pytest

from engine.attention import (attention_forward, attention_mask, attention_probs, banded_attention_forward,
                              cached_attention, dense_attention_forward, gathered_attention_forward,
                              masked_attention_forward, sparse_index)


# ---------------------------------------------------------------------- the reference
def allowed(kind, i, j, window, stride, c):
    """May query i see key j? Straight from the definitions (GPT-3 paper section 2.1; Child et al.
    2019 section 4.2), one pair at a time."""
    if j > i:
        return False
    if kind == "dense":
        return True
    if kind == "banded":
        return i - j < window
    if kind == "strided":  # A1: the previous `stride` positions; A2: every stride-th one
        return (i - j) < stride or (i - j) % stride == 0
    if kind == "fixed":  # A1: same block of `stride`; A2: the last c cells of any block
        return (j // stride == i // stride) or (j % stride in range(stride - c, stride))
    raise AssertionError(kind)


def ref_mask(kind, T, window=4, stride=3, c=1):
    return np.array([[allowed(kind, i, j, window, stride, c) for j in range(T)] for i in range(T)])


def naive_attention(q, k, v, mask):
    """softmax(q k^T / sqrt(D) with -inf where mask is False) v, with the full (T, T) matrix."""
    s = np.einsum("bhid,bhjd->bhij", q, k) / np.sqrt(q.shape[-1])
    s = np.where(mask, s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhij,bhjd->bhid", p, v), p


def qkv(T, B=2, H=3, D=5, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return tuple((2 * rng.standard_normal((B, H, T, D))).astype(dtype) for _ in range(3))


# ---------------------------------------------------------------------- masks
def test_masks_hand_drawn():
    E = lambda rows: np.array([[ch == "1" for ch in r] for r in rows])  # noqa: E731
    assert np.array_equal(attention_mask("dense", 4), E(["1000", "1100", "1110", "1111"]))
    assert np.array_equal(attention_mask("banded", 6, window=3),
                          E(["100000", "110000", "111000", "011100", "001110", "000111"]))
    assert np.array_equal(attention_mask("strided", 6, stride=2),
                          E(["100000", "110000", "111000", "011100", "101110", "010111"]))
    assert np.array_equal(attention_mask("fixed", 6, stride=3, c=1),
                          E(["100000", "110000", "111000", "001100", "001110", "001111"]))
    assert np.array_equal(attention_mask("fixed", 7, stride=3, c=2),
                          E(["1000000", "1100000", "1110000", "0111000", "0111100", "0111110", "0110111"]))


@pytest.mark.parametrize("kind", ["dense", "banded", "strided", "fixed"])
@pytest.mark.parametrize("T,window,stride,c", [(1, 4, 3, 1), (9, 4, 3, 1), (16, 16, 4, 4), (23, 7, 5, 2),
                                               (12, 30, 8, 3)])
def test_masks_match_definition(kind, T, window, stride, c):
    m = attention_mask(kind, T, window=window, stride=stride, c=c)
    assert m.dtype == bool and m.shape == (T, T)
    assert np.array_equal(m, ref_mask(kind, T, window, stride, c))
    assert m.diagonal().all() and not np.triu(m, 1).any()  # every token sees itself, never the future


def test_mask_special_cases():
    T = 20
    dense = attention_mask("dense", T)
    assert np.array_equal(attention_mask("banded", T, window=T), dense)  # window >= T is dense
    assert np.array_equal(attention_mask("banded", T, window=1), np.eye(T, dtype=bool))
    assert np.array_equal(attention_mask("strided", T, stride=1), dense)
    assert np.array_equal(attention_mask("fixed", T, stride=T), dense)  # a single block
    assert np.array_equal(attention_mask("fixed", T, stride=4, c=4), dense)  # every cell a summary
    with pytest.raises(ValueError, match="unknown attention layout 'sparse'"):
        attention_mask("sparse", 4)
    with pytest.raises(ValueError, match="T must be at least 1"):
        attention_mask("dense", 0)


@pytest.mark.parametrize("kind", ["strided", "fixed"])
@pytest.mark.parametrize("T,stride,c", [(1, 3, 1), (10, 3, 1), (17, 4, 2), (16, 4, 4), (5, 8, 3)])
def test_sparse_index_lists_exactly_the_mask(kind, T, stride, c):
    idx, valid = sparse_index(kind, T, stride, c)
    M = (T - 1) // stride
    assert idx.shape[1] == (stride + M if kind == "strided" else stride + c * M)
    want = ref_mask(kind, T, stride=stride, c=c)
    for i in range(T):
        cols = idx[i, valid[i]].tolist()
        assert len(cols) == len(set(cols))  # no key counted twice
        assert sorted(cols) == np.flatnonzero(want[i]).tolist()


# ---------------------------------------------------------------------- kernels
CASES = [  # (kind, T, window, stride, c): T < window, T not a multiple of the block, T = 1, ...
    ("dense", 1, 4, 3, 1), ("dense", 13, 4, 3, 1),
    ("banded", 1, 4, 3, 1), ("banded", 3, 8, 3, 1), ("banded", 8, 8, 3, 1), ("banded", 9, 8, 3, 1),
    ("banded", 13, 4, 3, 1), ("banded", 37, 8, 3, 1), ("banded", 64, 16, 3, 1), ("banded", 50, 1, 3, 1),
    ("banded", 31, 5, 3, 1), ("banded", 40, 2, 3, 1),
    ("strided", 1, 4, 3, 1), ("strided", 10, 4, 3, 1), ("strided", 33, 4, 5, 1), ("strided", 4, 4, 8, 1),
    ("strided", 25, 4, 1, 1),
    ("fixed", 1, 4, 3, 1), ("fixed", 10, 4, 3, 1), ("fixed", 33, 4, 5, 2), ("fixed", 4, 4, 8, 3),
    ("fixed", 30, 4, 6, 6),
]


@pytest.mark.parametrize("kind,T,window,stride,c", CASES)
def test_attention_forward_matches_naive(kind, T, window, stride, c):
    q, k, v = qkv(T, seed=T)
    want, p_want = naive_attention(q, k, v, ref_mask(kind, T, window, stride, c))
    out, _ = attention_forward(q, k, v, kind, window=window, stride=stride, c=c)
    assert out.shape == q.shape
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(attention_probs(q, k, kind, window, stride, c), p_want, rtol=1e-12, atol=1e-14)
    # float32 follows float64 closely
    out32, _ = attention_forward(*(a.astype(np.float32) for a in (q, k, v)), kind, window=window, stride=stride, c=c)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("T,window", [(1, 3), (17, 6), (24, 8), (40, 9)])
@pytest.mark.parametrize("block", [1, 2, 3, 5, 8])
def test_banded_any_block_size(T, window, block):
    q, k, v = qkv(T, B=1, H=2, D=4, seed=block)
    want, _ = naive_attention(q, k, v, ref_mask("banded", T, window))
    out, _ = banded_attention_forward(q, k, v, window, block=block)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


def test_banded_cost_is_T_times_window():
    """Count the score elements banded attention computes (its cache's probability tensor)."""
    B, H, D, window = 1, 2, 4, 16
    sizes = {}
    for T in (256, 512, 1024):
        q, k, v = qkv(T, B, H, D)
        out, (kind, cache) = attention_forward(q, k, v, "banded", window=window)
        assert kind == "banded"
        sub, inner = cache
        assert sub == "banded"
        p = inner[3]
        b = inner[7]  # block length
        assert p.shape[-1] == b + window - 1  # keys per query block
        sizes[T] = p.size
        assert p.size <= B * H * (T + b) * (window + b)  # O(T x window) ...
        assert p.size < B * H * T * T / 8  # ... far below the dense T^2
    assert sizes[1024] == 2 * sizes[512] == 4 * sizes[256]  # linear in T at fixed window
    # the key windows are views into one padded array, not T copies
    q, k, v = qkv(1024, B, H, D)
    _, (_, (_, inner)) = attention_forward(q, k, v, "banded", window=window)
    kw = inner[1]
    assert not kw.flags.owndata and kw.base is not None


def test_strided_and_fixed_cost_is_T_times_K():
    B, H, D, T, stride = 1, 1, 4, 400, 20
    for kind, c in (("strided", 1), ("fixed", 4)):
        q, k, v = qkv(T, B, H, D)
        _, (_, inner) = attention_forward(q, k, v, kind, stride=stride, c=c)
        p = inner[3]
        K = stride + (T - 1) // stride if kind == "strided" else stride + c * ((T - 1) // stride)
        assert p.shape == (B, H, T, K) and K < T / 4


@pytest.mark.parametrize("kind,window,stride,c", [("dense", 4, 3, 1), ("banded", 5, 3, 1), ("banded", 1, 3, 1),
                                                  ("strided", 4, 3, 1), ("fixed", 4, 4, 2)])
def test_cached_attention_matches_naive_rows(kind, window, stride, c):
    T = 19
    q, k, v = qkv(T, seed=3)
    want, _ = naive_attention(q, k, v, ref_mask(kind, T, window, stride, c))
    kc = np.zeros((2, 3, 32, 5))  # a preallocated cache longer than what is filled
    vc = np.zeros((2, 3, 32, 5))
    kc[:, :, :T], vc[:, :, :T] = k, v
    kc[:, :, T:] = vc[:, :, T:] = 1e6  # garbage beyond the filled part must not be read
    for t0, Tq in ((0, 1), (5, 1), (18, 1), (7, 4), (0, T)):
        got = cached_attention(q[:, :, t0:t0 + Tq], kc, vc, t0, kind, window, stride, c)
        np.testing.assert_allclose(got, want[:, :, t0:t0 + Tq], rtol=1e-12, atol=1e-12)


def test_gathered_rejects_other_layouts():
    q, k, v = qkv(4)
    with pytest.raises(ValueError, match="strided' and 'fixed'"):
        gathered_attention_forward(q, k, v, "banded", 2)
    with pytest.raises(ValueError, match="unknown attention layout"):
        attention_forward(q, k, v, "local")


# ---------------------------------------------------------------------- element-wise passes on threads
def _numpy_softmax(s):
    z = np.exp(s - s.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_threaded_elementwise_passes_equal_one_thread(threads):
    """softmax, GELU and LayerNorm cut across threads give bit-identical results, also on strided views."""
    from engine import kernels

    rng = np.random.default_rng(threads)
    x = rng.standard_normal((2, 6, 128, 300)).astype(np.float32)  # above MIN_PARALLEL elements
    g, b = rng.standard_normal(300).astype(np.float32), rng.standard_normal(300).astype(np.float32)
    view = lambda a: a[:, :, 3:120, :250]  # noqa: E731 - a non-contiguous view, as the attention tiles are
    try:
        kernels.set_num_threads(1)
        one = (kernels.softmax_(view(x.copy())).copy(), kernels.gelu(x), kernels.layernorm(x, g, b, 1e-5))
        kernels.set_num_threads(threads)
        many = (kernels.softmax_(view(x.copy())).copy(), kernels.gelu(x), kernels.layernorm(x, g, b, 1e-5))
    finally:
        kernels.set_num_threads(None)
    np.testing.assert_array_equal(many[0], one[0])
    for a, c in zip(many[1] + many[2], one[1] + one[2]):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_allclose(one[0], _numpy_softmax(view(x)), rtol=1e-5, atol=1e-7)  # and it is a softmax
    gelu = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(one[1][0], gelu, rtol=1e-5, atol=1e-6)


def test_parallel_splits_the_work_and_checks_its_argument():
    import threading

    from engine import kernels

    seen = []

    def piece(a):
        seen.append((a.shape, threading.current_thread() is threading.main_thread()))
        a += 1

    a = np.zeros((4, 1 << 16), dtype=np.float32)
    try:
        kernels.set_num_threads(4)
        kernels.parallel(piece, a)
    finally:
        kernels.set_num_threads(None)
    assert (a == 1).all()  # every element once
    assert sorted(s for s, _ in seen) == [(1, 1 << 16)] * 4  # four pieces (the axis is 4 long)
    with pytest.raises(ValueError, match="positive integer"):
        kernels.set_num_threads(0)


def test_parallel_hands_pieces_to_whichever_thread_is_free():
    """A worker held up (as by a busy machine's scheduler) holds up its own piece only: the calling
    thread takes all the others."""
    import threading

    from engine import kernels

    main_pieces, started, released = [], threading.Event(), threading.Event()

    def piece(a):
        if threading.current_thread() is threading.main_thread():
            assert started.wait(10), "the worker never took a piece"  # so that it holds one from here on
            main_pieces.append(a.copy())
            if len(main_pieces) == 3:
                released.set()
        else:
            started.set()
            assert released.wait(10), "the calling thread did not take the other pieces"
        a += 1

    a = np.arange(4, dtype=np.float32)[:, None] * np.ones((1, 1 << 16), dtype=np.float32)
    try:
        kernels.set_num_threads(2)  # 2 threads, 4 pieces (PIECES_PER_THREAD = 2)
        kernels.parallel(piece, a)
    finally:
        kernels.set_num_threads(None)
    assert len(main_pieces) == 3
    np.testing.assert_array_equal(a, (np.arange(4)[:, None] + 1) * np.ones((1, 1 << 16)))


def test_products_of_few_rows_run_on_one_blas_thread():
    """A generation step's products (fewer than FEW_ROWS rows) leave the BLAS on one thread while they
    run, and give it back its threads; bigger ones do not touch it."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from engine import kernels, threads

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    inside = []
    rng = np.random.default_rng(9)
    w = rng.standard_normal((64, 48))
    with threadpool_limits(limits=2, user_api="blas"):
        if blas_threads() != [2] * len(blas_threads()) or not blas_threads():
            pytest.skip("no BLAS whose threads threadpoolctl can set")
        threads.one_blas_thread(lambda: inside.append(blas_threads()))
        assert inside == [[1] * len(blas_threads())]
        assert blas_threads() == [2] * len(blas_threads())
        x = rng.standard_normal((threads.FEW_ROWS - 1, 64))
        np.testing.assert_allclose(kernels.linear(x, w), x @ w, rtol=1e-12, atol=1e-12)
        assert blas_threads() == [2] * len(blas_threads())


@pytest.mark.parametrize("shape", [(1, 12, 300, 64), (3, 2, 257, 16), (1, 1, 1100, 64)])
def test_dense_attention_split_by_head_across_threads(shape):
    """Heads on separate threads (BLAS set to one thread meanwhile) give the same attention and cache."""
    from threadpoolctl import threadpool_info

    from engine import kernels

    rng = np.random.default_rng(sum(shape))
    q, k, v = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    blas_before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    try:
        kernels.set_num_threads(1)
        one, (_, _, _, p1, _) = dense_attention_forward(q, k, v)
        kernels.set_num_threads(3)
        many, (_, _, _, p3, _) = dense_attention_forward(q, k, v)
    finally:
        kernels.set_num_threads(None)
    np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p3, p1, rtol=1e-5, atol=1e-7)
    ref, _ = masked_attention_forward(q, k, v, np.where(attention_mask("dense", shape[2]), 0, -np.inf))
    np.testing.assert_allclose(many, ref, rtol=1e-4, atol=1e-5)
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == blas_before


def test_parallel_blas_mode_keeps_axes_whole_and_nests_inline():
    import threading

    from threadpoolctl import threadpool_info

    from engine import kernels

    seen = []

    def piece(a):
        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        seen.append((a.shape, blas, threading.current_thread() is threading.main_thread()))
        kernels.parallel(lambda b: seen.append(("inner", b.shape)), a)  # nested: must not split again
        a += 1

    a = np.zeros((1, 2, 1 << 17, 2), dtype=np.float32)
    try:
        kernels.set_num_threads(2)
        kernels.parallel(piece, a, blas=True, axes=2)  # may cut axis 1, never the long axis 2
        first, seen[:] = list(seen), []
        kernels.parallel(piece, a[:, :1], blas=True, axes=2)  # nothing to cut within the first two axes
    finally:
        kernels.set_num_threads(None)
    assert (a[:, 0] == 2).all() and (a[:, 1] == 1).all()
    outer = [s for s in first if s[0] != "inner"]
    assert sorted(s[0] for s in outer) == [(1, 1, 1 << 17, 2)] * 2
    # which thread takes which piece depends on which is free first (parallel hands them out as threads
    # come free, the calling thread among them), so only the count is fixed
    assert len(outer) == 2
    assert all(s[1] and set(s[1]) == {1} for s in outer)  # BLAS single-threaded inside the pieces
    assert [s for s in first if s[0] == "inner"] == [("inner", (1, 1, 1 << 17, 2))] * 2  # nested: whole
    assert seen[0][0] == (1, 1, 1 << 17, 2) and seen[0][2]  # the second call ran inline on the main thread


@pytest.mark.parametrize("dtype,threads,block", [(np.float64, 1, None), (np.float32, 2, None),
                                                 (np.float32, 3, 48), (np.float16, 2, 100)])
def test_dense_attention_inference_path_equals_training_path(dtype, threads, block):
    """for_backward=False (scores tile by tile in a small buffer, output rows normalised after the
    product with v) gives the training path's output, which is checked against the explicit mask."""
    from engine import kernels

    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((2, 6, 333, 32)).astype(dtype) for _ in range(3))
    try:
        kernels.set_num_threads(threads)
        train, cache = dense_attention_forward(q, k, v, block=block)
        infer, none = dense_attention_forward(q, k, v, block=block, for_backward=False)
    finally:
        kernels.set_num_threads(None)
    assert cache is not None and none is None
    assert infer.dtype == dtype and infer.shape == q.shape
    tol = {np.float64: 1e-12, np.float32: 2e-6, np.float16: 2e-3}[dtype]
    np.testing.assert_allclose(infer.astype(np.float64), train.astype(np.float64), rtol=tol, atol=tol)
    q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
    ref, _ = masked_attention_forward(q64, k64, v64, np.where(attention_mask("dense", 333), 0, -np.inf))
    np.testing.assert_allclose(infer.astype(np.float64), ref, rtol=10 * tol, atol=10 * tol)
    out, (kind, c) = attention_forward(q, k, v, "dense", for_backward=False)
    assert kind == "dense" and c is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_rows_split_across_threads(dtype):
    """kernels.linear: x @ w + b with the rows on several threads, also for a transposed weight view."""
    from engine import kernels

    rng = np.random.default_rng(3)
    x = rng.standard_normal((1000, 160)).astype(dtype)
    w = rng.standard_normal((160, 96)).astype(dtype)
    b = rng.standard_normal(96).astype(dtype)
    try:
        kernels.set_num_threads(3)
        y = kernels.linear(x, w, b)
        yt = kernels.linear(x, np.ascontiguousarray(w.T).T)  # an F-ordered view, as wte.T is
    finally:
        kernels.set_num_threads(None)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, x @ w + b, rtol=tol, atol=tol)
    np.testing.assert_allclose(yt, x @ w, rtol=tol, atol=tol)
    assert y.dtype == dtype and y.shape == (1000, 96)


def test_split_qkv_is_three_head_views_of_the_projection():
    from engine.layers import merge_heads, split_heads, split_qkv

    qkv = np.random.default_rng(3).standard_normal((2, 5, 3 * 12)).astype(np.float32)
    q, k, v = split_qkv(qkv, 3)
    for got, part in zip((q, k, v), np.split(qkv, 3, axis=-1)):
        assert got.shape == (2, 3, 5, 4) and np.shares_memory(got, qkv)
        np.testing.assert_array_equal(got, split_heads(part, 3))
        np.testing.assert_array_equal(merge_heads(got), part)


def test_mean_last_is_numpys_mean_bit_for_bit():
    from engine.kernels import mean_last

    rng = np.random.default_rng(4)
    for dt in (np.float64, np.float32, np.float16):
        for shape in [(1, 1, 768), (3, 17, 192), (2, 5, 1000)]:
            x = (rng.standard_normal(shape) * rng.uniform(0.01, 100)).astype(dt)
            got, want = mean_last(x), x.mean(axis=-1, keepdims=True)
            assert got.dtype == want.dtype and np.array_equal(got, want), (dt, shape)
