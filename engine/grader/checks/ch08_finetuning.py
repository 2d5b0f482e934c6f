"""Chapter 8, Fine-tuning: freeze most parameters, score only the answer, run a few steps."""
from __future__ import annotations

import numpy as np

from ...model import tree_flatten, tree_map
from ..tasks import task
from ..runner import Fail, call, close, describe, number, require_result
from ._util import tiny_model

CH = "08_finetuning"


def ref_freeze_grads(grads, trainable):
    """Gradient tree with every leaf zeroed unless its flat name starts with one of ``trainable``."""
    flat = tree_flatten(grads)
    keep = {k for k in flat if any(k.startswith(p) for p in trainable)}
    out = tree_map(np.zeros_like, grads)
    oflat = tree_flatten(out)
    for k in keep:
        oflat[k][...] = flat[k]
    return out


def answer_targets(prompt, answer):
    """Inputs and targets for one example: every position predicts the next token; only the answer counts."""
    seq = list(prompt) + list(answer)
    x = np.asarray(seq[:-1])[None]
    t = np.asarray(seq[1:])[None].copy()
    t[0, :len(prompt) - 1] = -1
    return x, t


def k_matches(gflat, flat, keep) -> bool:
    """True if ``gflat`` keeps exactly the leaves in ``keep`` and zeroes the others."""
    try:
        return all(np.array_equal(np.asarray(gflat[k]), flat[k] if k in keep else np.zeros_like(flat[k]))
                   for k in flat)
    except Exception:
        return False


# ---------------------------------------------------------------------- freeze_grads
fz = task("freeze_grads", CH, "Freezing all but some parameters", "freeze_grads")


def _fz_case(f, trainable):
    model = tiny_model(60)
    rng = np.random.default_rng(60)
    ids = rng.integers(0, 64, (1, 6))
    _, grads = model.loss_and_grads(ids, np.roll(ids, -1, 1))
    what = f"freeze_grads(grads, trainable={trainable})"
    got = call(f, grads, trainable, name="freeze_grads", arg_names=["grads", "trainable"])
    require_result(got, what)
    try:
        gflat = tree_flatten(got)
    except Exception:
        raise Fail(f"{what} returned {describe(got)}; return a tree shaped like grads (dicts and the list 'h')") from None
    want = tree_flatten(ref_freeze_grads(grads, trainable))
    flat = tree_flatten(grads)
    substr = {k for k in flat if any(q in k for q in trainable)}
    wrong = [k for k in want if k in substr and not any(k.startswith(q) for q in trainable)]
    if wrong and k_matches(gflat, flat, substr):
        raise Fail(f"{what}: leaf {wrong[0]} is frozen (its name does not *start* with any of {trainable}), but "
                   f"you kept its gradient: a name is trainable when it starts with a prefix "
                   "(name.startswith(prefix)), not when it merely contains it (prefix in name)")
    missing = sorted(set(want) - set(gflat))
    if missing:
        raise Fail(f"{what}: the result lacks {missing[0]} (and {len(missing) - 1} more); keep every leaf, "
                   "zeroing the frozen ones")
    for k, w in want.items():
        frozen = not np.any(w)
        close(gflat[k], w, f"{what}, leaf {k}",
              hint=("this parameter is frozen: its gradient must be zero" if frozen else
                    "this parameter is trainable: keep its gradient unchanged"))


@fz.part("zeroes exactly the frozen gradients")
def _(f):
    _fz_case(f, ["ln_f"])
    _fz_case(f, ["h.1.", "wpe"])


@fz.part("nothing trainable; everything trainable")
def _(f):
    _fz_case(f, [])
    _fz_case(f, ["wte", "wpe", "h.", "ln_f"])


@fz.part("names start with a prefix: 'ln' is ln_f, not h.0.ln_1")
def _(f):
    _fz_case(f, ["ln"])
    _fz_case(f, ["w", "h.1.attn"])


# ---------------------------------------------------------------------- answer_loss
al = task("answer_loss", CH, "The task loss: only the answer counts", "answer_loss")


