"""Generation: the KV cache changes nothing but speed, sampling draws from the distribution it
claims to, and stop / overflow / streaming behave as documented."""
import numpy as np
import pytest

import engine.generate as gen
from engine import GPT, GPTConfig
from engine.generate import KVCache, forward_cached, next_token_probs, sample
from engine.model import gpt_forward, tree_unflatten

LAYOUTS = ["dense", "banded", "strided", "fixed", "alternating", ("fixed", "banded", "strided", "dense")]


def tiny_model(attention="dense", n_ctx=24, vocab=50, seed=0, dtype="float64"):
    cfg = GPTConfig(n_layer=4, n_head=2, d_model=16, n_ctx=n_ctx, vocab_size=vocab, attention=attention,
                    window=3, stride=3, fixed_c=1)
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in cfg.param_shapes().items():
        if name.endswith(".g"):
            flat[name] = 1 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".b"):
            flat[name] = 0.1 * rng.standard_normal(shape)
        else:  # far from uniform next-token distributions; strong positions so greedy text does not loop
            flat[name] = rng.standard_normal(shape) * {"wte": 0.3, "wpe": 2.0}.get(name, 1 / np.sqrt(shape[0]))
    return GPT(cfg, dtype=dtype, backend="numpy", params=tree_unflatten(flat, cfg.n_layer))


def greedy_reference(model, prompt, n):
    """No cache, no engine generation code: argmax of the full forward pass, window sliding at n_ctx."""
    seq = list(prompt)
    for _ in range(n):
        ctx = np.array(seq[-model.cfg.n_ctx:])[None]
        seq.append(int(gpt_forward(model.params, ctx, model.cfg)[0, -1].argmax()))
    return np.array(seq)


# ---------------------------------------------------------------------- the KV cache
@pytest.mark.parametrize("attention", LAYOUTS)
def test_cached_logits_equal_full_forward(attention):
    model = tiny_model(attention)
    ids = np.random.default_rng(1).integers(0, 50, (2, 24))
    full = gpt_forward(model.params, ids, model.cfg)
    cache = KVCache(model, batch=2)
    got = [forward_cached(model, ids[:, :5], cache)]  # prefill 5, then one token at a time
    for t in range(5, 24):
        got.append(forward_cached(model, ids[:, t:t + 1], cache))
    np.testing.assert_allclose(np.stack(got, 1), full[:, 4:], rtol=1e-11, atol=1e-11)
    assert cache.length == 24


@pytest.mark.parametrize("attention", LAYOUTS)
def test_generation_with_and_without_cache(attention):
    model = tiny_model(attention)
    prompt = np.random.default_rng(2).integers(0, 50, 4)
    greedy = model.generate(prompt, 18, temperature=0)
    np.testing.assert_array_equal(greedy, model.generate(prompt, 18, temperature=0, use_cache=False))
    np.testing.assert_array_equal(greedy, greedy_reference(model, prompt, 18))
    assert len(set(greedy[4:].tolist())) > 5
    for kw in (dict(temperature=1.0), dict(temperature=0.7, top_k=5), dict(temperature=1.3, top_p=0.8)):
        a = model.generate(prompt, 18, seed=11, **kw)
        np.testing.assert_array_equal(a, model.generate(prompt, 18, seed=11, use_cache=False, **kw))
        np.testing.assert_array_equal(a, model.generate(prompt, 18, seed=11, **kw))  # reproducible
    batch = np.random.default_rng(3).integers(0, 50, (3, 4))
    a = model.generate(batch, 10, seed=5)
    np.testing.assert_array_equal(a, model.generate(batch, 10, seed=5, use_cache=False))
    g = model.generate(batch, 10, temperature=0)
    for r in range(3):  # rows of a batch are independent
        np.testing.assert_array_equal(g[r], model.generate(batch[r], 10, temperature=0))


def test_different_seeds_and_layouts_differ():
    model = tiny_model()
    outs = {tuple(model.generate([1, 2, 3], 15, seed=s)) for s in range(4)}
    assert len(outs) > 1
    greedy = {tuple(tiny_model(a).generate([1, 2, 3], 15, temperature=0)) for a in LAYOUTS}
    assert len(greedy) > 3  # the layout matters, so the tests above exercise each one


# ---------------------------------------------------------------------- the one-token-step layout
@pytest.fixture
def two_threads():
    """The layout of the steps is the BLAS's on two threads (on one, no copy: ``gemv.tune_one_row``)."""
    from engine import kernels

    kernels.set_num_threads(2)
    yield
    kernels.set_num_threads(None)


