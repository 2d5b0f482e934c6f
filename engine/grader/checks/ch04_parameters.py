"""Chapter 4, Parameters: counting parameters, memory, training compute."""
from __future__ import annotations

import numpy as np

from ...config import PRESETS, GPTConfig
from ..tasks import task
from ..runner import call, number

CH = "04_parameters"
GPT3 = [k for k in PRESETS if k.startswith("gpt3-")]
SECONDS_PER_YEAR = 365 * 24 * 3600

# ---------------------------------------------------------------------- n_params
npar = task("n_params", CH, "Parameter count from a config", "n_params")


def _np_case(f, cfg: GPTConfig):
    args = (cfg.n_layer, cfg.d_model, cfg.n_ctx, cfg.vocab_size)
    what = "n_params(n_layer={}, d_model={}, n_ctx={}, vocab_size={})".format(*args)
    if cfg.name:
        what += f" [{cfg.name}]"
    got = call(f, *args, name="n_params", arg_names=["n_layer", "d_model", "n_ctx", "vocab_size"])
    want = cfg.n_params()
    d, L = cfg.d_model, cfg.n_layer
    hint = ""
    try:
        diff = int(got) - want
    except Exception:
        diff = None
    if diff is not None and diff != 0:
        hint = {cfg.vocab_size * d: "the output layer reuses wte (tied weights): do not count it twice",
                -cfg.n_ctx * d: "count the position embeddings wpe (n_ctx x d_model)",
                -2 * d: "count the final LayerNorm ln_f (gain and bias: 2 d_model)",
                -L * 4 * d: "count both LayerNorms of every block (4 d_model per layer)",
                -L * 9 * d: "count the biases of the four linear layers (3d + d + 4d + d per layer)",
                -L * 13 * d: "count the biases and the LayerNorms (13 d_model per layer)",
                -L * 4 * d * d: "the MLP is d_model -> 4 d_model -> d_model: 8 d^2 weights, not 4 d^2"}.get(diff, "")
        if not hint:
            hint = _split_diff(f, cfg, diff)
    number(got, float(want), what, rtol=0, hint=hint)


def _split_diff(f, cfg: GPTConfig, diff: int) -> str:
    """Split the error into per-block and outside-the-blocks parts: ask for one more layer and compare."""
    d, L = cfg.d_model, cfg.n_layer
    try:
        more = int(call(f, L + 1, d, cfg.n_ctx, cfg.vocab_size, name="n_params",
                        arg_names=["n_layer", "d_model", "n_ctx", "vocab_size"]))
    except Exception:
        return ""
    want_more = GPTConfig(n_layer=L + 1, n_head=cfg.n_head, d_model=d, n_ctx=cfg.n_ctx,
                          vocab_size=cfg.vocab_size).n_params()
    per = (more - want_more) - diff  # the error of one block
    rest = diff - L * per
    if per == -2 * d and rest == -d:
        return ("every LayerNorm has a bias b as well as a gain g: 2 d_model parameters per LayerNorm "
                "(two per block, and ln_f)")
    if per == -2 * d and rest == 0:
        return "count both LayerNorms of every block, each with a gain and a bias (4 d_model per layer)"
    parts = []
    if per:
        parts.append(f"each block is {per:+,} off (a block holds 12 d^2 + 13 d = {12 * d * d + 13 * d:,} parameters)")
    if rest:
        parts.append(f"{rest:+,} off outside the blocks (wte, wpe and ln_f hold (vocab_size + n_ctx) d + 2 d)")
    return "; ".join(parts)


@npar.part("GPT-3 Small")
def _(f):
    _np_case(f, PRESETS["gpt3-small"])


@npar.part("all eight GPT-3 sizes (Table 2.1)")
def _(f):
    for k in GPT3:
        _np_case(f, PRESETS[k])


@npar.part("other shapes")
def _(f):
    rng = np.random.default_rng(20)
    for _ in range(4):
        h = int(rng.integers(1, 9))
        _np_case(f, GPTConfig(n_layer=int(rng.integers(1, 30)), n_head=h, d_model=h * int(rng.integers(1, 64)),
                              n_ctx=int(rng.integers(1, 4096)), vocab_size=int(rng.integers(2, 60000))))


# ---------------------------------------------------------------------- memory
mem = task("memory", CH, "Memory for weights and Adam", ("weights_bytes", "adam_bytes"))


BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def _per_param_hint(got, n, table) -> str:
    """The hint of the known mistake whose bytes per parameter ``got / n`` gives (``table``: ratio -> hint)."""
    try:
        r = float(got) / n
    except Exception:
        return ""
    return next((h for k, h in table.items() if abs(r - k) < 1e-9), "")


def _weights_case(f, k, dt):
    n = PRESETS[k].n_params()
    got = call(f, n, dt, name="weights_bytes", arg_names=["n_params", "dtype"])
    b = BYTES[dt]
    other = {4: "float16 and bfloat16", 2: "float32"}[b]
    table = {8 * b: f"that is in bits: a {dt} number is {8 * b} bits = {b} bytes (divide by 8)",
             1: f"that is the number of parameters; multiply by the bytes per number ({b} for {dt})",
             8: f"8 bytes is a float64; a {dt} number takes {b} bytes"}
    table[6 - b] = (f"you used {6 - b} bytes per number, the size of {other}: a {dt} number takes {b} bytes "
                    "(look at the dtype argument)")
    number(got, PRESETS[k].memory_bytes(dt)["weights"], f"weights_bytes({n:,}, {dt!r}) [{k}]", rtol=0,
           hint=_per_param_hint(got, n, table) or f"a {dt} number takes {b} bytes")


