"""The engine against Hugging Face's GPT2LMHeadModel (PyTorch, CPU) on random weights.

The reference model is built from a GPT2Config in the test (no hub, no network) and
given the same random weights through a name mapping written here, independently of
engine/hf.py. Configurations are deliberately odd: head sizes that are not powers of
two, short contexts, vocabularies that are not powers of two, a non-default d_ff.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from engine import GPT, GPTConfig, attention_mask  # noqa: E402

CONFIGS = {
    # head size 20, n_ctx 48, vocabulary 101 (prime)
    "h3x20-ctx48-v101": dict(n_layer=2, n_head=3, d_model=60, n_ctx=48, vocab_size=101),
    # head size 7, n_ctx 17, vocabulary 257, MLP width 50 instead of 4 d
    "h5x7-ctx17-v257-ff50": dict(n_layer=3, n_head=5, d_model=35, n_ctx=17, vocab_size=257, d_ff=50),
    # one head of 24, n_ctx 40, vocabulary 1000
    "h1x24-ctx40-v1000": dict(n_layer=1, n_head=1, d_model=24, n_ctx=40, vocab_size=1000),
}


def random_tree(cfg: GPTConfig, seed: int, dtype=np.float64) -> dict:
    """Random parameters with every tensor non-trivial (biases and LayerNorm too), so that a
    mix-up of any two tensors, a missing bias or a wrong epsilon shows in the logits."""
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in cfg.param_shapes().items():
        if name.endswith(".g"):
            a = 1.0 + 0.2 * rng.standard_normal(shape)
        elif name.endswith(".b"):
            a = 0.1 * rng.standard_normal(shape)
        elif name in ("wte", "wpe"):
            a = 0.5 * rng.standard_normal(shape)
        else:
            a = rng.standard_normal(shape) / np.sqrt(shape[0])
        flat[name] = a.astype(dtype)
    from engine.model import tree_unflatten

    return tree_unflatten(flat, cfg.n_layer)


def hf_name(name: str) -> str:
    """Engine name -> GPT2LMHeadModel state-dict name, written out by hand for the test."""
    if name in ("wte", "wpe"):
        return f"transformer.{name}.weight"
    stem, leaf = name.rsplit(".", 1)
    return "transformer." + stem + {"w": ".weight", "g": ".weight", "b": ".bias"}[leaf]


def hf_model(cfg: GPTConfig, tree: dict, torch_dtype=torch.float64):
    """A GPT2LMHeadModel (eager attention, no dropout) holding the engine's weights."""
    from engine.model import tree_flatten

    hcfg = transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.n_ctx, n_embd=cfg.d_model, n_layer=cfg.n_layer,
        n_head=cfg.n_head, n_inner=cfg.d_ff, activation_function="gelu_new",
        layer_norm_epsilon=cfg.layer_norm_epsilon, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=None, eos_token_id=None, pad_token_id=None)
    m = transformers.GPT2LMHeadModel._from_config(hcfg, attn_implementation="eager")
    m = m.to(torch_dtype).eval()
    sd = {hf_name(k): torch.from_numpy(np.ascontiguousarray(v)).to(torch_dtype) for k, v in tree_flatten(tree).items()}
    res = m.load_state_dict(sd, strict=False)
    assert not res.unexpected_keys, res.unexpected_keys
    assert set(res.missing_keys) <= {"lm_head.weight"}, res.missing_keys
    m.tie_weights()
    assert torch.equal(m.lm_head.weight, m.transformer.wte.weight)
    return m


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def hf_logits(m, ids, mask=None):
    with torch.no_grad():
        kw = {} if mask is None else {"attention_mask": mask}
        return m(torch.from_numpy(ids), **kw).logits.double().numpy()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_float64(name):
    cfg = GPTConfig(**CONFIGS[name])
    tree = random_tree(cfg, seed=1)
    ours = GPT(cfg, dtype="float64", backend="numpy", params=tree)
    ref = hf_model(cfg, tree, torch.float64)
    rng = np.random.default_rng(2)
    for B, T in [(2, cfg.n_ctx), (3, 5), (1, 1)]:
        ids = rng.integers(0, cfg.vocab_size, (B, T))
        got = ours.forward(ids)
        want = hf_logits(ref, ids)
        assert got.shape == want.shape == (B, T, cfg.vocab_size)
        assert rel_err(got, want) < 1e-9, rel_err(got, want)
    # the logits are far from trivial (a broken model giving ~0 everywhere would pass rel_err badly anyway)
    assert np.abs(want).max() > 1.0


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_float32(name):
    cfg = GPTConfig(**CONFIGS[name])
    tree = random_tree(cfg, seed=3, dtype=np.float32)
    ours = GPT(cfg, dtype="float32", backend="numpy", params=tree)
    ref = hf_model(cfg, tree, torch.float32)
    ids = np.random.default_rng(4).integers(0, cfg.vocab_size, (2, cfg.n_ctx))
    got = ours.forward(ids)
    assert got.dtype == np.float32
    assert rel_err(got, hf_logits(ref, ids)) < 1e-4
    # 1-D input gives (T, V), the batch's row (up to float32 rounding: BLAS may block a batch differently)
    one = ours.forward(ids[0])
    assert one.shape == got[0].shape and rel_err(one, got[0]) < 1e-5


