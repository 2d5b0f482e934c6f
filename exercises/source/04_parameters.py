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
# # Exercises, chapter 4: Parameters
#
# How big is GPT-3, how much memory does training it take, and how long would it run on GPUs you
# can name? Everything here follows from a handful of numbers in the paper's Table 2.1
# (Brown et al. 2020).
#
# How it works: replace each `...` with your code, run the cell, then run the
# `grader.check(...)` cell under it for your score and specific feedback. To grade the whole
# notebook from a shell (it runs a copy; this file is not changed):
#
# ```
# python -m engine.grader exercises/04_parameters.ipynb
# ```

# %%
import engine

for name in ("gpt3-small", "gpt3-175b"):
    c = engine.GPTConfig.preset(name)
    print(f"{name}: n_layer={c.n_layer}, d_model={c.d_model}, n_ctx={c.n_ctx}, vocab_size={c.vocab_size}")

# %% [raw]
# # BEGIN QUESTION
# name: n_params

# %% [markdown]
# ## 1. Parameters from a config
#
# `n_params(n_layer, d_model, n_ctx, vocab_size)` returns the exact number of parameters of a
# GPT-3-style model with `d_ff = 4 d_model`: token embeddings `wte` (V x d), position embeddings
# `wpe` (n_ctx x d), `n_layer` blocks (two LayerNorms with a gain and a bias each; `c_attn`
# d -> 3d, `c_proj` d -> d, `c_fc` d -> 4d, `c_proj` 4d -> d, every linear layer with a bias),
# and the final LayerNorm `ln_f`. The output layer reuses `wte` (tied weights). The check tries
# all eight GPT-3 sizes.

# %% [raw]
# # BEGIN SOLUTION

# %%
def n_params(n_layer, d_model, n_ctx, vocab_size):
    # BEGIN SOLUTION
    d = d_model
    per_layer = 12 * d * d + 13 * d
    return vocab_size * d + n_ctx * d + n_layer * per_layer + 2 * d
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: memory

# %% [markdown]
# ## 2. Memory for weights and for Adam
#
# `weights_bytes(n_params, dtype)` is the memory the weights take in `dtype`, one of
# `"float32"` (4 bytes), `"float16"` or `"bfloat16"` (2 bytes). `adam_bytes(n_params)` is the
# memory of Adam's two moment estimates, kept in float32 for every parameter: only the two
# moments, not the weights or the gradients. Both return bytes (not bits), exactly.

# %% [raw]
# # BEGIN SOLUTION

# %%
def weights_bytes(n_params, dtype):
    # BEGIN SOLUTION
    return n_params * {"float32": 4, "float16": 2, "bfloat16": 2}[dtype]
    # END SOLUTION


def adam_bytes(n_params):
    # BEGIN SOLUTION
    return 2 * 4 * n_params
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: training_flops

# %% [markdown]
# ## 3. Training compute
#
# A forward pass costs about 2 N floating-point operations per token (a multiply and an add per
# weight), the backward pass twice that. `training_flops(n_params, n_tokens)` returns the total for
# training on `n_tokens` tokens. (GPT-3 175B saw 300 billion tokens.)

# %% [raw]
# # BEGIN SOLUTION

# %%
def training_flops(n_params, n_tokens):
    # BEGIN SOLUTION
    return 6 * n_params * n_tokens
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: gpu_years

# %% [markdown]
# ## 4. GPU-years
#
# A GPU with a peak of `peak_flops_per_s` reaches only a fraction `utilization` of it in practice.
# `gpu_years(flops, peak_flops_per_s, utilization)` returns how many years one such GPU would
# need (a year is 365 x 24 x 3600 seconds, no leap days).

# %% [raw]
# # BEGIN SOLUTION

# %%
def gpu_years(flops, peak_flops_per_s, utilization):
    # BEGIN SOLUTION
    return flops / (peak_flops_per_s * utilization) / (365 * 24 * 3600)
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # END QUESTION

# %% [markdown]
# Put together for GPT-3 175B on V100 GPUs (125 TFLOP/s peak in float16, say 30% of it):

# %%
N = n_params(96, 12288, 2048, 50257)
if N is not None:
    F = training_flops(N, 300e9)
    print(f"parameters {N:,}; training FLOPs {F:.3g}; V100-years {gpu_years(F, 125e12, 0.3):.0f}")

# %% [markdown]
# ## Your score
#
# The cell below grades every task of this notebook: the total, a table of the tasks, and what still fails.

# %%
grader.check_all()