def _loss_or_nan(model, x, t) -> float:
    """model.loss(x, t), or NaN where a mistake leaves nothing to score (every target -1, no position)."""
    try:
        return float(model.loss(x, t)) if x.size and (t >= 0).any() else float("nan")
    except Exception:
        return float("nan")


def _al_case(f, model, prompt, answer):
    x, t = answer_targets(prompt, answer)
    want = model.loss(x, t)
    got = call(f, model, prompt, answer, name="answer_loss", arg_names=["model", "prompt", "answer"])
    hint = ""
    seq = np.asarray(list(prompt) + list(answer))
    try:
        g = float(got)
        full = model.loss(x, seq[None, 1:])
        by_value = np.where(np.isin(seq[1:], answer), seq[1:], -1)[None]
        not_prompt = np.where(np.isin(seq[1:], prompt), -1, seq[1:])[None]
        late = seq[None, 1:].copy()
        late[0, :len(prompt)] = -1
        early = seq[None, 1:].copy()
        early[0, :max(len(prompt) - 2, 0)] = -1
        if abs(g - full) < 1e-9:
            hint = "that scores the prompt too: set the targets of the prompt positions to -1"
        elif abs(g - _loss_or_nan(model, x, by_value)) < 1e-9 or abs(g - _loss_or_nan(model, x, not_prompt)) < 1e-9:
            hint = ("you chose the targets to ignore by their *value* (is the token in the prompt / the answer?); "
                    "choose them by *position*: the first len(prompt) - 1 targets are prompt tokens, whatever "
                    "their ids (the same id can be in both)")
        elif abs(g - _loss_or_nan(model, x, late)) < 1e-9:
            hint = (f"you left out {len(prompt)} targets, one too many: the target at position len(prompt) - 1 = "
                    f"{len(prompt) - 1} is the first answer token (the last prompt token predicts it), so only the "
                    "first len(prompt) - 1 targets are -1")
        elif len(prompt) > 1 and abs(g - _loss_or_nan(model, x, early)) < 1e-9:
            hint = (f"you left out only {max(len(prompt) - 2, 0)} targets: the first len(prompt) - 1 = "
                    f"{len(prompt) - 1} targets are prompt tokens and must all be -1")
        elif abs(g - _loss_or_nan(model, np.asarray(answer[:-1])[None], np.asarray(answer[1:])[None])) < 1e-9:
            hint = ("that scores the answer on its own: the model must read the prompt first, so feed prompt + "
                    "answer and set the prompt's targets to -1")
    except Exception:
        pass
    number(got, want, f"answer_loss(model, prompt={prompt}, answer={answer})", rtol=1e-6, hint=hint or
           "inputs are prompt + answer without the last token, targets the same shifted by one, "
           "with -1 at the positions whose next token is still prompt")


@al.part("matches the masked cross-entropy", points=2)
def _(f):
    model = tiny_model(61)
    for prompt, answer in [([3, 4, 5, 6], [7, 8]), ([1, 2], [9]), ([10, 11, 12], [13, 14, 15, 16])]:
        _al_case(f, model, prompt, answer)


@al.part("by position: the same ids in the prompt and the answer")
def _(f):
    model = tiny_model(61)
    for prompt, answer in [([3, 7, 5], [5, 3, 5]), ([4, 4, 4], [4, 9]), ([2, 6], [6, 2, 6])]:
        _al_case(f, model, prompt, answer)


# ---------------------------------------------------------------------- finetune
ft = task("finetune", CH, "A few fine-tuning steps", "finetune")
EXAMPLES = [([3, 4, 5, 6], [7, 8]), ([1, 2, 3], [9, 9]), ([10, 11], [12])]


def _ft_run(f, trainable, steps=5, lr=0.5):
    model = tiny_model(62)
    before = tree_flatten(tree_map(np.copy, model.params))
    losses = call(f, model, EXAMPLES, trainable, steps, lr, name="finetune",
                  arg_names=["model", "examples", "trainable", "steps", "lr"], timeout=60, may_mutate=True)
    return model, before, losses


