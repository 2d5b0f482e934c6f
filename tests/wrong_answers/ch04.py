"""Wrong answers for chapter 4, Parameters."""
import numpy as np


def n_params_untied(n_layer, d_model, n_ctx, vocab_size):  # counts the output layer separately
    d = d_model
    return 2 * vocab_size * d + n_ctx * d + n_layer * (12 * d * d + 13 * d) + 2 * d


def n_params_no_biases(n_layer, d_model, n_ctx, vocab_size):
    d = d_model
    return vocab_size * d + n_ctx * d + n_layer * (12 * d * d + 4 * d) + 2 * d


def weights_always_4(n_params, dtype):
    return 4 * n_params


def adam_one_moment(n_params):
    return 4 * n_params


def flops_forward_only(n_params, n_tokens):
    return 2 * n_params * n_tokens


def years_ignore_utilization(flops, peak, utilization):
    return flops / peak / (365 * 24 * 3600)


def years_times_utilization(flops, peak, utilization):
    return flops * utilization / peak / (365 * 24 * 3600)


CASES = [
    ("n_params", {"n_params": n_params_untied}, "tied weights"),
    ("n_params", {"n_params": n_params_no_biases}, "biases of the four linear layers"),
    ("memory", {"weights_bytes": weights_always_4, "adam_bytes": lambda n: 8 * n}, "takes 2 bytes"),
    ("memory", {"weights_bytes": lambda n, dt: 4 * n if dt == "float32" else 2 * n, "adam_bytes": adam_one_moment},
     "two numbers per parameter"),
    ("training_flops", {"training_flops": flops_forward_only}, "forward pass only"),
    ("gpu_years", {"gpu_years": years_ignore_utilization}, "divide by peak x utilization"),
    ("gpu_years", {"gpu_years": years_times_utilization}, "divide by it, do not multiply"),
]


# ---- misleading feedback that used to come up: LayerNorm without a bias
def n_params_ln_no_bias(n_layer, d_model, n_ctx, vocab_size):  # LayerNorms with a gain only
    d = d_model
    block = 12 * d * d + 9 * d + 2 * d
    return n_layer * block + (vocab_size + n_ctx) * d + d


def n_params_mlp_2d(n_layer, d_model, n_ctx, vocab_size):  # MLP d -> 2d -> d
    d = d_model
    block = 8 * d * d + 13 * d - 2 * d
    return n_layer * block + (vocab_size + n_ctx) * d + 2 * d


CASES += [
    ("n_params", {"n_params": n_params_ln_no_bias}, "every LayerNorm has a bias b as well as a gain g"),
    ("n_params", {"n_params": n_params_mlp_2d}, "each block is"),
]


# ---- correct answers written differently: full marks
def n_params_sum(n_layer, d_model, n_ctx, vocab_size):  # each matrix and vector spelled out; numpy ints
    d = np.int64(d_model)
    ln = 2 * d
    attn = d * 3 * d + 3 * d + d * d + d
    mlp = d * 4 * d + 4 * d + 4 * d * d + d
    return int(vocab_size * d + n_ctx * d + n_layer * (2 * ln + attn + mlp) + ln)


RIGHT = [("n_params", {"n_params": n_params_sum})]