@mem.part("weights in float32")
def _(weights_bytes, adam_bytes):
    for k in GPT3:
        _weights_case(weights_bytes, k, "float32")


@mem.part("weights in float16 and bfloat16")
def _(weights_bytes, adam_bytes):
    for k in ("gpt3-small", "gpt3-175b"):
        for dt in ("float16", "bfloat16"):
            _weights_case(weights_bytes, k, dt)


ADAM_MISTAKES = {
    4: "that is one moment: Adam keeps two numbers per parameter (the moments m and v), 4 bytes each",
    2: "that counts the numbers, not the bytes: two moments per parameter, each a 4-byte float32",
    12: "that adds the float32 weights (4 bytes per parameter): count only Adam's two moments, m and v",
    16: "that adds the float32 weights and gradients: count only Adam's two moments, m and v (8 bytes per parameter)",
    64: "that is in bits: two moments x 32 bits = 8 bytes per parameter (divide by 8)",
}


@mem.part("Adam's two moments (float32)")
def _(weights_bytes, adam_bytes):
    for k in GPT3:
        n = PRESETS[k].n_params()
        got = call(adam_bytes, n, name="adam_bytes", arg_names=["n_params"])
        number(got, PRESETS[k].memory_bytes("float32")["adam"], f"adam_bytes({n:,}) [{k}]", rtol=0,
               hint=_per_param_hint(got, n, ADAM_MISTAKES) or
               "Adam keeps two numbers per parameter (the moments m and v), each a 4-byte float32")


# ---------------------------------------------------------------------- training FLOPs
flops = task("training_flops", CH, "Training compute", "training_flops")


FLOPS_MISTAKES = {
    1 / 3: "that is the forward pass only (2 N per token); the backward pass costs twice that again",
    2 / 3: "forward 2 N + backward 4 N = 6 N FLOPs per token (the backward pass is twice the forward, not equal to it)",
    1 / 2: "a multiply and an add per weight make the forward pass 2 N per token, not N: 2 N + 4 N = 6 N",
    1 / 6: "that is N per token; forward (2 N) and backward (4 N) make 6 N FLOPs per token",
}


def _flops_case(f, n, tokens, what):
    got = call(f, n, tokens, name="training_flops", arg_names=["n_params", "n_tokens"])
    want = 6.0 * n * tokens
    hint = ""
    try:
        r = float(got) / want
        hint = next((h for k, h in FLOPS_MISTAKES.items() if abs(r - k) < 1e-6), "")
        if not hint and abs(float(got) - 6.0 * n) < 1e-6 * 6 * n:
            hint = "multiply by the number of tokens too: 6 N FLOPs *per token*"
    except Exception:
        pass
    number(got, want, what, rtol=1e-9, hint=hint)


@flops.part("GPT-3 175B on 300 billion tokens")
def _(f):
    n = PRESETS["gpt3-175b"].n_params()
    _flops_case(f, n, 300e9, f"training_flops({n:,}, 300e9)")


@flops.part("other sizes")
def _(f):
    for k in ("gpt3-small", "gpt3-xl", "gpt3-13b"):
        n = PRESETS[k].n_params()
        _flops_case(f, n, 300e9, f"training_flops({n:,}, 300e9) [{k}]")
    _flops_case(f, 1000, 7, "training_flops(1000, 7)")


# ---------------------------------------------------------------------- GPU-years
gy = task("gpu_years", CH, "GPU-years for given hardware", "gpu_years")


def _gy_case(f, fl, peak, util):
    got = call(f, fl, peak, util, name="gpu_years", arg_names=["flops", "peak_flops_per_s", "utilization"])
    want = fl / (peak * util) / SECONDS_PER_YEAR
    hint = ""
    try:
        g = float(got)
        if abs(g - fl / (peak * util)) < 1e-6 * fl / (peak * util):
            hint = "that is in GPU-seconds; divide by the seconds in a year (365 x 24 x 3600)"
        elif abs(g - fl / peak / SECONDS_PER_YEAR) < 1e-6 * want:
            hint = "the GPU only reaches `utilization` of its peak: divide by peak x utilization"
        elif abs(g - fl * util / peak / SECONDS_PER_YEAR) < 1e-6 * want:
            hint = "a lower utilization means *more* time: divide by it, do not multiply"
        elif abs(g * 365.25 / 365 - want) < 1e-6 * want:
            hint = "a year here is 365 x 24 x 3600 seconds, as the task says (not 365.25 days)"
        else:
            for unit, secs in (("GPU-days", 24 * 3600), ("GPU-hours", 3600), ("GPU-minutes", 60)):
                if abs(g - fl / (peak * util) / secs) < 1e-6 * g:
                    hint = f"that is in {unit}; divide the seconds by those of a year (365 x 24 x 3600)"
    except Exception:
        pass
    number(got, want, f"gpu_years({fl:.3g}, {peak:.3g}, {util})", rtol=1e-9, hint=hint)


@gy.part("GPT-3 175B on V100s at 30% of 125 TFLOP/s")
def _(f):
    _gy_case(f, 6.0 * PRESETS["gpt3-175b"].n_params() * 300e9, 125e12, 0.3)


@gy.part("other hardware")
def _(f):
    _gy_case(f, 3.14e23, 989e12, 0.4)
    _gy_case(f, 1e20, 19.5e12, 1.0)
