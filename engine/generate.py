"""Chapter 7, Generation: one token at a time, each fed back in.

The model gives a distribution over the next token; we pick one (greedily or by
sampling with temperature, top-k, top-p), append it and ask again. A KV cache
keeps every layer's keys and values from earlier steps, preallocated for the
whole context, so each new token costs one pass over the weights instead of a
pass over the whole sequence.
"""
from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator

import numpy as np

from . import gemv, kernels, layers
from .backend import to_numpy
from .decoder import check_ids, forward, gpt_forward


# ---------------------------------------------------------------------- sampling
def softmax(logits, temperature: float = 1.0):
    """Softmax of logits / temperature over the last axis, stable for huge logits. NumPy in, NumPy out."""
    z = np.asarray(logits, dtype=np.float64)
    with np.errstate(over="ignore"):  # shifted first: huge logits / small T give -inf (weight 0), not NaN
        return layers.softmax(z, temperature)


def next_token_probs(logits, temperature: float = 1.0, top_k=None, top_p=None):
    """The distribution we sample from. logits: (V,) or (B, V) -> probabilities, same shape.

    temperature scales the logits (lower: sharper); top_k keeps the k most likely tokens;
    top_p keeps the smallest set of most likely tokens whose probability reaches top_p.
    """
    check_sampling(temperature, top_k, top_p)
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        p = np.zeros_like(logits)
        np.put_along_axis(p, logits.argmax(axis=-1)[..., None], 1.0, axis=-1)
        return p
    p = softmax(logits, temperature)
    if top_k is not None and top_k < p.shape[-1]:
        # ties at the threshold: keep exactly k by rank, not by value
        order = np.argsort(-p, axis=-1, kind="stable")
        keep = np.zeros_like(p, dtype=bool)
        np.put_along_axis(keep, order[..., :top_k], True, axis=-1)
        p = np.where(keep, p, 0.0)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=-1)
        cum = np.cumsum(sorted_p, axis=-1)
        # keep a token if the mass before it is still short of top_p (the first is always kept)
        keep_sorted = (cum - sorted_p) < top_p * cum[..., -1:]
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
    return p / p.sum(axis=-1, keepdims=True)


