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
# # Exercises, chapter 7: Generation
#
# A model gives scores (logits) for the next token; generating text means turning them into a
# choice, appending it and asking again. You will write the usual sampling filters (temperature,
# top-k, top-p) and a greedy loop that uses a KV cache, checked against the engine's own `generate`.
#
# How it works: replace each `...` with your code, run the cell, then run the
# `grader.check(...)` cell under it for your score and specific feedback. To grade the whole
# notebook from a shell (it runs a copy; this file is not changed):
#
# ```
# python -m engine.grader exercises/07_generation.ipynb
# ```

# %%
import numpy as np

import engine
from engine.generate import KVCache, forward_cached

# %% [raw]
# # BEGIN QUESTION
# name: softmax

# %% [markdown]
# ## 1. Softmax with temperature
#
# `softmax(logits, temperature=1.0)`: divide the logits by the temperature, then softmax over the
# last axis. `logits` is `(V,)` or `(B, V)`; each row sums to 1. It must not overflow for logits
# near 1000, and the rows of a batch are independent: shift each row by its *own* maximum (a batch
# may hold one row near 1000 and another near -1000).

# %% [raw]
# # BEGIN SOLUTION

# %%
def softmax(logits, temperature=1.0):
    # BEGIN SOLUTION
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: top_k

# %% [markdown]
# ## 2. Top-k
#
# `top_k_probs(logits, k)` for logits `(V,)`: the softmax probabilities with all but the `k` most
# likely tokens set to 0, renormalised to sum to 1. If `k >= V`, nothing is removed. Exactly `k`
# tokens are kept, even when several tokens tie with the `k`-th most likely one (which of the tied
# ones you keep is up to you).

# %% [raw]
# # BEGIN SOLUTION

# %%
def top_k_probs(logits, k):
    # BEGIN SOLUTION
    p = softmax(logits)
    keep = np.argsort(-p, kind="stable")[:k]
    out = np.zeros_like(p)
    out[keep] = p[keep]
    return out / out.sum()
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: top_p

# %% [markdown]
# ## 3. Top-p (nucleus sampling)
#
# `top_p_probs(logits, p)` for logits `(V,)`: keep the smallest set of most likely tokens whose
# probabilities add up to at least `p` (so the token that crosses `p` is kept, and the most likely
# token always is), zero the rest, renormalise. When the kept tokens add up to exactly `p`, that is
# enough: a token is kept only if the tokens more likely than it add up to *less than* `p`. Where
# tokens tie, any order among them will do.

# %% [raw]
# # BEGIN SOLUTION

# %%
def top_p_probs(logits, p):
    # BEGIN SOLUTION
    probs = softmax(logits)
    order = np.argsort(-probs, kind="stable")
    cum = np.cumsum(probs[order])
    n_keep = int(np.searchsorted(cum, p * cum[-1])) + 1  # first index where the mass reaches p
    out = np.zeros_like(probs)
    keep = order[:n_keep]
    out[keep] = probs[keep]
    return out / out.sum()
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: greedy_generate

# %% [markdown]
# ## 4. A greedy loop with a KV cache
#
# `greedy_generate(model, prompt, n_new)` returns the prompt followed by `n_new` tokens, each the
# argmax of the model's next-token logits. Use the engine's KV cache so that every step feeds only
# the newest token:
#
# * `cache = KVCache(model, 1)` makes an empty cache for a batch of one;
# * `forward_cached(model, ids, cache)` runs `ids` (a `(1, n)` integer array) at the next free
#   positions, stores their keys and values in the cache, and returns the logits of the last
#   position, `(1, V)`.
#
# Feed the whole prompt once, then one token per step. The result must equal
# `model.generate(prompt, n_new, temperature=0)`.

# %% [raw]
# # BEGIN SOLUTION

# %%
def greedy_generate(model, prompt, n_new):
    # BEGIN SOLUTION
    seq = [int(t) for t in prompt]
    if n_new == 0:
        return seq
    cache = KVCache(model, 1)
    logits = forward_cached(model, np.asarray([seq]), cache)
    for step in range(n_new):
        nxt = int(np.argmax(engine.to_numpy(logits)[0]))
        seq.append(nxt)
        if step < n_new - 1:
            logits = forward_cached(model, np.asarray([[nxt]]), cache)
    return seq
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# Your loop and the engine's on a small random model:

# %%
model = engine.GPT(engine.GPTConfig(n_layer=2, n_head=2, d_model=32, n_ctx=32, vocab_size=100), seed=1,
                   backend="numpy")
prompt = [1, 2, 3]
print("engine:", model.generate(prompt, 10, temperature=0).tolist())
print("yours: ", greedy_generate(model, prompt, 10))

# %% [markdown]
# ## Your score
#
# The cell below grades every task of this notebook: the total, a table of the tasks, and what still fails.

# %%
grader.check_all()
