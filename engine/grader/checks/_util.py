"""Small helpers shared by the chapter checks."""
from __future__ import annotations

import numpy as np

from ...config import GPTConfig
from ...model import GPT
from ...params import init_params, tree_map
from ..runner import Fail, require_result


def tiny_config(**over):
    kw = dict(n_layer=2, n_head=2, d_model=16, n_ctx=16, vocab_size=64, attention="dense", name="grader-tiny")
    kw.update(over)
    return GPTConfig(**kw)


def tiny_model(seed=0, **over):
    """A small random GPT in float64, its biases and LayerNorms randomised so that no term is trivially zero."""
    cfg = tiny_config(**over)
    rng = np.random.default_rng(seed + 1000)
    params = init_params(cfg, seed, "float64")
    params = tree_map(lambda a: a + 0.05 * rng.standard_normal(a.shape), params)
    return GPT(cfg, dtype="float64", backend="numpy", params=params)


def rand_linear(rng, n_in, n_out, scale=0.3):
    return {"w": rng.standard_normal((n_in, n_out)) * scale, "b": rng.standard_normal(n_out) * 0.1}


def pair(got, what):
    require_result(got, what)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise Fail(f"{what} should return two things (a tuple), got {type(got).__name__}")
    return got


def matches(got, want, rtol=1e-4, atol=1e-6) -> bool:
    """Quiet comparison used to recognise a typical mistake and pick a hint."""
    try:
        g = np.asarray(got, dtype=np.float64)
        w = np.asarray(want, dtype=np.float64)
        return g.shape == w.shape and bool(np.allclose(g, w, rtol=rtol, atol=atol))
    except Exception:
        return False


def diagnose(got, want, candidates, rtol=1e-7, atol=1e-10) -> str:
    """The hint of the first known mistake whose output ``got`` reproduces (and ``want`` does not).

    ``candidates`` holds ``(hint, thunk)`` pairs; each thunk recomputes the output under one mistake.
    A thunk that fails, or a mistake that gives the right answer on this input, is skipped.
    """
    if matches(got, want, rtol=rtol, atol=atol):
        return ""
    for hint, thunk in candidates:
        try:
            with np.errstate(all="ignore"):
                alt = thunk()
        except Exception:
            continue
        if not matches(alt, want, rtol=rtol, atol=atol) and matches(got, alt, rtol=rtol, atol=atol):
            return hint
    return ""
