"""Wrong answers for chapter 5, Layers."""
import math

import numpy as np

from engine.layers import BlockShape, layernorm_forward, merge_heads, mlp_forward, self_attention_forward, split_heads


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
    return self_attention_forward(x, p, BlockShape(1))[0]


def _ln(x, q):
    return layernorm_forward(x, q)[0]


def block_post_ln(x, p, n_head):
    x = _ln(x + self_attention_forward(x, p["attn"], BlockShape(n_head))[0], p["ln_1"])
    return _ln(x + mlp_forward(x, p["mlp"])[0], p["ln_2"])


def block_parallel(x, p, n_head):  # MLP reads x instead of the stream after attention
    a = self_attention_forward(_ln(x, p["ln_1"]), p["attn"], BlockShape(n_head))[0]
    return x + a + mlp_forward(_ln(x, p["ln_2"]), p["mlp"])[0]


def block_no_residual(x, p, n_head):
    a = self_attention_forward(_ln(x, p["ln_1"]), p["attn"], BlockShape(n_head))[0]
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


# ---- patterns the checks used to miss: arguments never varied, and the common chapter 5 mistakes
def ln_fixed_eps(x, g, b, eps=1e-5):  # ignores its eps
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * g + b


def ln_eps_outside(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / (np.sqrt(x.var(-1, keepdims=True)) + eps) * g + b


def ln_no_bias(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(x.var(-1, keepdims=True) + eps) * g


def att_strict_mask(q, k, v):  # j < i: position 0 sees nothing
    T = q.shape[0]
    s = np.where(np.tril(np.ones((T, T), bool), -1), q @ k.T / math.sqrt(q.shape[-1]), -np.inf)
    with np.errstate(all="ignore"):
        return _softmax(s - s.max(-1, keepdims=True)) @ v


def att_mask_after_softmax(q, k, v):
    T = q.shape[0]
    s = q @ k.T / math.sqrt(q.shape[-1])
    return (_softmax(s - s.max(-1, keepdims=True)) * np.tril(np.ones((T, T)))) @ v


def _sa(x, p, n_head, scale="D", order=(0, 1, 2)):
    B, T, C = x.shape
    D = C // n_head
    parts = np.split(x @ p["c_attn"]["w"] + p["c_attn"]["b"], 3, axis=-1)
    q, k, v = (parts[i].reshape(B, T, n_head, D).transpose(0, 2, 1, 3) for i in order)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(C if scale == "C" else D)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    y = _softmax(s - s.max(-1, keepdims=True)) @ v
    return y.transpose(0, 2, 1, 3).reshape(B, T, C) @ p["c_proj"]["w"] + p["c_proj"]["b"]


def sa_scale_c(x, p, n_head):
    return _sa(x, p, n_head, scale="C")


def sa_kqv(x, p, n_head):  # takes the first third as k, the second as q
    return _sa(x, p, n_head, order=(1, 0, 2))


def _ln_outside(x, q, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / (np.sqrt(x.var(-1, keepdims=True)) + eps) * q["g"] + q["b"]


def block_scale_c(x, p, n_head):
    h = x + _sa(_ln(x, p["ln_1"]), p["attn"], n_head, scale="C")
    return h + mlp_forward(_ln(h, p["ln_2"]), p["mlp"])[0]


def block_qkv_order(x, p, n_head):
    h = x + _sa(_ln(x, p["ln_1"]), p["attn"], n_head, order=(2, 1, 0))
    return h + mlp_forward(_ln(h, p["ln_2"]), p["mlp"])[0]


def block_ln_no_bias(x, p, n_head):
    def ln(y, q):
        return _ln(y, {"g": q["g"], "b": np.zeros_like(q["b"])})
    h = x + self_attention_forward(ln(x, p["ln_1"]), p["attn"], BlockShape(n_head))[0]
    return h + mlp_forward(ln(h, p["ln_2"]), p["mlp"])[0]


CASES += [
    ("layernorm", {"layernorm": ln_fixed_eps}, "use the eps you are given"),
    ("layernorm", {"layernorm": ln_eps_outside}, "inside* the square root"),
    ("layernorm", {"layernorm": ln_no_bias}, "shift by b after scaling by g"),
    ("causal_attention", {"causal_attention": att_strict_mask}, "position 0 sees nothing"),
    ("causal_attention", {"causal_attention": att_mask_after_softmax}, "you masked after the softmax"),
    ("self_attention", {"self_attention": sa_scale_c}, "not by sqrt(C)"),
    ("self_attention", {"self_attention": sa_kqv}, "you took the k columns as q, the q columns as k"),
    ("block", {"block": block_scale_c}, "in the attention: divide the scores by sqrt(D)"),
    ("block", {"block": block_qkv_order}, "holds q, k, v in that order"),
    ("block", {"block": block_ln_no_bias}, "LayerNorm shifts by b after scaling by g"),
]


# ---- correct answers written differently: full marks
def ln_loops_float64(x, g, b, eps=1e-5):  # a loop over positions, float64 inside, np.var
    x64 = np.asarray(x, dtype=np.float64)
    flat = x64.reshape(-1, x64.shape[-1])
    out = np.empty_like(flat)
    for i, row in enumerate(flat):
        out[i] = (row - row.mean()) / math.sqrt(row.var() + eps) * g + b
    return out.reshape(x64.shape)


def att_einsum_1e30(q, k, v):  # einsum and a -1e30 mask instead of -inf
    T, D = q.shape
    s = np.einsum("id,jd->ij", q, k) / np.sqrt(D)
    s = np.where(np.arange(T)[:, None] >= np.arange(T)[None, :], s, -1e30)
    w = np.exp(s - s.max(axis=1, keepdims=True))
    return np.einsum("ij,jd->id", w / w.sum(axis=1, keepdims=True), v)


def sa_einsum(x, p, n_head):
    B, T, C = x.shape
    D = C // n_head
    qkv = np.einsum("btc,cf->btf", x, p["c_attn"]["w"]) + p["c_attn"]["b"]
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, n_head, D) for i in range(3))
    s = np.einsum("bthd,bshd->bhts", q, k) / math.sqrt(D) + np.triu(np.full((T, T), -1e30), 1)
    w = np.exp(s - s.max(-1, keepdims=True))
    y = np.einsum("bhts,bshd->bthd", w / w.sum(-1, keepdims=True), v).reshape(B, T, C)
    return y @ p["c_proj"]["w"] + p["c_proj"]["b"]


RIGHT = [
    ("layernorm", {"layernorm": ln_loops_float64}),
    ("causal_attention", {"causal_attention": att_einsum_1e30}),
    ("self_attention", {"self_attention": sa_einsum}),
]


def att_kq(q, k, v):  # scores k @ q.T
    return causal_attention_ref(k, q, v)


def causal_attention_ref(q, k, v):
    T = q.shape[0]
    s = np.where(np.tril(np.ones((T, T), bool)), q @ k.T / math.sqrt(q.shape[-1]), -np.inf)
    return _softmax(s - s.max(-1, keepdims=True)) @ v


CASES += [("causal_attention", {"causal_attention": att_kq}, "you used k as q, q as k")]
