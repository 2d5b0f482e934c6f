"""Chapter 5, Layers (the whole stack): token ids in, next-token logits out, and back.

``forward`` is the one decoder pass everything uses: embed, run the blocks, normalise,
unembed with the same matrix that embedded (tied weights, as in GPT-2 and GPT-3). Its
options cover every use: ``drop`` (dropout while training), ``kv`` (a KV cache while
generating), ``record`` (the residual stream and attention weights for the book's X-ray),
``for_backward`` (keep the caches that ``backward`` consumes). The loss is not part of it:
``losses`` turns the logits into a loss and its gradient, which ``backward`` carries back
to every parameter.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import kernels
from .backend import array_module
from .config import GPTConfig
from .layers import (EmbeddingCache, LayerNormCache, block_backward, block_forward, dropout_backward,
                     dropout_forward, embedding_backward, embedding_forward, layernorm_backward,
                     layernorm_forward, unembed)


class DecoderCache(NamedTuple):
    emb: EmbeddingCache
    drop_emb: object      # (B, T, C) dropout mask of the embedding output, or None
    blocks: list          # n_layer layers.BlockCache (None unless for_backward)
    ln_f: LayerNormCache
    h: object             # (B, T, C) ln_f's output: what the unembedding multiplies


class XRayRecord:
    """What ``forward(record=...)`` collects: ``residuals`` (the stream after the embedding and
    after every block: n_layer + 1 arrays (B, T, C)) and ``attention`` (every layer's weights,
    (B, H, T, T), zero where the layout does not look); either may be switched off (None)."""

    def __init__(self, residuals: bool = True, attention: bool = True):
        self.residuals = [] if residuals else None
        self.attention = [] if attention else None


def forward(params, ids, cfg: GPTConfig, drop=None, kv=None, record: XRayRecord | None = None,
            for_backward: bool = False):
    """The decoder. ids: (B, T) ints -> (logits (B, T, V), DecoderCache).

    ``drop``: a ``layers.Dropout`` (training). ``kv``: a ``generate.KVCache``; ids are then the
    positions kv.length .. kv.length + T - 1, their keys and values are added to it, and only the
    last position's logits are returned: (B, V). ``record``: an ``XRayRecord`` to fill.
    ``for_backward``: keep every block's cache for ``backward``.
    """
    t0 = 0 if kv is None else kv.length
    x, c_emb = embedding_forward(ids, params["wte"], params["wpe"], t0)
    x, m_emb = dropout_forward(x, drop)
    keep_residuals = record is not None and record.residuals is not None
    if keep_residuals:
        record.residuals.append(x)
    caches = [] if for_backward else None
    for layer, block in enumerate(params["h"]):
        x, c = block_forward(x, block, cfg, layer, drop=drop, for_backward=for_backward, kv=kv, record=record)
        if for_backward:
            caches.append(c)
        if keep_residuals:
            record.residuals.append(x)
    if kv is not None:  # generation needs only the next token's distribution
        kv.length = t0 + ids.shape[1]
        x = x[:, -1]
    h, c_lnf = layernorm_forward(x, params["ln_f"], cfg.layer_norm_epsilon)
    return unembed(h, params["wte"]), DecoderCache(c_emb, m_emb, caches, c_lnf, h)


def backward(dlogits, cache: DecoderCache, params) -> dict:
    """Gradients of every parameter from d loss / d logits (B, T, V): a tree shaped like ``params``."""
    h = cache.h
    C = h.shape[-1]
    dl2 = dlogits.reshape(-1, dlogits.shape[-1])
    dwte = kernels.linear(dl2.T, h.reshape(-1, C))  # dl2.T @ h: the unembedding's use of wte
    dh = kernels.linear(dl2, params["wte"]).reshape(h.shape)  # dlogits @ wte
    dx, g_lnf = layernorm_backward(dh, cache.ln_f)
    g_blocks = [None] * len(cache.blocks)
    for i in reversed(range(len(cache.blocks))):
        dx, g_blocks[i] = block_backward(dx, cache.blocks[i])
    dwte_emb, dwpe_used = embedding_backward(dropout_backward(dx, cache.drop_emb), cache.emb)
    dwpe = array_module(dx).zeros_like(params["wpe"])
    dwpe[:dwpe_used.shape[0]] = dwpe_used
    return {"wte": dwte + dwte_emb, "wpe": dwpe, "h": g_blocks, "ln_f": g_lnf}


def gpt_forward(params, ids, cfg: GPTConfig):
    """ids: (B, T) int -> logits (B, T, V)."""
    return forward(params, ids, cfg)[0]


# ---------------------------------------------------------------------- input checks
def check_ids(ids, cfg: GPTConfig, xp, name: str = "ids", allow_long: bool = False):
    """Token ids -> ((B, T) backend int array, was_1d). Raises ValueError/TypeError that name the problem."""
    a = ids
    if isinstance(a, (str, bytes)):
        raise TypeError(f"{name} must be token ids, not text: encode it first, e.g. "
                        "engine.get_encoding('gpt2').encode(text)")
    if isinstance(a, (list, tuple)):
        if len(a) == 0:
            raise ValueError(f"{name} is empty: give at least one token (e.g. the <|endoftext|> id)")
        try:
            a = np.asarray(a)
        except ValueError:  # NumPy refuses ragged nesting
            a = np.empty(0, dtype=object)
        if a.dtype == object:
            raise TypeError(f"{name} must be a rectangular list of integers (every row the same length)")
    elif not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise TypeError(f"{name} must be a list or array of integer token ids, got {type(ids).__name__}")
    kind = np.dtype(a.dtype).kind
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(a.shape)}): give at least one token")
    if kind not in "iu":
        if kind == "U" or kind == "S":
            raise TypeError(f"{name} must be token ids, not text: encode it first, e.g. "
                            "engine.get_encoding('gpt2').encode(text)")
        raise TypeError(f"{name} must be integers, got dtype {a.dtype}")
    if a.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (T,) or (B, T), got {tuple(a.shape)}")
    squeeze = a.ndim == 1
    if squeeze:
        a = a[None, :]
    if a.shape[1] == 0 or a.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(a.shape)}): give at least one token")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= cfg.vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} contains token id {bad}, outside the vocabulary 0 .. {cfg.vocab_size - 1}")
    if a.shape[1] > cfg.n_ctx and not allow_long:
        raise ValueError(f"{name} has {a.shape[1]} positions but the model's context n_ctx is {cfg.n_ctx}; "
                         "shorten it (or in generate pass overflow='slide' to keep the last n_ctx tokens)")
    return xp.asarray(a, dtype=xp.int64), squeeze


def check_targets(targets, ids, cfg, xp):
    """Targets (B, T) or (T,) ints, -1 allowed (ignored) -> (B, T) backend int64, shaped like ``ids``."""
    t = targets if hasattr(targets, "dtype") else np.asarray(targets)
    if np.dtype(t.dtype).kind not in "iu":
        raise TypeError(f"targets must be integers, got dtype {t.dtype}")
    if t.ndim == 1:
        t = t[None, :]
    if tuple(t.shape) != tuple(ids.shape):
        raise ValueError(f"targets shape {tuple(t.shape)} must match ids shape {tuple(ids.shape)}")
    if int(t.max()) >= cfg.vocab_size or int(t.min()) < -1:
        raise ValueError(f"targets must be token ids in 0 .. {cfg.vocab_size - 1} (or -1 to ignore)")
    return xp.asarray(t, dtype=xp.int64)