def test_logits_differ_when_a_weight_changes():
    """The parity check is sensitive: perturbing one bias in the reference breaks it."""
    cfg = GPTConfig(**CONFIGS["h3x20-ctx48-v101"])
    tree = random_tree(cfg, seed=5)
    ours = GPT(cfg, dtype="float64", backend="numpy", params=tree)
    ref = hf_model(cfg, tree)
    with torch.no_grad():
        ref.transformer.h[1].mlp.c_fc.bias[3] += 1e-6
    ids = np.random.default_rng(6).integers(0, cfg.vocab_size, (1, 12))
    assert rel_err(ours.forward(ids), hf_logits(ref, ids)) > 1e-9


@pytest.mark.parametrize("name", ["h3x20-ctx48-v101", "h1x24-ctx40-v1000"])
def test_greedy_generation_matches_hf(name):
    cfg = GPTConfig(**CONFIGS[name])
    tree = random_tree(cfg, seed=7)
    ours = GPT(cfg, dtype="float64", backend="numpy", params=tree)
    ref = hf_model(cfg, tree)
    prompt = np.random.default_rng(8).integers(0, cfg.vocab_size, (3, 6))
    with torch.no_grad():
        want = ref.generate(torch.from_numpy(prompt), attention_mask=torch.ones_like(torch.from_numpy(prompt)),
                            max_new_tokens=32, min_new_tokens=32, do_sample=False, num_beams=1,
                            pad_token_id=0, eos_token_id=None).numpy()
    assert want.shape == (3, 6 + 32)
    for use_cache in (True, False):
        got = ours.generate(prompt, 32, temperature=0, use_cache=use_cache)
        np.testing.assert_array_equal(got, want)
        for row in range(3):  # one prompt at a time gives the same rows
            np.testing.assert_array_equal(ours.generate(prompt[row], 32, temperature=0, use_cache=use_cache),
                                          want[row])
    # not a degenerate repeat of one token: the continuation changes token along the way
    assert len(set(want[:, 6:].ravel().tolist())) > 3
    assert any(len(set(r.tolist())) > 1 for r in want[:, 6:])


def _hf_mask(kind, T, cfg, dtype):
    m = torch.from_numpy(attention_mask(kind, T, cfg.window, cfg.stride, cfg.fixed_c))
    zero, low = torch.zeros((), dtype=dtype), torch.tensor(torch.finfo(dtype).min, dtype=dtype)
    return torch.where(m, zero, low)[None, None]