def test_gemv_layout_keeps_shape_and_values(two_threads):
    from engine import kernels

    rng = np.random.default_rng(4)
    tall = rng.standard_normal((48, 16)).astype(np.float32)
    kernels.set_num_threads(1)
    assert kernels.gemv_layout(tall) is tall  # one thread: the measured kernel reads it as it is
    kernels.set_num_threads(2)
    t = kernels.gemv_layout(tall)
    assert t.shape == tall.shape and t.dtype == tall.dtype and np.array_equal(t, tall)
    assert t.flags.f_contiguous and not t.flags.c_contiguous and not np.shares_memory(t, tall)
    x = rng.standard_normal((1, 48)).astype(np.float32)
    np.testing.assert_allclose(x @ t, x @ tall, rtol=1e-5, atol=1e-6)
    for same in (rng.standard_normal((16, 48)), rng.standard_normal((16, 16)), rng.standard_normal(16),
                 tall[::2], tall.T):  # wide, square, 1-D, not contiguous, already transposed
        assert kernels.gemv_layout(same) is same


def test_decode_params_change_layout_only(two_threads):
    from engine.params import tree_flatten

    model = tiny_model()
    before, after = tree_flatten(model.params), tree_flatten(gen.decode_params(model.params))
    assert before.keys() == after.keys()
    moved = set()
    for name, a in before.items():
        assert np.array_equal(after[name], a) and after[name].shape == a.shape and after[name].dtype == a.dtype
        if after[name] is not a:
            moved.add(name)
    # the only matrices with more rows than columns in GPT-2: each MLP's projection (d_ff, C)
    assert moved == {f"h.{i}.mlp.c_proj.w" for i in range(model.cfg.n_layer)}
    assert all(after[n].flags.f_contiguous for n in moved)
    assert model.params["h"][0]["mlp"]["c_proj"]["w"].flags.c_contiguous  # the model's own are untouched


@pytest.mark.parametrize("attention", ["dense", "alternating"])
def test_generation_with_the_step_layout(attention, monkeypatch, two_threads):
    """Long generations run their steps on ``decode_params``: the tokens are those of the plain loop."""
    model = tiny_model(attention, n_ctx=64)
    prompt = np.random.default_rng(5).integers(0, 50, 6)
    n = gen.DECODE_LAYOUT_MIN_STEPS + 4
    real, seen = gen.forward_cached, []

    def spy(m, ids, cache, params=None):
        seen.append(params)
        return real(m, ids, cache, params)

    monkeypatch.setattr(gen, "forward_cached", spy)
    greedy = model.generate(prompt, n, temperature=0)
    assert seen[0] is None and len(seen) == n  # the prompt with the model's own weights, then the steps
    assert all(p is seen[1] for p in seen[1:]) and seen[1]["h"][0]["mlp"]["c_proj"]["w"].flags.f_contiguous
    np.testing.assert_array_equal(greedy, greedy_reference(model, prompt, n))
    a = model.generate(prompt, n, seed=7, temperature=0.9, top_k=8)
    np.testing.assert_array_equal(a, model.generate(prompt, n, seed=7, temperature=0.9, top_k=8, use_cache=False))
    seen.clear()
    model.generate(prompt, gen.DECODE_LAYOUT_MIN_STEPS - 1, temperature=0)
    assert all(p is None for p in seen)  # short generations do not pay for the copies


