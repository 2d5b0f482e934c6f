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
# # Exercises, chapter 5: Layers
#
# You will build a GPT-3 decoder block from its parts and then run the engine with **your**
# block in every layer: it must give the same logits as the engine's own.
#
# How it works: replace each `...` with your code, run the cell, then run the
# `grader.check(...)` cell under it. The check calls your function on random inputs of several
# shapes and on edge cases (T = 1, odd head sizes, huge values), compares with the engine and
# tells you what went wrong. To grade the whole notebook from a shell (it runs a copy; this file
# is not changed):
#
# ```
# python -m engine.grader exercises/05_layers.ipynb
# ```
#
# Shapes: B batch, T positions, C = d_model channels, H heads, D = C / H per head. Use NumPy only
# (no `engine.layers` in your answers: that is what you are rebuilding).

# %%
import math

import numpy as np

# %% [raw]
# # BEGIN QUESTION
# name: layernorm

# %% [markdown]
# ## 1. LayerNorm
#
# For each position, normalise its C numbers to mean 0 and variance 1 (the plain variance, dividing
# by C), then scale by `g` and shift by `b`:
# $\mathrm{LN}(x) = g \odot (x - \mu) / \sqrt{\sigma^2 + \epsilon} + b$.
# `x` is `(..., C)`; `g` and `b` are `(C,)`. Use the `eps` you are given (the check passes other
# values than 1e-5), inside the square root. Do not change `x` in place.

# %% [raw]
# # BEGIN SOLUTION

# %%
def layernorm(x, g, b, eps=1e-5):
    # BEGIN SOLUTION
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: gelu

# %% [markdown]
# ## 2. GELU
#
# GPT-2 and GPT-3 use the tanh approximation of GELU:
# $\mathrm{GELU}(x) = \tfrac12 x \left(1 + \tanh\!\left(\sqrt{2/\pi}\,(x + 0.044715 x^3)\right)\right)$.
# It must stay finite for any x (try x = 1000).

# %% [raw]
# # BEGIN SOLUTION

# %%
def gelu(x):
    # BEGIN SOLUTION
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: causal_attention

# %% [markdown]
# ## 3. Single-head causal attention
#
# `q`, `k`, `v` are `(T, D)`. Scores $s_{ij} = q_i \cdot k_j / \sqrt{D}$; position i may only look
# at positions j <= i, itself included (set the others to $-\infty$ before the softmax); each row of weights is a
# softmax; the output is the weighted sum of the values, `(T, D)`. Make the softmax stable: the
# check uses scores in the thousands.

# %% [raw]
# # BEGIN SOLUTION

# %%
def causal_attention(q, k, v):
    # BEGIN SOLUTION
    T, D = q.shape
    s = q @ k.T / math.sqrt(D)
    s = np.where(np.tril(np.ones((T, T), dtype=bool)), s, -np.inf)
    s = s - s.max(axis=-1, keepdims=True)
    w = np.exp(s)
    w = w / w.sum(axis=-1, keepdims=True)
    return w @ v
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: heads

# %% [markdown]
# ## 4. Splitting and merging heads
#
# Multi-head attention runs H small attentions side by side. `split_heads(x, n_head)` turns
# `(B, T, C)` into `(B, H, T, D)`: channel block h of every position goes to head h.
# `merge_heads(x)` undoes it: `(B, H, T, D)` -> `(B, T, C)`. (Hint: a reshape and a transpose.)

# %% [raw]
# # BEGIN SOLUTION

# %%
def split_heads(x, n_head):
    # BEGIN SOLUTION
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)
    # END SOLUTION


def merge_heads(x):
    # BEGIN SOLUTION
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: mlp

# %% [markdown]
# ## 5. The MLP
#
# Expand, GELU, project back: `mlp(x, p) = gelu(x @ p["c_fc"]["w"] + p["c_fc"]["b"]) @ p["c_proj"]["w"] + p["c_proj"]["b"]`.
# `x` is `(B, T, C)`; `c_fc.w` is `(C, 4C)` in GPT-3 (the check also tries other widths). Use your `gelu`.