def _mean_task_loss(model):
    return float(np.mean([model.loss(*answer_targets(p, a)) for p, a in EXAMPLES]))


@ft.part("frozen parameters stay as they were")
def _(f):
    model, before, _ = _ft_run(f, ["ln_f", "h.1.mlp"])
    after = tree_flatten(model.params)
    changed = [k for k in before if not any(k.startswith(p) for p in ["ln_f", "h.1.mlp"])
               and not np.array_equal(before[k], after[k])]
    if changed:
        raise Fail(f"finetune(..., trainable=['ln_f', 'h.1.mlp']) changed the frozen parameter {changed[0]} "
                   f"(and {len(changed) - 1} more): update only the trainable ones (freeze_grads)")
    moved = [k for k in before if k.startswith(("ln_f", "h.1.mlp")) and not np.array_equal(before[k], after[k])]
    if not moved:
        raise Fail("finetune(..., trainable=['ln_f', 'h.1.mlp']) changed no parameter at all: "
                   "subtract lr * grad from the trainable parameters in model.params")


@ft.part("the task loss fell", points=2)
def _(f):
    start = _mean_task_loss(tiny_model(62))
    model, _, losses = _ft_run(f, ["ln_f", "h.1."])
    end = _mean_task_loss(model)
    if not end < start - 1e-3:
        raise Fail(f"after finetune(model, examples, trainable=['ln_f', 'h.1.'], steps=5, lr=0.5) the mean answer "
                   f"loss went from {start:.4f} to {end:.4f}; it should fall")
    if losses is None or not hasattr(losses, "__len__") or len(losses) != 5:
        raise Fail(f"finetune should return the list of the {5} per-step losses, got {describe(losses)}")
    try:
        first = float(losses[0])
    except Exception:
        raise Fail(f"finetune's losses should be numbers, got {describe(losses)}") from None
    if abs(first - start) > 1e-6 * abs(start):
        raise Fail(f"the first loss finetune returned is {first:.6f}, but the mean answer loss of the examples "
                   f"before training is {start:.6f}: return, for each step, the mean answer_loss over the "
                   "examples before that step's update")


def _ref_ft_step(model, examples, trainable, lr, mean=True):
    """The parameters after one step of the reference loop (mean, or with ``mean=False`` the sum, of the gradients)."""
    acc = None
    for prm, ans in examples:
        _, grads = model.loss_and_grads(*answer_targets(prm, ans))
        g = tree_flatten(ref_freeze_grads(grads, trainable))
        acc = g if acc is None else {k: acc[k] + g[k] for k in acc}
    n = len(examples) if mean else 1
    return {k: v - lr * acc[k] / n for k, v in tree_flatten(model.params).items()}


@ft.part("the size of a step: p - lr * (mean gradient)")
def _(f):
    trainable = ["ln_f", "h.1."]
    for steps, lr in [(1, 0.1), (1, 0.3)]:
        ref = tiny_model(62)
        want, summed = _ref_ft_step(ref, EXAMPLES, trainable, lr), _ref_ft_step(ref, EXAMPLES, trainable, lr, False)
        model = tiny_model(62)
        call(f, model, EXAMPLES, trainable, steps, lr, name="finetune",
             arg_names=["model", "examples", "trainable", "steps", "lr"], timeout=60, may_mutate=True)
        got = tree_flatten(model.params)
        what = f"finetune(model, examples, trainable={trainable}, steps={steps}, lr={lr})"
        if all(np.allclose(got[k], summed[k], rtol=1e-7, atol=1e-10) for k in want) and \
                not all(np.allclose(got[k], want[k], rtol=1e-7, atol=1e-10) for k in want):
            raise Fail(f"{what}: you summed the examples' gradients, so the step is {len(EXAMPLES)} times too "
                       f"big; average them (divide by len(examples) = {len(EXAMPLES)})")
        for k in want:
            close(got[k], want[k], f"{what}: parameter {k} after one step", rtol=1e-7, atol=1e-10,
                  hint="one step is p <- p - lr * g, g the *mean* over the examples of their (frozen) gradients")
