"""Chapter 2, Training: sliding-window examples, cross-entropy, one gradient step."""
from __future__ import annotations

import numpy as np

from ...data import sliding_windows
from ...losses import cross_entropy_forward, log_softmax
from ...model import tree_flatten
from ..tasks import task
from ..runner import Fail, call, close, number
from ._util import matches, pair, tiny_model

CH = "02_training"

# ---------------------------------------------------------------------- make_windows
windows = task("make_windows", CH, "Sliding-window examples", "make_windows")


def _check_windows(f, ids, n_ctx, step):
    what = f"make_windows(ids of {len(ids)} tokens, n_ctx={n_ctx}, step={step})"
    got = pair(call(f, ids, n_ctx, step, name="make_windows", arg_names=["ids", "n_ctx", "step"]), what)
    x_want, y_want = sliding_windows(np.asarray(ids), n_ctx, step)
    n = x_want.shape[0]
    x = np.asarray(got[0]) if got[0] is not None else None
    if x is not None and x.ndim == 2 and x.shape[0] != n and x.shape[1] == n_ctx:
        raise Fail(f"{what} made {x.shape[0]} windows, expected {n}: windows start at 0, step, 2*step, ... "
                   "as long as n_ctx + 1 tokens (inputs and the one extra target) still fit")
    close(got[0], x_want, what + " inputs x")
    y = np.asarray(got[1]) if got[1] is not None else None
    if y is not None and y.shape == x_want.shape and np.array_equal(y, x_want):
        raise Fail(f"{what}: y equals x; the targets are the *next* tokens, x shifted left by one")
    close(got[1], y_want, what + " targets y", hint="y[m, t] is the token right after x[m, t]")
    for name, arr in (("x", got[0]), ("y", got[1])):
        dt = np.asarray(arr).dtype
        if dt.kind not in "iu":
            raise Fail(f"{what}: {name} has dtype {dt}; the task asks for integer arrays (token ids index the "
                       "embedding table, and model.loss rejects float ids): build them with an integer dtype, "
                       "e.g. np.asarray(ids, dtype=np.int64), not np.zeros(...) (float by default)")


@windows.part("non-overlapping windows (step = n_ctx)")
def _(f):
    rng = np.random.default_rng(1)
    for n, n_ctx in [(41, 8), (30, 4), (100, 16)]:
        _check_windows(f, [int(i) for i in rng.integers(0, 500, n)], n_ctx, n_ctx)


@windows.part("overlapping windows (step < n_ctx)")
def _(f):
    rng = np.random.default_rng(2)
    for n, n_ctx, step in [(20, 5, 1), (37, 8, 3)]:
        _check_windows(f, [int(i) for i in rng.integers(0, 500, n)], n_ctx, step)


@windows.part("edge cases: exactly n_ctx + 1 tokens; too few tokens")
def _(f):
    _check_windows(f, [5, 6, 7, 8, 9], 4, 4)
    try:
        call(f, [1, 2, 3], 4, 4, name="make_windows", arg_names=["ids", "n_ctx", "step"])
    except Fail as e:
        if "raised ValueError" in str(e):
            return
        raise
    raise Fail("make_windows(ids=[1, 2, 3], n_ctx=4, step=4) should raise ValueError: three tokens do not "
               "fill one window of n_ctx + 1 = 5 (raise ValueError('...') with a message)")


# ---------------------------------------------------------------------- cross_entropy
ce = task("cross_entropy", CH, "Cross-entropy of a batch", "cross_entropy")


def _ce_case(f, logits, targets, hint=""):
    what = f"cross_entropy(logits {logits.shape}, targets {targets.shape})"
    want = float(cross_entropy_forward(logits, targets)[0])
    got = call(f, logits, targets, name="cross_entropy", arg_names=["logits", "targets"])
    if got is not None:  # a recognised mistake's hint wins over the part's general one
        n = int((targets >= 0).sum())
        try:
            g = float(got)
        except Exception:
            g = None
        if g is not None and abs(g - want * n) < 1e-6 * abs(want * n) and n > 1:
            hint = "you returned the sum; the loss is the mean over the counted positions"
        elif g is not None and abs(g + want) < 1e-6 * abs(want):
            hint = "the sign is wrong: the loss is the *negative* log-probability"
        elif g is not None and n < targets.size:
            hint = _ignored_targets_hint(g, logits, targets) or hint
    number(got, want, what, rtol=1e-6, hint=hint)


