"""Chapter 4's numbers: parameter counts, FLOPs and memory, against the papers and against
formulas written out again here."""
import numpy as np
import pytest

from engine import GPT, GPTConfig, PRESETS
from engine.attention import attention_mask
from engine.config import PAPER_PARAMS


# ---------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_gpt3_presets_match_paper(name):
    """Brown et al. 2020, Table 2.1 shapes give Table D.1's parameter counts within 1%."""
    cfg = GPTConfig.preset(name)
    assert cfg.n_ctx == 2048 and cfg.vocab_size == 50257 and cfg.d_ff == 4 * cfg.d_model
    assert cfg.layer_layouts()[:2] == ("dense", "banded")
    assert abs(cfg.n_params() / PAPER_PARAMS[name] - 1) < 0.01, (cfg.n_params(), PAPER_PARAMS[name])


def test_gpt3_table_2_1_shapes():
    want = {  # n_layer, d_model, n_head, d_head (Brown et al. 2020, Table 2.1; XL and 13B as noted in config.py)
        "gpt3-small": (12, 768, 12, 64), "gpt3-medium": (24, 1024, 16, 64), "gpt3-large": (24, 1536, 16, 96),
        "gpt3-xl": (24, 2048, 16, 128), "gpt3-2.7b": (32, 2560, 32, 80), "gpt3-6.7b": (32, 4096, 32, 128),
        "gpt3-13b": (40, 5120, 40, 128), "gpt3-175b": (96, 12288, 96, 128)}
    for name, (L, d, H, D) in want.items():
        c = GPTConfig.preset(name)
        assert (c.n_layer, c.d_model, c.n_head, c.d_head) == (L, d, H, D), name


def test_gpt2_counts_exact():
    assert GPTConfig.preset("gpt2-124m").n_params() == 124_439_808
    # Radford et al. 2019 round these to 117M / 345M / 762M / 1542M; the real checkpoints hold:
    assert GPTConfig.preset("gpt2-355m").n_params() == 354_823_168
    assert GPTConfig.preset("gpt2-774m").n_params() == 774_030_080
    assert GPTConfig.preset("gpt2-1558m").n_params() == 1_557_611_200


def formula_count(L, d, V, n_ctx, f=None):
    f = 4 * d if f is None else f
    attn = d * 3 * d + 3 * d + d * d + d
    mlp = d * f + f + f * d + d
    ln = 2 * 2 * d
    return V * d + n_ctx * d + L * (attn + mlp + ln) + 2 * d


@pytest.mark.parametrize("name", list(PRESETS))
def test_counts_match_formula_and_shapes(name):
    c = PRESETS[name]
    assert c.n_params() == formula_count(c.n_layer, c.d_model, c.vocab_size, c.n_ctx)
    assert c.n_params() == sum(int(np.prod(s)) for s in c.param_shapes().values())
    assert c.params_per_layer() == 12 * c.d_model ** 2 + 13 * c.d_model
    assert c.n_params(non_embedding=True) == c.n_params() - (c.vocab_size + c.n_ctx) * c.d_model


@pytest.mark.parametrize("kw", [dict(n_layer=2, n_head=3, d_model=21, n_ctx=7, vocab_size=33, d_ff=10),
                                dict(n_layer=1, n_head=1, d_model=8, n_ctx=5, vocab_size=11),
                                dict(n_layer=3, n_head=2, d_model=6, n_ctx=9, vocab_size=13, attention="alternating")])
def test_count_equals_allocated_tensors(kw):
    cfg = GPTConfig(**kw)
    model = GPT(cfg, backend="numpy")
    assert model.n_params() == cfg.n_params() == formula_count(cfg.n_layer, cfg.d_model, cfg.vocab_size, cfg.n_ctx,
                                                              cfg.d_ff)
    assert {k: v.shape for k, v in model.state_dict().items()} == cfg.param_shapes()


