# %% [raw]
# # ASSIGNMENT CONFIG
# init_cell: true
# check_all_cell: false
# export_cell: false
# generate: false
# run_tests: false
# tests:
#   ok_format: false
#   files: false

# %% [markdown]
# # Exercises, chapter 8: Fine-tuning
#
# Fine-tuning keeps training a pretrained model on a small task dataset, often with most of its
# parameters frozen. You will freeze parameters, write a loss that scores only the answer of a
# prompt-answer example, and run a few steps.
#
# How it works: replace each `...` with your code, run the cell, then run the
# `grader.check(...)` cell under it for your score and specific feedback. To grade the whole
# notebook from a shell (it runs a copy; this file is not changed):
#
# ```
# python -m engine.grader exercises/08_finetuning.ipynb
# ```

# %%
import numpy as np

import engine
from engine.model import tree_flatten, tree_map

# %% [raw]
# # BEGIN QUESTION
# name: freeze_grads

# %% [markdown]
# ## 1. Freeze all but some parameters
#
# Parameters have flat names such as `"wte"`, `"h.1.mlp.c_fc.w"`, `"ln_f.g"`
# (`tree_flatten(model.params)` lists them). `freeze_grads(grads, trainable)` takes a gradient
# tree (shaped like `model.params`) and a list of name prefixes, and returns a **new** tree in which
# every gradient whose name starts with none of the prefixes is zero; the others are unchanged.
# A prefix must match the *start* of a name: `"ln"` keeps `"ln_f.g"` and `"ln_f.b"` but not
# `"h.0.ln_1.g"` (which only contains it). Do not change `grads`.
#
# Hint: `tree_map(np.zeros_like, grads)` makes a tree of zeros; `tree_flatten` of a tree gives its
# own arrays by name, so you can fill them in place.

# %% [raw]
# # BEGIN SOLUTION

# %%
def freeze_grads(grads, trainable):
    # BEGIN SOLUTION
    out = tree_map(np.copy, grads)
    for name, g in tree_flatten(out).items():
        if not any(name.startswith(prefix) for prefix in trainable):
            g[...] = 0.0
    return out
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: answer_loss

# %% [markdown]
# ## 2. The task loss: only the answer counts
#
# An example is a `prompt` (list of ids) and its `answer` (list of ids). The model reads
# `prompt + answer` without its last token and predicts each next token, but only the predictions
# of the answer's tokens should count. `answer_loss(model, prompt, answer)` returns that mean
# cross-entropy. Which targets are ignored depends on their *position*, not on their ids: the same
# id can appear in the prompt and in the answer. Hint: `model.loss(ids, targets)` ignores every
# target set to `-1`.

# %% [raw]
# # BEGIN SOLUTION

# %%
def answer_targets(prompt, answer):
    seq = list(prompt) + list(answer)
    ids = np.asarray(seq[:-1])[None]
    targets = np.asarray(seq[1:])[None]
    targets[0, :len(prompt) - 1] = -1  # these positions predict prompt tokens
    return ids, targets


def answer_loss(model, prompt, answer):
    # BEGIN SOLUTION
    return model.loss(*answer_targets(prompt, answer))
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: finetune

# %% [markdown]
# ## 3. A few fine-tuning steps
#
# `finetune(model, examples, trainable, steps, lr)`: `examples` is a list of `(prompt, answer)`
# pairs. At each of `steps` steps, compute every example's answer loss and gradients
# (`model.loss_and_grads(ids, targets)` with the targets of task 2), average the gradients (their
# mean over the examples, not their sum: the step's size is checked), keep
# only the trainable ones (`freeze_grads`), and update `model.params` in place:
# `p <- p - lr * g`. Return the list of the mean answer losses, one per step, each measured
# before that step's update.

# %% [raw]
# # BEGIN SOLUTION

# %%
def finetune(model, examples, trainable, steps, lr):
    # BEGIN SOLUTION
    losses = []
    params = tree_flatten(model.params)
    for _ in range(steps):
        total, acc = 0.0, None
        for prompt, answer in examples:
            loss, grads = model.loss_and_grads(*answer_targets(prompt, answer))
            g = tree_flatten(freeze_grads(grads, trainable))
            acc = g if acc is None else {k: acc[k] + g[k] for k in acc}
            total += loss
        for name in params:
            params[name] -= lr * acc[name] / len(examples)
        losses.append(total / len(examples))
    return losses
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# Teach a tiny random model three "facts", training only its last block and final LayerNorm:

# %%
model = engine.GPT(engine.GPTConfig(n_layer=2, n_head=2, d_model=32, n_ctx=16, vocab_size=50),
                   dtype="float64", backend="numpy")
examples = [([3, 4, 5], [6]), ([7, 8], [9, 10]), ([11, 12, 13], [14])]
losses = finetune(model, examples, ["h.1.", "ln_f"], steps=20, lr=0.5)
print("not yet" if losses is None else [round(float(l), 3) for l in losses[::4]])

# %% [markdown]
# ## Your score
#
# The cell below grades every task of this notebook: the total, a table of the tasks, and what still fails.

# %%
grader.check_all()