@pytest.mark.parametrize("threads, choice", [(1, True), (1, False), (2, True)])
def test_one_thread_steps_take_the_measured_kernel_and_keep_the_tokens(threads, choice, monkeypatch):
    """A long generation on one thread measures the step's products (``gemv.tune_one_row``, given
    every matrix in the order a step uses them) and runs each on the kernel measured faster; here the
    choice is fixed: all ``gemv.vecmat`` or all the BLAS. On two threads nothing is measured and
    the BLAS runs. Either way, greedy and sampled tokens are those of the uncached loop (float32)."""
    from engine import gemv, kernels

    model = tiny_model(n_ctx=64, dtype="float32")
    cfg = model.cfg
    C, V, F = cfg.d_model, cfg.vocab_size, cfg.d_ff
    order = [(C, 3 * C), (C, C), (C, F), (F, C)] * cfg.n_layer + [(C, V)]
    prompt = np.random.default_rng(8).integers(0, 50, 5)
    n = gen.DECODE_LAYOUT_MIN_STEPS + 2
    monkeypatch.setattr(gemv, "ONE_ROW_VECMAT", {})
    real_tune, tuned = gemv.tune_one_row, []

    def tune(ws, *a, **kw):  # the real one, then the choice under test on record
        tuned.append([w.shape for w in ws])
        got = real_tune(ws, *a, **kw)
        gemv.ONE_ROW_VECMAT.update(dict.fromkeys(got, choice))
        return got

    monkeypatch.setattr(gemv, "tune_one_row", tune)
    real, shapes = gemv.vecmat, []
    monkeypatch.setattr(gemv, "vecmat", lambda *a, **kw: (shapes.append(a[1].shape), real(*a, **kw))[1])
    try:
        kernels.set_num_threads(threads)
        greedy = model.generate(prompt, n, temperature=0)
        sampled = model.generate(prompt, n, seed=3, temperature=0.9, top_k=8)
        want = model.generate(prompt, n, temperature=0, use_cache=False)
        want_sampled = model.generate(prompt, n, seed=3, temperature=0.9, top_k=8, use_cache=False)
    finally:
        kernels.set_num_threads(None)
    assert tuned == [order, order]  # each cached generation hands its step's matrices over
    if threads == 1:
        assert len(gemv.ONE_ROW_VECMAT) == 5 and set(gemv.ONE_ROW_VECMAT.values()) == {choice}
    else:
        assert gemv.ONE_ROW_VECMAT == {}
    # vecmat: the first run's tuning (3 rounds over the step's matrices), then, if chosen, each new
    # token's logits (the prompt's last position too) and every product of the n - 1 one-token
    # steps (4 per layer), in both cached runs; the uncached runs have no one-row products
    tuning = 3 * len(order) if threads == 1 else 0
    steps = 2 * (n + (n - 1) * 4 * cfg.n_layer) if threads == 1 and choice else 0
    assert len(shapes) == tuning + steps and shapes[tuning:].count((C, V)) == (2 * n if steps else 0)
    np.testing.assert_array_equal(greedy, want)
    np.testing.assert_array_equal(sampled, want_sampled)


def test_kv_cache_is_preallocated(monkeypatch):
    model = tiny_model("alternating")
    seen = []
    real = gen.forward_cached

    def spy(m, ids, cache, params=None):
        seen.append((id(cache), id(cache.k), id(cache.v), cache.k.ctypes.data, cache.v.ctypes.data,
                     cache.k.shape, cache.length, ids.shape[1]))
        return real(m, ids, cache, params)

    monkeypatch.setattr(gen, "forward_cached", spy)
    model.generate([[1, 2, 3, 4, 5]] * 2, 8, seed=0)
    assert len(seen) == 8
    assert len({s[:6] for s in seen}) == 1  # the same cache arrays, same buffers, every step
    cfg = model.cfg
    assert seen[0][5] == (cfg.n_layer, 2, cfg.n_head, cfg.n_ctx, cfg.d_head)
    assert [s[7] for s in seen] == [5] + [1] * 7  # prefill once, then one token per step
    assert [s[6] for s in seen] == [0] + list(range(5, 12))
    assert KVCache(model, 2).nbytes == 2 * 8 * np.prod(seen[0][5]) == model.cfg.memory_bytes(
        "float64", batch=2)["kv_cache"]


# ---------------------------------------------------------------------- streaming, stop, overflow
def test_stream_yields_the_same_tokens():
    model = tiny_model("alternating")
    prompt = [5, 6, 7]
    whole = model.generate(prompt, 12, seed=3, top_k=10)
    it = model.generate_stream(prompt, 12, seed=3, top_k=10)
    first = next(it)
    assert isinstance(first, int)
    assert [first, *it] == whole[3:].tolist()
    rows = list(model.generate_stream([[1, 2], [3, 4]], 5, temperature=0))
    assert len(rows) == 5 and rows[0].shape == (2,)
    np.testing.assert_array_equal(np.stack(rows, 1), model.generate([[1, 2], [3, 4]], 5, temperature=0)[:, 2:])