def test_course_tiny_allocates_its_count():
    assert GPT("course-tiny", backend="numpy").n_params() == PRESETS["course-tiny"].n_params()


# ---------------------------------------------------------------------- FLOPs
def test_flops_kaplan_convention():
    """Kaplan et al. 2020, Table 1: C_forward = 2N + 2 n_layer n_ctx d_model (N without embeddings)."""
    for name in ("gpt3-small", "gpt3-175b", "gpt2-124m", "course-tiny"):
        c = GPTConfig.preset(name)
        d, L = c.d_model, c.n_layer
        N = L * (12 * d * d + 13 * d) + 2 * d
        f = c.flops_per_token()
        assert f["forward_dense_attention"] == 2 * N + 2 * L * c.n_ctx * d
        assert f["training_6N"] == 6 * formula_count(L, d, c.vocab_size, c.n_ctx)
        assert f["training"] == pytest.approx(3 * f["forward"])


def mask_keys(c, T):
    """Total kept (query, key) pairs per layer, counted from the drawn masks."""
    return [attention_mask(k, T, c.window, c.stride, c.fixed_c).sum() for k in c.layer_layouts()]


@pytest.mark.parametrize("attention", ["dense", "banded", "strided", "fixed", "alternating"])
@pytest.mark.parametrize("T", [1, 50, 128])
def test_forward_flops_count_the_kept_keys(attention, T):
    c = GPTConfig(n_layer=4, n_head=4, d_model=64, n_ctx=128, vocab_size=1000, attention=attention, window=16,
                  stride=8, fixed_c=2)
    d = c.d_model
    weights = c.n_layer * (3 * d * d + d * d + 2 * 4 * d * d) + c.vocab_size * d  # matrices + unembedding
    attn = sum(4 * d * n / T for n in mask_keys(c, T))  # q.k and p.v: 2 d each per kept pair
    f = c.flops_per_token(T)
    assert f["forward"] == pytest.approx(2 * weights + attn, rel=1e-12)
    for i in range(c.n_layer):
        assert c.attended_positions(i, T) == pytest.approx(mask_keys(c, T)[i] / T)


def test_gpt3_175b_training_compute():
    """Table D.1: 3.14e23 FLOPs to train GPT-3 175B on 300B tokens (6 N D)."""
    c = GPTConfig.preset("gpt3-175b")
    assert c.flops_per_token()["training_6N"] * 300e9 == pytest.approx(3.14e23, rel=0.01)


# ---------------------------------------------------------------------- memory
@pytest.mark.parametrize("dtype,b", [("float32", 4), ("float16", 2), ("float64", 8), ("bfloat16", 2)])
def test_memory_bytes(dtype, b):
    c = GPTConfig.preset("gpt3-175b")
    n = formula_count(96, 12288, 50257, 2048)
    m = c.memory_bytes(dtype, batch=3, T=100)
    assert m["weights"] == m["grads"] == n * b
    assert m["adam"] == 8 * n
    assert m["kv_cache"] == 2 * 96 * 3 * 100 * 12288 * b  # K and V, every layer, token and sequence
    assert m["training_total"] == 2 * n * b + 8 * n + (4 * n if b < 4 else 0)
    assert c.memory_bytes(dtype)["kv_cache"] == 2 * 96 * 2048 * 12288 * b
    # 175B weights in fp16 are about 350 GB, as usually quoted
    assert c.memory_bytes("float16")["weights"] == pytest.approx(350e9, rel=0.01)


def test_memory_bad_dtype():
    with pytest.raises(ValueError, match="dtype must be one of"):
        GPTConfig().memory_bytes("int4")


# ---------------------------------------------------------------------- the config itself
def test_layouts():
    assert GPTConfig(n_layer=4, attention="alternating").layer_layouts() == ("dense", "banded") * 2
    assert GPTConfig(n_layer=2, attention=["fixed", "strided"]).layer_layouts() == ("fixed", "strided")
    assert GPTConfig(n_layer=3, attention="banded").layer_layouts() == ("banded",) * 3


