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