# %% [raw]
# # BEGIN SOLUTION

# %%
def mlp(x, p):
    # BEGIN SOLUTION
    h = gelu(x @ p["c_fc"]["w"] + p["c_fc"]["b"])
    return h @ p["c_proj"]["w"] + p["c_proj"]["b"]
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: self_attention

# %% [markdown]
# ## 6. Multi-head causal self-attention
#
# `x` is `(B, T, C)`. One linear layer `p["c_attn"]` (`w`: `(C, 3C)`) makes q, k and v at once
# (split its output into three `(B, T, C)` parts, in that order); split each into `n_head` heads;
# run causal attention in every head, scaling by $\sqrt{D}$ with D = C / n_head the size of one head
# (your `causal_attention` works on one `(T, D)` head, or
# write a batched version); merge the heads; project with `p["c_proj"]`. Returns `(B, T, C)`.

# %% [raw]
# # BEGIN SOLUTION

# %%
def self_attention(x, p, n_head):
    # BEGIN SOLUTION
    qkv = x @ p["c_attn"]["w"] + p["c_attn"]["b"]
    q, k, v = (split_heads(t, n_head) for t in np.split(qkv, 3, axis=-1))
    B, H, T, D = q.shape
    out = np.empty_like(q)
    for bi in range(B):
        for hi in range(H):
            out[bi, hi] = causal_attention(q[bi, hi], k[bi, hi], v[bi, hi])
    return merge_heads(out) @ p["c_proj"]["w"] + p["c_proj"]["b"]
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: block

# %% [markdown]
# ## 7. A whole decoder block, run inside the engine
#
# GPT-2 and GPT-3 normalise *before* each sub-block (pre-LN) and add the result back to the
# residual stream:
#
# ```
# x = x + self_attention(layernorm(x, ln_1), attn)
# x = x + mlp(layernorm(x, ln_2), mlp)
# ```
#
# `p` is one layer of the engine's parameters: `p["ln_1"]` and `p["ln_2"]` hold `g` and `b`,
# `p["attn"]` holds `c_attn` and `c_proj`, `p["mlp"]` holds `c_fc` and `c_proj`. The check runs
# `engine.GPT.forward` with your `block` in place of the engine's in every layer: the logits
# must match.

# %% [raw]
# # BEGIN SOLUTION

# %%
def block(x, p, n_head):
    # BEGIN SOLUTION
    x = x + self_attention(layernorm(x, p["ln_1"]["g"], p["ln_1"]["b"]), p["attn"], n_head)
    return x + mlp(layernorm(x, p["ln_2"]["g"], p["ln_2"]["b"]), p["mlp"])
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# ## Your block in a real model
#
# Once `block` passes, this runs a small random GPT with your block in every layer and compares
# the logits with the engine's.

# %%
import engine
from engine import decoder as engine_decoder  # the one decoder pass, which calls block_forward for every layer

gpt = engine.GPT(engine.GPTConfig(n_layer=2, n_head=4, d_model=32, n_ctx=16, vocab_size=100),
                 dtype="float64", backend="numpy")
ids = np.arange(10) % 100
theirs = gpt.forward(ids)
probe = block(np.zeros((1, 2, 32)), gpt.params["h"][0], 4)
if not isinstance(probe, np.ndarray) or probe.shape != (1, 2, 32):
    print("Not yet: write `block` above (it should return an array shaped like x).")
else:
    own = engine_decoder.block_forward
    engine_decoder.block_forward = lambda x, p, cfg, *rest, **options: (block(x, p, cfg.n_head), None)
    try:
        yours = gpt.forward(ids)
    finally:
        engine_decoder.block_forward = own  # always put the engine's block back
    print("largest difference from the engine's logits:", float(np.abs(yours - theirs).max()))

# %% [markdown]
# ## Your score
#
# The cell below grades every task of this notebook: the total, a table of the tasks, and what still fails.

# %%
grader.check_all()