@pytest.mark.parametrize("kw,msg", [
    (dict(d_model=10, n_head=3), r"d_model \(10\) must be divisible by n_head \(3\)"),
    (dict(n_layer=0), "n_layer must be a positive integer"),
    (dict(n_ctx=2.5), "n_ctx must be a positive integer"),
    (dict(vocab_size=True), "vocab_size must be a positive integer"),
    (dict(attention="sparse"), "unknown attention 'sparse'"),
    (dict(n_layer=2, attention=("dense",)), "attention lists 1 layouts but n_layer is 2"),
    (dict(n_layer=2, attention=("dense", "local")), r"unknown attention layout\(s\) \['local'\]"),
    (dict(stride=4, fixed_c=5), r"fixed_c \(5\) cannot exceed stride \(4\)"),
])
def test_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        GPTConfig(**kw)


def test_presets_and_dict_roundtrip():
    with pytest.raises(ValueError, match="unknown preset 'gpt4'.*gpt3-175b"):
        GPTConfig.preset("gpt4")
    assert GPTConfig.preset("GPT3-Small", n_ctx=128).n_ctx == 128
    assert PRESETS["gpt3-small"].n_ctx == 2048  # overrides do not touch the preset
    for c in (*PRESETS.values(), GPTConfig(n_layer=2, attention=("fixed", "dense"))):
        assert GPTConfig.from_dict(c.to_dict()) == c
    import json

    assert GPTConfig.from_dict(json.loads(json.dumps(GPTConfig(n_layer=2, attention=("fixed", "dense")).to_dict()))) \
        .layer_layouts() == ("fixed", "dense")
    with pytest.raises(ValueError, match=r"unknown GPTConfig fields: \['n_embd'\]"):
        GPTConfig.from_dict({"n_embd": 3})


def test_changing_the_width_keeps_the_mlp_ratio():
    # a new d_model must not keep the old preset's d_ff (the 4x ratio of both papers), unless asked to
    c = GPTConfig.preset("course-small", d_model=256, n_head=8)  # the preset's own: 128 wide, d_ff 512
    assert (c.d_model, c.d_ff) == (256, 1024)
    assert GPTConfig.preset("course-small", d_model=256, n_head=8, d_ff=512).d_ff == 512
    odd = GPTConfig(n_layer=1, n_head=2, d_model=16, d_ff=24)  # a deliberate ratio is kept
    assert odd.replace(d_model=32).d_ff == 24
    assert GPTConfig.preset("gpt3-small", n_ctx=128).d_ff == 3072


def test_train_flags_set_the_width_and_mlp():
    import argparse

    from engine.train import add_train_arguments, config_from_args

    p = add_train_arguments(argparse.ArgumentParser())
    assert config_from_args(p.parse_args(["--d-model", "256", "--n-head", "8"])).d_ff == 1024
    assert config_from_args(p.parse_args(["--d-model", "256", "--n-head", "8", "--d-ff", "640"])).d_ff == 640


def test_the_package_lists_its_modules_and_exports_what_it_imports():
    import pkgutil
    import re
    import types

    import engine

    # every module of engine/ has a row in the package's table (a reader opening engine/ sees the book)
    rows = set(re.findall(r"^``(\w+)``", engine.__doc__, re.M))
    modules = {m.name for m in pkgutil.iter_modules(engine.__path__)} - {"cli", "widgets", "grader", "__main__"}
    assert modules <= rows, f"modules without a row in engine/__init__.py: {sorted(modules - rows)}"
    assert rows <= modules | {"grader"}, f"rows without a module: {sorted(rows - modules)}"
    # the functions and classes the package imports at the top are its public names
    public = {n for n, v in vars(engine).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public == set(engine.__all__), sorted(public ^ set(engine.__all__))
