"""Chapter 2, Training (continued): learning from other models' predictions (knowledge distillation).

A corpus the size of Shakespeare's works is small for a language model: after a few passes over it
a model starts to learn its training text by heart, and two models trained the same way disagree on
new text in ways that cancel when their predictions are averaged. Distillation (Hinton, Vinyals and
Dean 2015, "Distilling the Knowledge in a Neural Network") passes that average on to one model: the
student is trained on the teachers' whole next-token distribution (which words were *almost* right),
not only on the one token that came next.

Target at each position (V vocabulary ids, p the teachers' averaged probabilities, kept to their
``k`` most likely tokens, whose mass is s <= 1)::

    q = alpha * p_topk + (1 - alpha * s) * onehot(next token)

so q sums to 1, and the loss is the cross-entropy -sum_v q_v log softmax(z)_v (``engine.losses``). Its
gradient with respect to the logits is softmax(z) - q, as for the ordinary loss with a one-hot q.

The teachers' targets are computed once, before training (``teacher_targets``), for every position
of the training stream, so a step costs no more than an ordinary one.
"""
from __future__ import annotations

import numpy as np

from .backend import to_numpy
from .evaluate import eval_windows, evaluate_ensemble  # noqa: F401  (re-exported: the tests import it from here)
from .layers import softmax
# the loss itself lives with the others; re-exported for chapter 2 of the book
from .losses import distill_cross_entropy_backward, distill_cross_entropy_forward  # noqa: F401


# ---------------------------------------------------------------------- the teachers' targets
def teacher_targets(teachers, ids, k: int = 32, stride: int | None = None, batch_size: int = 8,
                    progress: bool = False):
    """The teachers' averaged next-token distribution at every position of a token stream, top-k.

    teachers: GPT models sharing one tokenizer and context length; ids: (N,) the training stream.
    Row j is the prediction of ids[j + 1] from the tokens up to j, read from non-overlapping windows
    (``stride`` None), or from a window every ``stride`` tokens, so that every position past the
    first window has at least n_ctx - stride tokens of context. Returns (idx (N, k) int16/int32, p (N, k) float16); the
    last row, and any the windows do not reach, are all zero (there: the one-hot target).
    """
    if not teachers:
        raise ValueError("distillation needs at least one teacher model")
    n_ctx, V = teachers[0].cfg.n_ctx, teachers[0].cfg.vocab_size
    for t in teachers[1:]:
        if (t.cfg.n_ctx, t.cfg.vocab_size) != (n_ctx, V):
            raise ValueError(f"teachers disagree on n_ctx / vocab_size: {(t.cfg.n_ctx, t.cfg.vocab_size)} vs "
                             f"{(n_ctx, V)}; they must share the student's tokenizer")
    if not 1 <= k <= V:
        raise ValueError(f"k must be between 1 and the vocabulary size {V}, got {k}")
    ids = np.asarray(ids)
    stride = n_ctx if stride is None else stride
    x, y = eval_windows(ids, n_ctx, stride)
    N = len(ids)
    out_idx = np.zeros((N, k), dtype=np.int16 if V <= np.iinfo(np.int16).max else np.int32)
    out_p = np.zeros((N, k), dtype=np.float16)
    it = range(0, len(x), batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="teachers", unit="batch")
    pos = np.arange(n_ctx)
    for i in it:
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        prob = None
        for t in teachers:
            e = softmax(t.forward(xb))
            prob = e if prob is None else prob + e
        prob = to_numpy(prob) / len(teachers)                    # (b, T, V)
        top = np.argpartition(prob, V - k, axis=-1)[..., V - k:] if k < V else np.broadcast_to(
            np.arange(V), prob.shape).copy()
        ptop = np.take_along_axis(prob, top, axis=-1)
        rows = (np.arange(i, i + len(xb)) * stride)[:, None] + pos[None, :]   # stream position of each input
        keep = yb >= 0
        out_idx[rows[keep]] = top[keep]
        out_p[rows[keep]] = ptop[keep]
    return out_idx, out_p


def gather_targets(soft, starts, n_ctx: int):
    """The rows of ``teacher_targets`` for windows starting at ``starts``: (B,) -> idx, p (B, n_ctx, k)."""
    idx, p = soft
    rows = np.asarray(starts)[:, None] + np.arange(n_ctx)[None, :]
    return idx[rows], p[rows]
