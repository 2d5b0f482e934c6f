"""Wrong answers for chapter 2, Training."""
import numpy as np

from engine.model import tree_flatten


def windows_no_shift(ids, n_ctx, step):  # targets = inputs
    ids = np.asarray(ids)
    w = np.stack([ids[s:s + n_ctx] for s in range(0, len(ids) - n_ctx, step)])
    return w, w


def windows_too_many(ids, n_ctx, step):  # runs past the end: last window lacks its target
    ids = np.asarray(list(ids) + [0] * n_ctx)
    n = len(ids) - 2 * n_ctx
    w = np.stack([ids[s:s + n_ctx + 1] for s in range(0, n + 1, step)])
    return w[:, :-1], w[:, 1:]


def ce_sum(logits, targets):  # sum instead of mean, unstable
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return -np.log(np.take_along_axis(p, targets[..., None], -1)).sum()


def ce_unstable(logits, targets):
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return -np.log(np.take_along_axis(p, targets[..., None], -1)).mean()


def sgd_uphill(model, ids, targets, lr):
    loss, grads = model.loss_and_grads(ids, targets)
    p, g = tree_flatten(model.params), tree_flatten(grads)
    for k in p:
        p[k] += lr * g[k]
    return loss


def sgd_rebinds(model, ids, targets, lr):  # updates a flat copy: the model never changes
    loss, grads = model.loss_and_grads(ids, targets)
    p, g = tree_flatten(model.params), tree_flatten(grads)
    p = {k: v - lr * g[k] for k, v in p.items()}
    return loss


CASES = [
    ("make_windows", {"make_windows": windows_no_shift}, "the targets are the *next* tokens"),
    ("make_windows", {"make_windows": windows_too_many}, "windows, expected"),
    ("cross_entropy", {"cross_entropy": ce_sum}, "you returned the sum"),
    ("cross_entropy", {"cross_entropy": ce_unstable}, "subtract each row's maximum"),
    ("sgd_step", {"sgd_step": sgd_uphill}, "moved *up* the gradient"),
    ("sgd_step", {"sgd_step": sgd_rebinds}, "did not change"),
]
