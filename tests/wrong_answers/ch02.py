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


# ---- patterns the checks used to miss: types the task states
def windows_float(ids, n_ctx, step):  # right values, float arrays (np.zeros is float by default)
    ids = np.asarray(ids)
    n = (len(ids) - n_ctx - 1) // step + 1
    if len(ids) < n_ctx + 1:
        raise ValueError("too few tokens")
    x, y = np.zeros((n, n_ctx)), np.zeros((n, n_ctx))
    for m in range(n):
        x[m] = ids[m * step:m * step + n_ctx]
        y[m] = ids[m * step + 1:m * step + n_ctx + 1]
    return x, y


CASES += [
    ("make_windows", {"make_windows": windows_float}, "has dtype float64; the task asks for integer arrays"),
]


# ---- correct answers written differently: full marks (tests/test_exercises_wrong.py)
def windows_view(ids, n_ctx, step):
    from numpy.lib.stride_tricks import sliding_window_view
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) < n_ctx + 1:
        raise ValueError("fewer than n_ctx + 1 tokens")
    w = sliding_window_view(ids, n_ctx + 1)[::step]
    return w[:, :-1], w[:, 1:]


def windows_lists(ids, n_ctx, step):  # lists of lists of ints
    if len(ids) < n_ctx + 1:
        raise ValueError("fewer than n_ctx + 1 tokens")
    starts = range(0, len(ids) - n_ctx, step)
    return [list(ids[s:s + n_ctx]) for s in starts], [list(ids[s + 1:s + n_ctx + 1]) for s in starts]


RIGHT = [
    ("make_windows", {"make_windows": windows_view}),
    ("make_windows", {"make_windows": windows_lists}),
]


# ---- diagnoses: each recomputes the loss under one mistake and names it
def _logp(logits):
    z = logits - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def ce_minus_one_as_index(logits, targets):  # -1 picks the last column
    return -np.take_along_axis(_logp(logits), targets[..., None], -1).mean()


def ce_mean_over_all(logits, targets):  # masked out of the sum, but counted in the mean
    keep = targets >= 0
    nll = -np.take_along_axis(_logp(logits), np.where(keep, targets, 0)[..., None], -1)[..., 0]
    return (nll * keep).sum() / targets.size


def sgd_returns_loss_after(model, ids, targets, lr):
    _, grads = model.loss_and_grads(ids, targets)
    p, g = tree_flatten(model.params), tree_flatten(grads)
    for k in p:
        p[k] -= lr * g[k]
    return model.loss(ids, targets)


CASES += [
    ("cross_entropy", {"cross_entropy": ce_minus_one_as_index}, "a target of -1 picked the last token's"),
    ("cross_entropy", {"cross_entropy": ce_mean_over_all}, "you divided by all 10 positions; divide by the 7"),
    ("sgd_step", {"sgd_step": sgd_returns_loss_after}, "that is the loss *after* your step"),
]


# ---- more correct answers written differently: full marks
def ce_logaddexp(logits, targets):  # boolean indexing, NumPy's logaddexp.reduce as the log-sum-exp
    keep = targets >= 0
    z, y = logits[keep], targets[keep]
    return float(np.mean(np.logaddexp.reduce(z, axis=-1) - z[np.arange(len(y)), y]))


def sgd_walk(model, ids, targets, lr):  # walks the nested dicts and the list of blocks itself
    loss, grads = model.loss_and_grads(ids, targets)

    def step(p, g):
        if isinstance(p, dict):
            for k in p:
                step(p[k], g[k])
        elif isinstance(p, list):
            for a, b in zip(p, g):
                step(a, b)
        else:
            p -= lr * g

    step(model.params, grads)
    return float(loss)


RIGHT += [
    ("cross_entropy", {"cross_entropy": ce_logaddexp}),
    ("sgd_step", {"sgd_step": sgd_walk}),
]
