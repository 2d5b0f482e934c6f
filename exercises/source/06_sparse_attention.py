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
# # Exercises, chapter 6: Sparse attention
#
# GPT-3 alternates dense layers with locally banded sparse ones (Brown et al. 2020, after Child
# et al. 2019). You will draw the banded and the strided patterns as masks and count what each
# costs.
#
# How it works: replace each `...` with your code, run the cell, then run the
# `grader.check(...)` cell under it for your score and specific feedback. To grade the whole
# notebook from a shell (it runs a copy; this file is not changed):
#
# ```
# python -m engine.grader exercises/06_sparse_attention.ipynb
# ```
#
# A mask is a boolean `(T, T)` array: `mask[i, j]` is True when query position i may look at key
# position j (1/0 instead of True/False, or nested lists, are accepted too). Every pattern is
# causal: never j > i, and every position sees itself.

# %%
import numpy as np

# %% [raw]
# # BEGIN QUESTION
# name: banded_mask

# %% [markdown]
# ## 1. The banded mask
#
# In a locally banded layer, position i sees itself and the `window - 1` positions before it:
# `i - window < j <= i`. `banded_mask(T, window)` returns that mask.

# %% [raw]
# # BEGIN SOLUTION

# %%
def banded_mask(T, window):
    # BEGIN SOLUTION
    i = np.arange(T)[:, None]
    j = np.arange(T)[None, :]
    return (j <= i) & (i - j < window)
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: strided_mask

# %% [markdown]
# ## 2. The strided mask
#
# The Sparse Transformer's strided pattern: position i sees the last `stride` positions (itself
# included, `i - j < stride`) and every earlier position a multiple of `stride` back
# (`(i - j) % stride == 0`: counted back from i, not `j % stride == 0`). `strided_mask(T, stride)`
# returns that mask.

# %% [raw]
# # BEGIN SOLUTION

# %%
def strided_mask(T, stride):
    # BEGIN SOLUTION
    i = np.arange(T)[:, None]
    j = np.arange(T)[None, :]
    return (j <= i) & ((i - j < stride) | ((i - j) % stride == 0))
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# The two patterns for T = 12 (`#` where a query looks):

# %%
for name, m in [("banded, window 4", banded_mask(12, 4)), ("strided, stride 4", strided_mask(12, 4))]:
    print(name)
    if m is None:
        print("  not yet")
        continue
    for row in np.asarray(m):
        print("  " + "".join("#" if v else "." for v in row))

# %% [raw]
# # BEGIN QUESTION
# name: dot_products

# %% [markdown]
# ## 3. Counting the dot products
#
# Each (query, key) pair a pattern keeps costs one dot product q . k. `dot_products(kind, T,
# window=256, stride=32)` returns how many one layer computes for a sequence of T tokens, for
# `kind` `"dense"` (every j <= i), `"banded"` or `"strided"`, each pair counted once (a query's
# own key included). Return a whole number (an int, or a float that is exact). The checks include
# T = 1,000,000, where a (T, T) mask would need a terabyte: count with a formula, or a loop over
# the queries.

# %% [raw]
# # BEGIN SOLUTION

# %%
def dot_products(kind, T, window=256, stride=32):
    # BEGIN SOLUTION
    i = np.arange(T, dtype=np.int64)
    if kind == "dense":
        return T * (T + 1) // 2
    if kind == "banded":
        return int(np.minimum(i + 1, window).sum())
    if kind == "strided":
        return int((np.minimum(i + 1, stride) + i // stride).sum())
    raise ValueError(f"unknown kind {kind!r}")
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# At GPT-3's context of 2048 with a window of 256, how much does a banded layer save?

# %%
dense, banded = dot_products("dense", 2048), dot_products("banded", 2048, window=256)
if dense is not None and banded is not None:
    print(f"dense {dense:,}, banded {banded:,}: {dense / banded:.1f}x fewer")

# %% [markdown]
# ## Your score
#
# The cell below grades every task of this notebook: the total, a table of the tasks, and what still fails.

# %%
grader.check_all()
