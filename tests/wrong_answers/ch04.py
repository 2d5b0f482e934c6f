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


# ---- diagnoses: each recomputes the answer under one mistake and names it
Y = 365 * 24 * 3600


def weights_in_bits(n_params, dtype):
    return n_params * {"float32": 32, "float16": 16, "bfloat16": 16}[dtype]


def weights_bfloat16_forgotten(n_params, dtype):  # float16 handled, bfloat16 falls through to 4 bytes
    return n_params * (2 if dtype == "float16" else 4)


def adam_with_weights_and_grads(n_params):
    return 16 * n_params


def adam_with_weights(n_params):
    return 12 * n_params


def adam_counts_numbers(n_params):
    return 2 * n_params


def flops_forward_n(n_params, n_tokens):  # forward N instead of 2 N: 3 N per token
    return 3 * n_params * n_tokens


def flops_backward_equals_forward(n_params, n_tokens):
    return 4 * n_params * n_tokens


def flops_per_token_only(n_params, n_tokens):
    return 6 * n_params


def years_julian(flops, peak, utilization):
    return flops / (peak * utilization) / (365.25 * 24 * 3600)


def years_in_days(flops, peak, utilization):
    return flops / (peak * utilization) / (24 * 3600)


def years_in_seconds(flops, peak, utilization):
    return flops / (peak * utilization)


ADAM = lambda n: 8 * n  # noqa: E731
RIGHT_W = lambda n, dt: n * (4 if dt == "float32" else 2)  # noqa: E731

CASES += [
    ("memory", {"weights_bytes": weights_in_bits, "adam_bytes": ADAM},
     "that is in bits: a float32 number is 32 bits = 4 bytes (divide by 8)"),
    ("memory", {"weights_bytes": weights_bfloat16_forgotten, "adam_bytes": ADAM},
     "weights_bytes(125,226,240, 'bfloat16') [gpt3-small]: expected 250,452,480, got 500,904,960. you used 4 bytes "
     "per number, the size of float32"),
    ("memory", {"weights_bytes": RIGHT_W, "adam_bytes": adam_with_weights_and_grads},
     "that adds the float32 weights and gradients: count only Adam's two moments"),
    ("memory", {"weights_bytes": RIGHT_W, "adam_bytes": adam_with_weights}, "that adds the float32 weights (4 bytes"),
    ("memory", {"weights_bytes": RIGHT_W, "adam_bytes": adam_counts_numbers}, "that counts the numbers, not the bytes"),
    ("training_flops", {"training_flops": flops_forward_n}, "the forward pass 2 N per token, not N"),
    ("training_flops", {"training_flops": flops_backward_equals_forward}, "the backward pass is twice the forward"),
    ("training_flops", {"training_flops": flops_per_token_only}, "multiply by the number of tokens too"),
    ("gpu_years", {"gpu_years": years_julian}, "not 365.25 days"),
    ("gpu_years", {"gpu_years": years_in_days}, "that is in GPU-days"),
    ("gpu_years", {"gpu_years": years_in_seconds}, "that is in GPU-seconds"),
]


# ---- more correct answers written differently: full marks
def weights_itemsize(n_params, dtype):  # NumPy's item sizes; bfloat16 is not a NumPy dtype
    return n_params * (2 if dtype == "bfloat16" else np.dtype(dtype).itemsize)


def adam_float(n_params):  # a float is fine while it is exact
    return 2.0 * 4.0 * n_params


def flops_float(n_params, n_tokens):
    return float(n_params) * float(n_tokens) * (2 + 4)


def years_in_steps(flops, peak, utilization):  # seconds -> hours -> days -> years
    seconds = flops / (peak * utilization)
    return seconds / 3600 / 24 / 365


RIGHT += [
    ("memory", {"weights_bytes": weights_itemsize, "adam_bytes": adam_float}),
    ("training_flops", {"training_flops": flops_float}),
    ("gpu_years", {"gpu_years": years_in_steps}),
]
