"""Wrong answers for chapter 5, Layers."""
import math

import numpy as np

from engine.layers import layernorm_forward, merge_heads, mlp_forward, self_attention_forward, split_heads


def ln_sample_var(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(x.var(-1, ddof=1, keepdims=True) + eps) * g + b


def ln_no_affine(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(x.var(-1, keepdims=True) + eps)


def ln_in_place(x, g, b, eps=1e-5):
    x -= x.mean(-1, keepdims=True)
    x /= np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    return x * g + b


def gelu_erf(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def gelu_exp_tanh(x):  # tanh built from exp overflows for large |x|
    z = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
    with np.errstate(over="ignore", invalid="ignore"):
        t = (np.exp(z) - np.exp(-z)) / (np.exp(z) + np.exp(-z))
    return 0.5 * x * (1 + t)


def _softmax(s):
    e = np.exp(s)
    return e / e.sum(-1, keepdims=True)


def att_not_causal(q, k, v):
    s = q @ k.T / math.sqrt(q.shape[-1])
    return _softmax(s - s.max(-1, keepdims=True)) @ v


def att_unscaled(q, k, v):
    T = q.shape[0]
    s = np.where(np.tril(np.ones((T, T), bool)), q @ k.T, -np.inf)
    return _softmax(s - s.max(-1, keepdims=True)) @ v


def att_unstable(q, k, v):
    T = q.shape[0]
    s = np.where(np.tril(np.ones((T, T), bool)), q @ k.T / math.sqrt(q.shape[-1]), -np.inf)
    with np.errstate(over="ignore", invalid="ignore"):
        return _softmax(s) @ v


def split_straight(x, n_head):
    B, T, C = x.shape
    return x.reshape(B, n_head, T, C // n_head)


def merge_straight(x):
    B, H, T, D = x.shape
    return x.reshape(B, T, H * D)


def mlp_relu(x, p):
    h = np.maximum(x @ p["c_fc"]["w"] + p["c_fc"]["b"], 0)
    return h @ p["c_proj"]["w"] + p["c_proj"]["b"]


def sa_one_head(x, p, n_head):  # ignores n_head: one big head
    return self_attention_forward(x, p, 1)[0]


def _ln(x, q):
    return layernorm_forward(x, q)[0]


def block_post_ln(x, p, n_head):
    x = _ln(x + self_attention_forward(x, p["attn"], n_head)[0], p["ln_1"])
    return _ln(x + mlp_forward(x, p["mlp"])[0], p["ln_2"])


def block_parallel(x, p, n_head):  # MLP reads x instead of the stream after attention
    a = self_attention_forward(_ln(x, p["ln_1"]), p["attn"], n_head)[0]
    return x + a + mlp_forward(_ln(x, p["ln_2"]), p["mlp"])[0]


def block_no_residual(x, p, n_head):
    a = self_attention_forward(_ln(x, p["ln_1"]), p["attn"], n_head)[0]
    h = x + a
    return a + mlp_forward(_ln(h, p["ln_2"]), p["mlp"])[0]


CASES = [
    ("layernorm", {"layernorm": ln_sample_var}, "not the sample variance"),
    ("layernorm", {"layernorm": ln_no_affine}, "scale by g and shift by b"),
    ("layernorm", {"layernorm": ln_in_place}, "changed its input `x` in place"),
    ("gelu", {"gelu": gelu_erf}, "exact (erf) GELU"),
    ("gelu", {"gelu": gelu_exp_tanh}, "exp of a big number overflows"),
    ("causal_attention", {"causal_attention": att_not_causal}, "your mask is not causal"),
    ("causal_attention", {"causal_attention": att_unscaled}, "sqrt(D)"),
    ("causal_attention", {"causal_attention": att_unstable}, "subtract each row's maximum"),
    ("heads", {"split_heads": split_straight, "merge_heads": merge_heads}, "reshape to (B, T, H, D) first"),
    ("heads", {"split_heads": split_heads, "merge_heads": merge_straight}, "move the head axis back"),
    ("mlp", {"mlp": mlp_relu}, "not ReLU"),
    ("self_attention", {"self_attention": sa_one_head}, "n_head heads"),
    ("block", {"block": block_post_ln}, "post-LN"),
    ("block", {"block": block_parallel}, "the attention was added"),
    ("block", {"block": block_no_residual}, "residual connection"),
]
