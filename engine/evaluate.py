"""Chapter 2, Training: how good a model is on text it has not seen.

Held-out text is cut into windows of n_ctx tokens (``eval_windows``: each token predicted once),
every target's negative log-likelihood is summed, and the total is reported per token (nats) and
per byte of the text predicted (bits per byte, ``bits_per_byte``): a measure that does not depend
on the tokenizer, so models with different vocabularies compare. ``evaluate_ensemble`` scores the
average of several models' predictions (what distillation aims at).
"""
from __future__ import annotations

import math

import numpy as np

from .backend import to_numpy
from .data import sliding_windows
from .losses import token_nll

LN2 = math.log(2.0)


def bits_per_byte(nats, nbytes):
    """Total nats over the text -> bits per byte of it: nats / ln 2 / bytes (floats or arrays)."""
    return nats / LN2 / nbytes


def target_bytes(enc, targets: np.ndarray) -> np.ndarray:
    """Length in bytes of each target token (0 for special tokens and masked -1)."""
    n = enc.n_vocab
    lengths = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        try:
            lengths[i] = len(enc.decode_single_token_bytes(i))
        except KeyError:
            lengths[i] = 0
    if enc.eot_token is not None and enc.eot_token < n:
        lengths[enc.eot_token] = 0
    return lengths[np.where(targets < 0, n, targets)]


def eval_windows(ids, n_ctx: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The windows evaluation scores, each token once. ids: (N,) -> x, y: (M, n_ctx), y = -1 where not scored.

    ``stride`` None (or n_ctx): non-overlapping windows, so a token sees on average n_ctx / 2
    tokens of context and the first of each window only itself. ``stride`` < n_ctx: a window every
    ``stride`` tokens, each scoring only its last ``stride`` targets (the first window scores all
    of its own), so every token after the first window is predicted from at least
    ``n_ctx - stride`` tokens of context, for n_ctx / stride times the compute.
    """
    stride = n_ctx if stride is None else int(stride)
    if not 1 <= stride <= n_ctx:
        raise ValueError(f"stride must be between 1 and n_ctx = {n_ctx}, got {stride}")
    x, y = sliding_windows(ids, n_ctx, step=stride)
    if stride < n_ctx:
        y = y.copy()  # y and x are views of the same windows
        y[1:, :n_ctx - stride] = -1  # scored by the window before
    return x, y


def windows_for(model, ids, enc, max_windows=None, stride=None):
    """``eval_windows`` for ``model``'s context, the first ``max_windows`` of them, ``<|endoftext|>`` not scored."""
    x, y = eval_windows(ids, model.cfg.n_ctx, stride)
    if max_windows is not None:
        x, y = x[:max_windows], y[:max_windows]
    if enc is not None and enc.eot_token is not None:
        y = np.where(y == enc.eot_token, -1, y)
    return x, y


def evaluate(model, ids: np.ndarray, enc=None, max_windows: int | None = None, batch_size: int = 8,
             progress: bool = False, stride: int | None = None) -> dict:
    """Mean loss on a token stream, cut into windows of n_ctx (``eval_windows``: each token predicted once).

    Returns {'loss': nats/token, 'tokens': int, 'bytes': int, 'bpb': bits/byte} (bytes and bpb only
    with ``enc``: bits per byte = total nats / ln 2 / UTF-8 bytes of the predicted tokens; the
    ``<|endoftext|>`` separators are not scored). ``stride``: overlapping windows, so that every
    token has at least n_ctx - stride tokens of context (None: non-overlapping windows).
    """
    x, y = windows_for(model, ids, enc, max_windows, stride)
    total, count = 0.0, 0
    it = range(0, len(x), batch_size)
    if progress:
        from tqdm.auto import tqdm  # only when asked for: it is slow to import

        it = tqdm(it, desc="eval", leave=False)
    for i in it:
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        n = int((yb >= 0).sum())
        if n == 0:
            continue
        total += model.loss(xb, yb) * n
        count += n
    out = {"loss": total / count, "tokens": count}
    if enc is not None:
        nbytes = int(target_bytes(enc, y).sum())
        out["bytes"] = nbytes
        out["bpb"] = bits_per_byte(total, nbytes)
    return out


def token_losses(model, ids, targets) -> np.ndarray:
    """Negative log-likelihood of every target. ids, targets: (B, T) -> (B, T) float64 nats (NaN where target is -1)."""
    xp, targets = model.xp, np.asarray(targets)
    if not (targets >= 0).any():
        return np.full(targets.shape, np.nan)
    logits = model.forward(ids).astype(xp.float64)  # float64: sums over many tokens lose nothing
    nll = token_nll(logits, xp.asarray(targets))  # the loss's own log-softmax
    return np.where(targets >= 0, to_numpy(nll), np.nan)


def loss_by_position(model, ids: np.ndarray, enc=None, max_windows: int | None = None,
                     batch_size: int = 8) -> dict:
    """Mean loss at each position of the non-overlapping evaluation windows: how much the context helps.

    Position t is predicted from t + 1 tokens (itself and the t before it). Returns
    {'loss': (n_ctx,) nats/token, 'tokens': (n_ctx,) tokens scored at each position}; their
    token-weighted mean is ``evaluate``'s loss on the same windows.
    """
    x, y = windows_for(model, ids, enc, max_windows, None)
    total = np.zeros(x.shape[1])
    for i in range(0, len(x), batch_size):
        total += np.nansum(token_losses(model, x[i:i + batch_size], y[i:i + batch_size]), axis=0)
    tokens = (y >= 0).sum(axis=0)
    return {"loss": total / np.maximum(tokens, 1), "tokens": tokens}


def evaluate_ensemble(models, ids, enc=None, batch_size: int = 8) -> dict:
    """Held-out loss of the models' averaged next-token probabilities (what distillation aims at).

    Same windows and counting as ``evaluate`` (non-overlapping; ``<|endoftext|>`` not scored).
    Returns {'loss': nats/token, 'tokens', 'bytes', 'bpb', 'each': [each model's loss]}.
    """
    x, y = windows_for(models[0], ids, enc, None, None)
    total, each = 0.0, np.zeros(len(models))
    for i in range(0, len(x), batch_size):
        scored = y[i:i + batch_size] >= 0
        nll = np.stack([token_losses(m, x[i:i + batch_size], y[i:i + batch_size])[scored] for m in models])
        each += nll.sum(axis=1)
        # -log of the mean probability, computed from the log-probabilities without underflow
        total += float((np.log(len(models)) - np.logaddexp.reduce(-nll, axis=0)).sum())
    n = int((y >= 0).sum())
    out = {"loss": total / n, "tokens": n, "each": list(each / n)}
    if enc is not None:
        out["bytes"] = int(target_bytes(enc, y).sum())
        out["bpb"] = bits_per_byte(total, out["bytes"])
        out["each_bpb"] = list(bits_per_byte(each, out["bytes"]))
    return out