def _ignored_targets_hint(g, logits, targets) -> str:
    """The hint for the two usual ways of getting the -1 targets wrong, recomputed and compared with ``g``."""
    keep = targets >= 0
    nll = -np.take_along_axis(log_softmax(logits), np.where(keep, targets, 0)[..., None], -1)[..., 0]
    as_index = -np.take_along_axis(log_softmax(logits), targets[..., None], -1)[..., 0].mean()  # -1: the last id
    if abs(g - as_index) < 1e-6 * abs(as_index):
        return ("a target of -1 picked the last token's log-probability (index -1 counts from the end in NumPy): "
                "leave the positions whose target is -1 out of both the sum and the count")
    over_all = (nll * keep).sum() / targets.size
    if abs(g - over_all) < 1e-6 * abs(over_all):
        return (f"you divided by all {targets.size} positions; divide by the {int(keep.sum())} that count "
                "(the targets that are not -1)")
    return ""


@ce.part("random batches")
def _(f):
    rng = np.random.default_rng(3)
    for B, T, V in [(1, 1, 5), (2, 3, 7), (4, 8, 50)]:
        _ce_case(f, rng.standard_normal((B, T, V)) * 2, rng.integers(0, V, (B, T)))


@ce.part("huge logits (numerically stable)")
def _(f):
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((2, 4, 10)) * 1000
    _ce_case(f, logits, rng.integers(0, 10, (2, 4)),
             hint="for logits near 1000, exp overflows: subtract each row's maximum first "
                  "(log-sum-exp: log sum exp(z) = m + log sum exp(z - m))")


@ce.part("targets of -1 do not count")
def _(f):
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((2, 5, 9))
    t = rng.integers(0, 9, (2, 5))
    t[0, :2] = -1
    t[1, 4] = -1
    _ce_case(f, logits, t, hint="positions whose target is -1 are left out of both the sum and the count")


# ---------------------------------------------------------------------- sgd_step
sgd = task("sgd_step", CH, "One gradient step", "sgd_step")


def _sgd_setup(seed):
    model = tiny_model(seed)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, model.cfg.vocab_size, (2, 8))
    targets = np.roll(ids, -1, axis=1)
    return model, ids, targets


@sgd.part("returns the loss before the step")
def _(f):
    model, ids, targets = _sgd_setup(6)
    want = model.loss(ids, targets)
    got = call(f, model, ids, targets, 0.1, name="sgd_step", arg_names=["model", "ids", "targets", "lr"],
               may_mutate=True)
    hint = "return the loss that model.loss_and_grads gave, computed before you changed the weights"
    try:
        after = model.loss(ids, targets)  # the learner's step has been taken on `model`
        if abs(float(got) - after) < 1e-9 * abs(after) and abs(after - want) > 1e-9 * abs(want):
            hint = ("that is the loss *after* your step (model.loss once the weights moved): return the loss that "
                    "model.loss_and_grads gave, computed before you changed the weights")
    except Exception:
        pass
    number(got, want, "sgd_step(model, ids, targets, lr=0.1)", rtol=1e-6, hint=hint)


@sgd.part("moves every parameter by -lr * gradient")
def _(f):
    model, ids, targets = _sgd_setup(7)
    ref = tiny_model(7)
    _, grads = ref.loss_and_grads(ids, targets)
    before = tree_flatten(ref.params)
    g = tree_flatten(grads)
    call(f, model, ids, targets, 0.05, name="sgd_step", arg_names=["model", "ids", "targets", "lr"],
         may_mutate=True)
    after = tree_flatten(model.params)
    for name, p0 in before.items():
        got = np.asarray(after.get(name))
        want = p0 - 0.05 * g[name]
        if matches(got, p0 + 0.05 * g[name], rtol=1e-9, atol=1e-12) and not matches(got, want, rtol=1e-9, atol=1e-12):
            raise Fail(f"parameter {name} moved *up* the gradient: subtract lr * grad to go downhill")
        if got.shape == p0.shape and np.array_equal(got, p0) and np.any(g[name] != 0):
            raise Fail(f"parameter {name} did not change: update model.params (e.g. p -= lr * g for every "
                       "matching pair of leaves, walking the nested dicts and the list of blocks)")
        close(got, want, f"after sgd_step, parameter {name}", rtol=1e-7, atol=1e-10)


@sgd.part("the loss fell")
def _(f):
    model, ids, targets = _sgd_setup(8)
    before = model.loss(ids, targets)
    call(f, model, ids, targets, 0.5, name="sgd_step", arg_names=["model", "ids", "targets", "lr"],
         may_mutate=True)
    after = model.loss(ids, targets)
    if not after < before:
        raise Fail(f"the loss went from {before:.4f} to {after:.4f} after sgd_step(..., lr=0.5); "
                   "one step downhill on the same batch should lower it")