def _is_real(x) -> bool:
    # Python and NumPy numbers alike (np.float32(0.7) is not a Python float), never bools
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def check_sampling(temperature, top_k, top_p):
    if not _is_real(temperature) or not np.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and not (_is_real(top_p) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")


def sample(logits, rng: np.random.Generator, temperature=1.0, top_k=None, top_p=None) -> np.ndarray:
    """One token id per row. logits: (B, V) -> (B,) int64. Greedy (argmax) when temperature is 0."""
    if temperature == 0:  # the same argmax as in float64 (the conversion is exact), without the copy
        return to_numpy(logits).argmax(axis=-1)
    logits = to_numpy(logits).astype(np.float64)
    p = next_token_probs(logits, temperature, top_k, top_p)
    # inverse-CDF draw: one uniform per row, reproducible for a given seed
    u = rng.random(p.shape[0])[:, None]
    cum = np.cumsum(p, axis=-1)
    # "<=": a token of probability 0 is never picked, even when u is exactly 0
    return np.minimum((cum <= u * cum[:, -1:]).sum(axis=-1), p.shape[-1] - 1)


# ---------------------------------------------------------------------- KV cache
class KVCache:
    """Preallocated keys and values for every layer: k, v of shape (n_layer, B, H, n_ctx, D).

    ``length`` is how many positions are filled. Nothing is reallocated while generating.
    """

    def __init__(self, model, batch: int):
        cfg = model.cfg
        shape = (cfg.n_layer, batch, cfg.n_head, cfg.n_ctx, cfg.d_head)
        self.k = kernels.zeros(model.xp, shape, model._dt)  # 37.7 MB each for GPT-2 124M: kept for reuse
        self.v = kernels.zeros(model.xp, shape, model._dt)
        self.length = 0

    @property
    def nbytes(self) -> int:
        return int(self.k.nbytes + self.v.nbytes)


def forward_cached(model, ids, cache: KVCache, params=None):
    """Run new tokens through the model, reading and extending the KV cache.

    ids: (B, Tn) backend ints at positions cache.length .. cache.length + Tn - 1.
    ``params``: the model's weights in another layout (``decode_params``); default ``model.params``.
    Returns the logits of the last position only: (B, V).
    """
    return forward(model.params if params is None else params, ids, model.cfg, kv=cache)[0]


# Below this many new tokens the copies ``decode_params`` makes cost more than they save (GPT-2 124M
# on the course's CPU, two threads: 50 ms to make, about 5 ms saved a step; all scale with the weights).
# On one thread it makes none (``gemv.gemv_layout``).
DECODE_LAYOUT_MIN_STEPS = 32


def decode_params(params):
    """The same parameter tree, each weight matrix w (C_in, C_out) in ``gemv.gemv_layout``: the
    layout one-token steps read fastest. Only the matrices it changes are copied (in GPT-2, the
    MLP's c_proj: a quarter of each block's weights); every value and shape is unchanged."""
    if isinstance(params, dict):
        return {k: gemv.gemv_layout(v) if k == "w" else decode_params(v) for k, v in params.items()}
    if isinstance(params, list):
        return [decode_params(v) for v in params]
    return params


def step_matrices(params) -> list:
    """The weight matrices (C_in, C_out) of one cached step, in the order it multiplies by them: each
    block's c_attn, attn c_proj, c_fc, mlp c_proj, then the unembedding wte.T."""
    def ws(p):
        if isinstance(p, dict):
            return [w for k, v in p.items() for w in ([v] if k == "w" else ws(v))]
        return [w for v in p for w in ws(v)] if isinstance(p, list) else []

    return ws(params["h"]) + [params["wte"].T]


# ---------------------------------------------------------------------- generation loops
def _stop_set(stop) -> set[int]:
    if stop is None:
        return set()
    if isinstance(stop, (int, np.integer)):
        return {int(stop)}
    if isinstance(stop, Iterable) and not isinstance(stop, (str, bytes)):
        return {int(s) for s in stop}
    raise TypeError(f"stop must be a token id or a list of token ids, got {stop!r}")


def generate_stream(model, ids, max_new_tokens: int, temperature: float = 1.0, top_k=None, top_p=None,
                    seed=None, use_cache: bool = True, stop=None, overflow: str = "error") -> Iterator:
    """Yield new tokens as they are sampled: an int per step for a 1-D prompt, a (B,) array for (B, T).

    Stops after ``max_new_tokens`` or when every row has produced a ``stop`` token (which is
    not yielded for a 1-D prompt). ``overflow``: "error" (default) refuses to go past n_ctx;
    "slide" keeps the last n_ctx tokens as context, as a model without a cache would.
    """
    check_sampling(temperature, top_k, top_p)
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if overflow not in ("error", "slide"):
        raise ValueError(f"overflow must be 'error' or 'slide', got {overflow!r}")
    cfg, xp = model.cfg, model.xp
    ids, squeeze = check_ids(ids, cfg, xp, allow_long=overflow == "slide")
    if overflow == "error" and ids.shape[1] + max_new_tokens > cfg.n_ctx:
        raise ValueError(f"prompt ({ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                         f"context n_ctx = {cfg.n_ctx}; ask for fewer tokens or pass overflow='slide'")
    stops = _stop_set(stop)
    rng = np.random.default_rng(seed)
    seq = to_numpy(ids)
    B = seq.shape[0]
    done = np.zeros(B, dtype=bool)
    cache = KVCache(model, B) if use_cache else None
    # one-token steps read the weights from copies laid out for them, when there are enough steps
    step_params = decode_params(model.params) if use_cache and max_new_tokens >= DECODE_LAYOUT_MIN_STEPS else None
    if step_params is not None:
        gemv.tune_one_row(step_matrices(step_params))  # on one thread: vecmat or the BLAS, measured once
    for _ in range(max_new_tokens):
        ctx = seq[:, -cfg.n_ctx:]
        if use_cache:
            if cache.length == 0 or seq.shape[1] > cfg.n_ctx:
                cache.length = 0  # (re)fill: first step, or the window slid past n_ctx
                logits = forward_cached(model, xp.asarray(ctx), cache)
            else:
                logits = forward_cached(model, xp.asarray(seq[:, -1:]), cache, step_params)
        else:
            logits = gpt_forward(model.params, xp.asarray(ctx), cfg)[:, -1]
        nxt = sample(logits, rng, temperature, top_k, top_p)
        if stops:
            nxt = np.where(done, next(iter(stops)), nxt)
            done |= np.isin(nxt, list(stops))
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
        if squeeze:
            if done[0]:
                return
            yield int(nxt[0])
        else:
            yield nxt
        if stops and done.all():
            return


def generate(model, ids, max_new_tokens: int, temperature: float = 1.0, top_k=None, top_p=None,
             seed=None, use_cache: bool = True, stop=None, overflow: str = "error"):
    """Prompt plus ``max_new_tokens`` generated tokens, as a NumPy array.

    ids: (T,) or (B, T) ints -> (T + n,) or (B, T + n). Greedy when temperature is 0;
    ``seed`` makes sampling reproducible. With and without ``use_cache`` the output is the same.
    For a 1-D prompt a ``stop`` token ends generation and is not included; with a batch,
    rows that stopped are padded with the stop token until all have stopped.
    """
    prompt, squeeze = check_ids(ids, model.cfg, model.xp, allow_long=overflow == "slide")
    out = list(generate_stream(model, ids, max_new_tokens, temperature, top_k, top_p, seed, use_cache, stop,
                               overflow))
    prompt = to_numpy(prompt)
    if squeeze:
        return np.concatenate([prompt[0], np.asarray(out, dtype=np.int64)])
    new = np.stack(out, axis=1) if out else np.zeros((prompt.shape[0], 0), np.int64)
    return np.concatenate([prompt, new], axis=1)
