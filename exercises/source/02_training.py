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
# # Exercises, chapter 2: Training
#
# A language model learns to predict the next token. You will cut a token stream into training
# examples, score predictions with cross-entropy, and take one step of gradient descent on a tiny
# model with the engine's hand-written gradients.
#
# How it works: replace each `...` with your code, run the cell, then run the
# `grader.check(...)` cell under it for your score and specific feedback. To grade the whole
# notebook from a shell (it runs a copy; this file is not changed):
#
# ```
# python -m engine.grader exercises/02_training.ipynb
# ```

# %%
import numpy as np

import engine

# %% [raw]
# # BEGIN QUESTION
# name: make_windows

# %% [markdown]
# ## 1. Sliding-window examples
#
# A window of `n_ctx + 1` consecutive tokens holds `n_ctx` examples at once: the inputs are its
# first `n_ctx` tokens, the targets its last `n_ctx` (each input token's *next* token). Windows
# start at positions 0, `step`, 2 `step`, ... for as long as a whole window fits.
#
# `make_windows(ids, n_ctx, step)` takes a list of token ids and returns `(x, y)`, two integer
# arrays (an integer dtype such as `int64`, not float: they are ids) of shape `(number of windows, n_ctx)` with `y[m, t]` the token after `x[m, t]`. If
# there are fewer than `n_ctx + 1` tokens, raise a `ValueError`.

# %% [raw]
# # BEGIN SOLUTION

# %%
def make_windows(ids, n_ctx, step):
    # BEGIN SOLUTION
    ids = np.asarray(ids)
    if len(ids) < n_ctx + 1:
        raise ValueError(f"need at least n_ctx + 1 = {n_ctx + 1} tokens, got {len(ids)}")
    starts = range(0, len(ids) - n_ctx, step)
    w = np.stack([ids[s:s + n_ctx + 1] for s in starts])
    return w[:, :-1], w[:, 1:]
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: cross_entropy

# %% [markdown]
# ## 2. Cross-entropy of a batch
#
# `logits` is `(B, T, V)`: a score for every vocabulary entry at every position; `targets` is
# `(B, T)`: the id that really came next. The loss is the mean over positions of
# $-\log \mathrm{softmax}(\text{logits})[\text{target}]$. Positions whose target is `-1` do not
# count (they are padding). It must work for logits near 1000 (use the log-sum-exp trick).

# %% [raw]
# # BEGIN SOLUTION

# %%
def cross_entropy(logits, targets):
    # BEGIN SOLUTION
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    mask = targets >= 0
    picked = np.take_along_axis(logp, np.where(mask, targets, 0)[..., None], axis=-1)[..., 0]
    return -(picked * mask).sum() / mask.sum()
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: sgd_step

# %% [markdown]
# ## 3. One gradient step
#
# `model.loss_and_grads(ids, targets)` returns the loss and a tree of gradients shaped exactly like
# `model.params` (dicts, and a list `"h"` of blocks). Write `sgd_step(model, ids, targets, lr)`:
# compute the loss and gradients, move every parameter downhill, `p <- p - lr * grad`, in
# `model.params`, and return the loss from *before* the step.
#
# Hint: `engine.model.tree_flatten(tree)` gives `{"h.0.attn.c_attn.w": array, ...}` whose arrays
# are the tree's own, so updating them in place (`-=`) updates the model.

# %% [raw]
# # BEGIN SOLUTION

# %%
def sgd_step(model, ids, targets, lr):
    # BEGIN SOLUTION
    from engine.model import tree_flatten

    loss, grads = model.loss_and_grads(ids, targets)
    params, g = tree_flatten(model.params), tree_flatten(grads)
    for name in params:
        params[name] -= lr * g[name]
    return loss
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Watch the loss fall
#
# Ten steps on one batch of a tiny random model (once `sgd_step` works):

# %%
model = engine.GPT(engine.GPTConfig(n_layer=2, n_head=2, d_model=32, n_ctx=16, vocab_size=50),
                   dtype="float64", backend="numpy")
rng = np.random.default_rng(0)
ids = rng.integers(0, 50, (4, 16))
targets = np.roll(ids, -1, axis=1)
for step in range(10):
    loss = sgd_step(model, ids, targets, lr=0.05)
    print(step, "not yet" if loss is None else f"{loss:.4f}")

# %% [markdown]
# ## Your score
#
# The cell below grades every task of this notebook: the total, a table of the tasks, and what still fails.

# %%
grader.check_all()