@pytest.mark.parametrize("kind,window,stride,c", [
    ("banded", 5, 4, 2), ("banded", 1, 4, 2), ("banded", 64, 4, 2),
    ("strided", 8, 3, 1), ("fixed", 8, 4, 2), ("fixed", 8, 5, 5)])
def test_sparse_layouts_match_hf_with_4d_mask(kind, window, stride, c):
    """Every layer banded (strided, fixed) equals HF's dense model driven by the layout's
    (T, T) mask as a 4-D additive attention mask (used as-is by transformers 5's eager path)."""
    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("custom 4-D masks for GPT-2 are taken as-is from transformers 5 on")
    cfg = GPTConfig(n_layer=2, n_head=3, d_model=30, n_ctx=40, vocab_size=97, attention=kind,
                    window=window, stride=stride, fixed_c=c)
    tree = random_tree(cfg, seed=9)
    ours = GPT(cfg, dtype="float64", backend="numpy", params=tree)
    ref = hf_model(cfg, tree)
    rng = np.random.default_rng(10)
    for T in (1, 7, 23, 40):
        ids = rng.integers(0, cfg.vocab_size, (2, T))
        mask = _hf_mask(kind, T, cfg, torch.float64).expand(2, 1, T, T)
        want = hf_logits(ref, ids, mask)
        assert rel_err(ours.forward(ids), want) < 1e-9
        if kind == "banded" and window < T:  # the mask matters: dense HF differs
            assert rel_err(hf_logits(ref, ids), want) > 1e-6


def test_hf_model_parameter_count_equals_config():
    """cfg.n_params() == sum(p.numel()) of HF's GPT-2 (tied lm_head counted once), built on the meta device."""
    from engine.config import PRESETS

    for name in ("gpt2-124m", "gpt2-355m", "gpt2-774m", "gpt2-1558m"):
        c = PRESETS[name]
        hcfg = transformers.GPT2Config(vocab_size=c.vocab_size, n_positions=c.n_ctx, n_embd=c.d_model,
                                       n_layer=c.n_layer, n_head=c.n_head)
        with torch.device("meta"):
            m = transformers.GPT2LMHeadModel(hcfg)
        n = sum(p.numel() for p in m.parameters())  # parameters() yields the tied matrix once
        assert n == c.n_params(), (name, n, c.n_params())
    for name, kw in CONFIGS.items():
        c = GPTConfig(**kw)
        hcfg = transformers.GPT2Config(vocab_size=c.vocab_size, n_positions=c.n_ctx, n_embd=c.d_model,
                                       n_layer=c.n_layer, n_head=c.n_head, n_inner=c.d_ff)
        with torch.device("meta"):
            m = transformers.GPT2LMHeadModel(hcfg)
        assert sum(p.numel() for p in m.parameters()) == c.n_params(), name


def test_xray_matches_hf_hidden_states_and_attentions():
    """The X-ray's residual stream and attention weights are HF's hidden_states and attentions."""
    cfg = GPTConfig(**CONFIGS["h5x7-ctx17-v257-ff50"])
    tree = random_tree(cfg, seed=11)
    ours = GPT(cfg, dtype="float64", backend="numpy", params=tree)
    ref = hf_model(cfg, tree)
    ids = np.random.default_rng(12).integers(0, cfg.vocab_size, (2, 13))
    with torch.no_grad():
        o = ref(torch.from_numpy(ids), output_hidden_states=True, output_attentions=True)
    xr = ours.forward(ids, return_residuals=True, return_attention=True)
    hs = [h.numpy() for h in o.hidden_states]
    assert len(xr.residuals) == len(hs) == cfg.n_layer + 1
    for r, h in zip(xr.residuals[:-1], hs[:-1]):
        assert rel_err(r, h) < 1e-12
    # HF's last hidden state has ln_f applied; the engine keeps the raw stream (the logit lens applies ln_f)
    from engine.layers import layernorm_forward

    assert rel_err(layernorm_forward(xr.residuals[-1], ours.params["ln_f"])[0], hs[-1]) < 1e-12
    assert len(xr.attention) == cfg.n_layer
    for a, h in zip(xr.attention, o.attentions):
        assert a.shape == (2, cfg.n_head, 13, 13)
        np.testing.assert_allclose(a, h.numpy(), atol=1e-13)
    assert rel_err(xr.logits, o.logits.numpy()) < 1e-9
    lens = xr.logit_lens()
    assert rel_err(lens[-1], o.logits.numpy()) < 1e-9  # the lens after the last layer is the output
    norms = xr.residual_norms()
    np.testing.assert_allclose(norms[1], np.linalg.norm(hs[1], axis=-1), rtol=1e-12)
    # 1-D input: the same, without the batch axis
    x1 = ours.forward(ids[1], return_residuals=True)
    assert x1.attention is None and rel_err(x1.residuals[2], hs[2][1]) < 1e-12


