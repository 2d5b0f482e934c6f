"""Wrong answers for chapter 8, Fine-tuning."""
import numpy as np

from engine.grader.checks.ch08_finetuning import answer_targets, ref_freeze_grads
from engine.model import tree_flatten


def freeze_inverted(grads, trainable):  # zeroes the trainable ones instead
    out = ref_freeze_grads(grads, trainable)
    fo, fg = tree_flatten(out), tree_flatten(grads)
    for k in fo:
        fo[k][...] = 0.0 if np.any(fo[k]) else fg[k]
    return out


def freeze_in_place(grads, trainable):
    for k, g in tree_flatten(grads).items():
        if not any(k.startswith(p) for p in trainable):
            g[...] = 0.0
    return grads


def loss_whole_sequence(model, prompt, answer):
    seq = list(prompt) + list(answer)
    return model.loss(np.asarray(seq[:-1])[None], np.asarray(seq[1:])[None])


def finetune_all(model, examples, trainable, steps, lr):  # ignores `trainable`
    losses, p = [], tree_flatten(model.params)
    for _ in range(steps):
        tot = 0.0
        for prompt, answer in examples:
            loss, g = model.loss_and_grads(*answer_targets(prompt, answer))
            g = tree_flatten(g)
            for k in p:
                p[k] -= lr * g[k] / len(examples)
            tot += loss
        losses.append(tot / len(examples))
    return losses


def finetune_nothing(model, examples, trainable, steps, lr):
    return [1.0] * steps


CASES = [
    ("freeze_grads", {"freeze_grads": freeze_inverted}, "this parameter is"),
    ("freeze_grads", {"freeze_grads": freeze_in_place}, "changed its input `grads` in place"),
    ("answer_loss", {"answer_loss": loss_whole_sequence}, "scores the prompt too"),
    ("finetune", {"finetune": finetune_all}, "changed the frozen parameter"),
    ("finetune", {"finetune": finetune_nothing}, "changed no parameter at all"),
]


# ---- patterns the checks used to miss: names sharing a prefix, positions vs values, the size of a step
def freeze_substring(grads, trainable):  # `p in name` instead of name.startswith(p)
    out = ref_freeze_grads(grads, [])
    fo, fg = tree_flatten(out), tree_flatten(grads)
    for k in fo:
        if any(p in k for p in trainable):
            fo[k][...] = fg[k]
    return out


def loss_mask_by_value(model, prompt, answer):  # ignores targets whose id is in the prompt
    seq = list(prompt) + list(answer)
    t = np.asarray([s if s not in prompt else -1 for s in seq[1:]])
    if (t < 0).all():
        t = np.asarray([s if s in answer else -1 for s in seq[1:]])
    return model.loss(np.asarray(seq[:-1])[None], t[None])


def loss_keep_answer_values(model, prompt, answer):  # keeps targets whose id is in the answer
    seq = list(prompt) + list(answer)
    t = np.asarray([s if s in answer else -1 for s in seq[1:]])
    return model.loss(np.asarray(seq[:-1])[None], t[None])


def finetune_summed(model, examples, trainable, steps, lr):  # sums the gradients instead of averaging
    losses, p = [], tree_flatten(model.params)
    for _ in range(steps):
        acc, tot = None, 0.0
        for prompt, answer in examples:
            loss, g = model.loss_and_grads(*answer_targets(prompt, answer))
            g = tree_flatten(ref_freeze_grads(g, trainable))
            acc = g if acc is None else {k: acc[k] + g[k] for k in acc}
            tot += loss
        for k in p:
            p[k] -= lr * acc[k]
        losses.append(tot / len(examples))
    return losses


CASES += [
    ("freeze_grads", {"freeze_grads": freeze_substring}, "not when it merely contains it"),
    ("answer_loss", {"answer_loss": loss_mask_by_value}, "choose them by *position*"),
    ("answer_loss", {"answer_loss": loss_keep_answer_values}, "choose them by *position*"),
    ("finetune", {"finetune": finetune_summed}, "you summed the examples' gradients"),
]


# ---- correct answers written differently: full marks
def freeze_recursive(grads, trainable, prefix=""):  # walks the tree itself; str.startswith with a tuple
    if isinstance(grads, dict):
        return {k: freeze_recursive(v, trainable, f"{prefix}{k}.") for k, v in grads.items()}
    if isinstance(grads, list):
        return [freeze_recursive(v, trainable, f"{prefix}{i}.") for i, v in enumerate(grads)]
    name = prefix[:-1]
    return grads.copy() if name.startswith(tuple(trainable)) else np.zeros_like(grads)


def loss_weighted(model, prompt, answer):  # per-token loss by hand, float64
    seq = np.asarray(list(prompt) + list(answer))
    logits = np.asarray(model.forward(seq[None, :-1]), dtype=np.float64)[0]
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    pos = np.arange(len(prompt) - 1, len(seq) - 1)
    return float(-logp[pos, seq[pos + 1]].mean())


RIGHT = [
    ("freeze_grads", {"freeze_grads": freeze_recursive}),
    ("answer_loss", {"answer_loss": loss_weighted}),
]


# ---- diagnoses: each recomputes the loss under one mistake and names it
def loss_mask_one_too_many(model, prompt, answer):  # -1 over len(prompt) targets: drops the first answer token
    seq = list(prompt) + list(answer)
    t = np.asarray(seq[1:])[None].copy()
    t[0, :len(prompt)] = -1
    return model.loss(np.asarray(seq[:-1])[None], t)


def loss_answer_alone(model, prompt, answer):  # never shows the model the prompt
    return model.loss(np.asarray(answer[:-1])[None], np.asarray(answer[1:])[None])


CASES += [
    ("answer_loss", {"answer_loss": loss_mask_one_too_many}, "one too many: the target at position len(prompt) - 1"),
    ("answer_loss", {"answer_loss": loss_answer_alone}, "that scores the answer on its own"),
]