def test_stop_token():
    model = tiny_model()
    prompt = [1, 2, 3]
    full = model.generate(prompt, 15, temperature=0)
    new = full[3:].tolist()
    k = next(i for i in range(1, len(new)) if new[i] not in new[:i])  # a token first seen at step k
    stopped = model.generate(prompt, 15, temperature=0, stop=new[k])
    assert stopped.tolist() == prompt + new[:k]  # the stop token is not included
    assert list(model.generate_stream(prompt, 15, temperature=0, stop=[new[k], 999])) == new[:k]
    assert model.generate(prompt, 15, temperature=0, stop=[49 if 49 not in new else 48]).tolist() == full.tolist()
    # a batch: rows that stopped are padded with the stop token, the rest carry on
    batch = np.array([prompt, [7, 8, 9]])
    free = model.generate(batch, 15, temperature=0)
    st = model.generate(batch, 15, temperature=0, stop=new[k])
    assert st.shape[1] <= free.shape[1]
    row0 = st[0, 3:].tolist()
    assert row0[:k + 1] == new[:k + 1] and set(row0[k:]) == {new[k]}
    with pytest.raises(TypeError, match="stop must be a token id"):
        model.generate(prompt, 3, stop="\n")


def test_overflow_slide_and_error():
    model = tiny_model("alternating", n_ctx=12)
    prompt = np.random.default_rng(4).integers(0, 50, 8)
    with pytest.raises(ValueError, match=r"exceeds the context n_ctx = 12.*overflow='slide'"):
        model.generate(prompt, 5)
    slid = model.generate(prompt, 20, temperature=0, overflow="slide")
    assert slid.shape == (28,)
    np.testing.assert_array_equal(slid, model.generate(prompt, 20, temperature=0, overflow="slide", use_cache=False))
    np.testing.assert_array_equal(slid, greedy_reference(model, prompt, 20))
    s1 = model.generate(prompt, 20, seed=9, overflow="slide")
    np.testing.assert_array_equal(s1, model.generate(prompt, 20, seed=9, overflow="slide", use_cache=False))
    # a prompt longer than n_ctx: refused by default, kept to its last n_ctx tokens when sliding
    long = np.random.default_rng(5).integers(0, 50, 30)
    with pytest.raises(ValueError, match="30 positions but the model's context n_ctx is 12"):
        model.generate(long, 2)
    np.testing.assert_array_equal(model.generate(long, 6, temperature=0, overflow="slide"),
                                  greedy_reference(model, long, 6))
    with pytest.raises(ValueError, match="overflow must be 'error' or 'slide'"):
        model.generate(prompt, 1, overflow="wrap")


def test_zero_new_tokens():
    model = tiny_model()
    assert model.generate([3, 4], 0).tolist() == [3, 4]
    assert model.generate([[3, 4]], 0).shape == (1, 2)


# ---------------------------------------------------------------------- the sampling distribution
def ref_probs(logits, temperature=1.0, top_k=None, top_p=None):
    """Temperature, then top-k, then top-p (nucleus, Holtzman et al. 2019), one token at a time."""
    logits = np.asarray(logits, np.float64)
    if temperature == 0:
        p = np.zeros_like(logits)
        p[np.argmax(logits)] = 1
        return p
    e = [np.exp((x - logits.max()) / temperature) for x in logits]
    p = np.array(e) / sum(e)
    order = sorted(range(len(p)), key=lambda i: -p[i])
    if top_k is not None:
        for i in order[top_k:]:
            p[i] = 0.0
        p /= p.sum()
    if top_p is not None:
        acc = 0.0
        for i in order:
            if acc >= top_p:
                p[i] = 0.0
            acc += p[i] if acc < top_p else 0.0
        p /= p.sum()
    return p


SETTINGS = [dict(), dict(temperature=0.5), dict(temperature=2.0), dict(top_k=1), dict(top_k=4),
            dict(top_p=0.5), dict(top_p=0.9), dict(top_p=1.0), dict(temperature=0.8, top_k=6, top_p=0.7),
            dict(temperature=0)]


@pytest.mark.parametrize("kw", SETTINGS)
def test_next_token_probs_against_references(kw):
    rng = np.random.default_rng(6)
    for _ in range(20):
        logits = 3 * rng.standard_normal(12)
        got = next_token_probs(logits, **kw)
        np.testing.assert_allclose(got, ref_probs(logits, **kw), atol=1e-12)
        assert abs(got.sum() - 1) < 1e-12
    batch = 3 * rng.standard_normal((5, 12))
    np.testing.assert_allclose(next_token_probs(batch, **kw), np.stack([ref_probs(r, **kw) for r in batch]), atol=1e-12)