@pytest.fixture
def hf_per_layer_layouts(monkeypatch):
    """Make transformers' eager GPT-2 attention use, in each layer, the engine's layout for that layer
    (transformers passes one mask for all layers; GPT-3 alternates dense and banded ones)."""
    from transformers.models.gpt2 import modeling_gpt2 as mg

    real = mg.eager_attention_forward
    state = {}

    def patched(module, query, key, value, attention_mask, **kw):
        cfg = state["cfg"]
        Tq, Tk = query.shape[-2], key.shape[-2]
        m = attention_mask_np(cfg.layer_layouts()[module.layer_idx], Tk, cfg.window, cfg.stride, cfg.fixed_c)
        m = torch.from_numpy(m[Tk - Tq:])  # the last Tq queries (decoding with HF's KV cache)
        low = torch.tensor(torch.finfo(query.dtype).min, dtype=query.dtype)
        bias = torch.where(m, torch.zeros((), dtype=query.dtype), low)[None, None]
        return real(module, query, key, value, bias, **kw)

    monkeypatch.setattr(mg, "eager_attention_forward", patched)
    return state


attention_mask_np = attention_mask


@pytest.mark.parametrize("attention,window", [("alternating", 4), (("fixed", "banded", "strided"), 5)])
def test_mixed_layouts_match_hf_per_layer(hf_per_layer_layouts, attention, window):
    """GPT-3's alternating dense / banded stack (and any per-layer mix) against transformers with the
    same per-layer masks: logits, and 32 greedy tokens through HF's own KV-cached generate."""
    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("relies on transformers 5's eager_attention_forward")
    cfg = GPTConfig(n_layer=3 if isinstance(attention, tuple) else 4, n_head=2, d_model=22, n_ctx=48,
                    vocab_size=89, attention=attention, window=window, stride=4, fixed_c=2)
    hf_per_layer_layouts["cfg"] = cfg
    tree = random_tree(cfg, seed=13)
    ours = GPT(cfg, dtype="float64", backend="numpy", params=tree)
    ref = hf_model(cfg, tree)
    ids = np.random.default_rng(14).integers(0, cfg.vocab_size, (2, 41))
    want = hf_logits(ref, ids)
    assert rel_err(ours.forward(ids), want) < 1e-9
    dense = GPT(cfg.replace(attention="dense"), dtype="float64", backend="numpy", params=tree)
    assert rel_err(dense.forward(ids), want) > 1e-6  # the layouts matter here
    prompt = ids[:, :6]
    with torch.no_grad():
        gen = ref.generate(torch.from_numpy(prompt), attention_mask=torch.ones_like(torch.from_numpy(prompt)),
                           max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=0,
                           eos_token_id=None).numpy()
    for use_cache in (True, False):
        np.testing.assert_array_equal(ours.generate(prompt, 32, temperature=0, use_cache=use_cache), gen)
    np.testing.assert_array_equal(ours.generate(prompt[0], 32, temperature=0), gen[0])
