"""Chapters 2 and 5: the losses a decoder is trained on, each a forward/backward pair on the logits.

``cross_entropy_forward``: the mean negative log-likelihood of the next tokens (the language-model
loss). ``distill_cross_entropy_forward``: the same against a mixed target that also holds teachers'
predictions (knowledge distillation, Hinton, Vinyals and Dean 2015; see ``engine.distill``)::

    q = alpha * p_topk + (1 - alpha * s) * onehot(next token)

with p the teachers' averaged probabilities kept to their ``k`` most likely tokens, whose mass is
s <= 1, so q sums to 1; the loss is -sum_v q_v log softmax(z)_v and its gradient with respect to
the logits is softmax(z) - q, as for the ordinary loss with a one-hot q.

Both are computed from one log-softmax (``layers.log_softmax``'s formula, as ``kernels.log_softmax``). Shapes: logits (B, T, V);
targets (B, T) ints, -1 where a position does not count.
"""
from __future__ import annotations

from typing import NamedTuple

from .backend import array_module
from . import grad_kernels
from .kernels import log_softmax  # layers.log_softmax's formula, the rows cut across cores


class CrossEntropyCache(NamedTuple):
    logp: object    # (B, T, V) log-probabilities
    safe: object    # (B, T) targets with -1 replaced by 0 (for indexing)
    mask: object    # (B, T) bool: the positions that count
    n: int          # how many count


class DistillCache(NamedTuple):
    ce: CrossEntropyCache
    idx: object     # (B, T, k) teacher token ids
    p: object       # (B, T, k) alpha * teacher probabilities
    hard: object    # (B, T) weight of the one-hot target: 1 - alpha * s


def _log_probs(logits, targets) -> CrossEntropyCache:
    xp = array_module(logits)
    mask = targets >= 0
    n = int(mask.sum())
    if n == 0:
        raise ValueError("cross_entropy: every target is -1 (masked); nothing to score")
    return CrossEntropyCache(log_softmax(logits), xp.where(mask, targets, 0), mask, n)


def picked(logp, safe):
    """log p of each target: logp (B, T, V), safe (B, T) -> (B, T)."""
    return array_module(logp).take_along_axis(logp, safe[..., None], axis=-1)[..., 0]


def cross_entropy_forward(logits, targets):
    """Mean negative log-likelihood of ``targets`` under softmax(logits).

    logits: (B, T, V); targets: (B, T) int, where -1 marks a position that does not count.
    Returns (loss (scalar), CrossEntropyCache).
    """
    c = _log_probs(logits, targets)
    loss = -(picked(c.logp, c.safe) * c.mask).sum() / c.n
    return loss, c


def token_nll(logits, targets):
    """Negative log-likelihood of every target, the loss's own log-softmax. (B, T, V), (B, T) -> (B, T)
    (0 where the target is -1)."""
    c = _log_probs(logits, targets)
    return -picked(c.logp, c.safe)


def cross_entropy_backward(dloss, cache: CrossEntropyCache):
    """d loss / d logits: (softmax - onehot) * dloss / n at the positions that count. -> (B, T, V)"""
    return _softmax_minus(dloss, cache, None)


def _softmax_minus(dloss, c: CrossEntropyCache, dc: DistillCache | None):
    """(softmax - q) * dloss / n at the positions that count, 0 elsewhere: ``grad_kernels.softmax_minus``."""
    xp = array_module(c.logp)
    dt = c.logp.dtype
    scale = (c.mask[..., None] * (dloss / c.n)).astype(dt)  # (B, T, 1)
    hard = xp.ones(c.safe.shape + (1,), dtype=dt) if dc is None else dc.hard[..., None].astype(dt)
    soft = () if dc is None else (dc.idx, dc.p.astype(dt))
    return grad_kernels.softmax_minus(c.logp, scale, c.safe[..., None], hard, *soft)


def distill_cross_entropy_forward(logits, targets, soft_idx, soft_p, alpha: float):
    """Mean cross-entropy against the mixed target q above.

    logits: (B, T, V); targets: (B, T) int (-1: not scored); soft_idx: (B, T, k) int token ids
    (distinct within a row); soft_p: (B, T, k) their teacher probabilities (a row may be all zero:
    then q is the one-hot target). Returns (loss (scalar), DistillCache).
    """
    c = _log_probs(logits, targets)
    xp = array_module(c.logp)
    p = xp.asarray(soft_p, dtype=c.logp.dtype) * c.logp.dtype.type(alpha)   # alpha * p_topk
    idx = xp.asarray(soft_idx, dtype=xp.int64)
    hard = 1.0 - p.sum(axis=-1)                                               # 1 - alpha * s
    soft = (p * xp.take_along_axis(c.logp, idx, axis=-1)).sum(axis=-1)
    loss = -((hard * picked(c.logp, c.safe) + soft) * c.mask).sum() / c.n
    return loss, DistillCache(c, idx, p, hard)


def distill_cross_entropy_backward(dloss, cache: DistillCache):
    """d loss / d logits: (softmax - q) * dloss / n at the positions that count. -> (B, T, V)"""
    return _softmax_minus(dloss, cache.ce, cache)