def test_next_token_probs_against_hf_warpers():
    torch = pytest.importorskip("torch")
    lp = pytest.importorskip("transformers.generation.logits_process")
    rng = np.random.default_rng(7)
    logits = 3 * rng.standard_normal((8, 30))
    for t, k, p in [(1.0, None, 0.9), (0.7, 5, None), (1.5, 10, 0.6), (1.0, None, 0.3)]:
        x = torch.from_numpy(logits.copy())
        warpers = [lp.TemperatureLogitsWarper(t)]
        if k is not None:
            warpers.append(lp.TopKLogitsWarper(k))
        if p is not None:
            warpers.append(lp.TopPLogitsWarper(p))
        for w in warpers:
            x = w(None, x)
        want = torch.softmax(x, -1).numpy()
        np.testing.assert_allclose(next_token_probs(logits, t, k, p), want, atol=1e-12)


def test_huge_logits_are_stable():
    p = next_token_probs(np.array([1e308, -1e308, 0.0]), temperature=0.5)
    assert np.isfinite(p).all() and p[0] == 1.0


@pytest.mark.parametrize("kw", [dict(), dict(temperature=0.6, top_k=5), dict(top_p=0.75), dict(temperature=1.7)])
def test_sampling_frequencies_match_probs(kw):
    """Chi-square goodness of fit with a fixed seed: 40,000 draws from one distribution."""
    logits = np.array([2.0, 1.5, 1.0, 0.2, 0.0, -0.5, -1.0, -3.0])
    p = next_token_probs(logits, **kw)
    N = 40_000
    draws = sample(np.tile(logits, (N, 1)), np.random.default_rng(123), **kw)
    counts = np.bincount(draws, minlength=len(p))
    assert counts[p == 0].sum() == 0  # filtered tokens are never drawn
    live = p > 0
    expected = N * p[live]
    chi2 = float(((counts[live] - expected) ** 2 / expected).sum())
    # 99.9999th percentile of chi-square with <= 7 degrees of freedom is < 40
    assert chi2 < 40, (chi2, counts, expected)
    # and the statistic is sensitive: the same draws against a flattened distribution fail it
    q = next_token_probs(logits * 0.8, **kw)[live]
    assert float(((counts[live] - N * q) ** 2 / (N * q)).sum()) > 40 or live.sum() == 1


def test_sample_greedy_and_determinism():
    logits = np.random.default_rng(8).standard_normal((4, 9))
    assert np.array_equal(sample(logits, np.random.default_rng(0), temperature=0), logits.argmax(-1))
    a = sample(logits, np.random.default_rng(1))
    b = sample(logits, np.random.default_rng(1))
    assert np.array_equal(a, b) and a.dtype.kind == "i"


@pytest.mark.parametrize("kw,msg", [(dict(temperature=-1), "temperature must be >= 0"),
                                    (dict(temperature=float("nan")), "temperature must be a finite number"),
                                    (dict(temperature="hot"), "temperature must be a finite number"),
                                    (dict(top_p=0), r"top_p must be in \(0, 1\]"),
                                    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
                                    (dict(top_k=0), "top_k must be a positive integer"),
                                    (dict(top_k=2.5), "top_k must be a positive integer")])
def test_bad_sampling_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg):
        next_token_probs(np.zeros(5), **kw)
    with pytest.raises(ValueError, match=msg):
        tiny_model().generate([1, 2], 3, **kw)


def test_numpy_scalar_arguments_are_accepted():
    model = tiny_model()
    out = model.generate([1, 2], np.int64(4), temperature=np.float32(0.5), top_p=np.float32(0.9), top_k=np.int64(3),
                         seed=1)
    assert out.shape == (6,)


def test_cached_banded_step_reads_only_the_window(monkeypatch):
    """A banded layer's decoding step attends over the last `window` cached keys, not the whole cache."""
    import engine.attention as att

    model = tiny_model("banded")  # window 3
    widths = []
    real = att.masked_attention_forward

    def spy(q, k, v, bias):
        widths.append((q.shape[-2], k.shape[-2]))
        return real(q, k, v, bias)

    monkeypatch.setattr(att, "masked_attention_forward", spy)
    model.generate([1, 2, 3, 4, 5], 6, temperature=0)
    steps = [w for w in widths if w[0] == 1]  # one query: a decoding step
    assert steps and all(k == 3 for _, k in steps)
    widths.clear()
    tiny_model("dense").generate([1, 2, 3, 4, 5], 3, temperature=0)
    assert sorted({k for q, k in widths if q == 1}) == [6, 7]  # dense reads everything so far
