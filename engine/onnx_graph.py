"""The decoder written out as an ONNX graph, node by node (used by ``engine.onnx``).

The graph repeats ``engine.decoder.forward`` with a key/value cache that comes in and goes out
as tensors: every layer concatenates its new keys and values to the past ones and attends over
all of them, the layout's mask computed in the graph from the positions (the formulas of
``engine.attention.keep``). Only standard opset-17 operators are used (LayerNormalization,
MatMul, Softmax, Range, Mod, Where, ...), all of which onnxruntime's CPU provider has in every
build, the browser's WebAssembly one included.

Shapes: B batch, T new positions, P past positions, S = P + T, C d_model, H heads, D head size,
V vocabulary, L layers.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .backend import to_numpy
from .config import GPTConfig

OPSET = 17
WEIGHT_DTYPES = ("float32", "float16")


class GraphBuilder:
    """Collects nodes and initializers; every ``op`` returns the name(s) of its output(s)."""

    def __init__(self, weight_dtype: str = "float32"):
        if weight_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"dtype must be one of {WEIGHT_DTYPES}, got {weight_dtype!r}")
        self.weight_dtype = weight_dtype
        self.nodes, self.inits, self._n, self._consts = [], [], 0, {}

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def op(self, op_type: str, *inputs, out: str | None = None, n_out: int = 1, **attrs):
        outs = [out] if out else [self._name(op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self._name("n_" + op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value, dtype) -> str:
        """A small constant (scalar or 1-D), shared between the nodes that use the same value."""
        a = np.asarray(value, dtype=dtype)
        key = (a.dtype.str, a.shape, a.tobytes())
        if key not in self._consts:
            name = self._name("c")
            self.inits.append(numpy_helper.from_array(a, name))
            self._consts[key] = name
        return self._consts[key]

    def weight(self, name: str, a) -> str:
        """A parameter as an initializer named like the engine's parameter, as float32 in the graph.

        With float16 weights the matrices are stored in float16 and cast to float32 (onnxruntime folds
        the cast at load time); gains and biases stay float32: they are few, and ln_f's carry the
        calibration temperature."""
        a = np.asarray(to_numpy(a), dtype=np.float32)
        if self.weight_dtype == "float16" and a.ndim >= 2:
            self.inits.append(numpy_helper.from_array(a.astype(np.float16), name + ".f16"))
            return self.op("Cast", name + ".f16", out=name, to=TensorProto.FLOAT)
        self.inits.append(numpy_helper.from_array(a, name))
        return name

    def i64(self, *values) -> str:
        return self.const(list(values), np.int64)

    def f32(self, value) -> str:
        return self.const(value, np.float32)


# ---------------------------------------------------------------------- the masks
def layout_mask(g: GraphBuilder, layout: str, i: str, j: str, cfg: GPTConfig) -> str:
    """May query i (T, 1) int64 see key j (1, S) int64? -> (T, S) bool, as ``attention.keep``."""
    d = g.op("Sub", i, j)
    causal = g.op("GreaterOrEqual", d, g.i64(0))
    if layout == "dense":
        return causal
    if layout == "banded":
        return g.op("And", causal, g.op("Less", d, g.i64(cfg.window)))
    s = g.i64(cfg.stride)
    if layout == "strided":  # the last `stride` positions, or a multiple of `stride` back
        near = g.op("Less", d, s)
        far = g.op("Equal", g.op("Mod", d, s), g.i64(0))  # d < 0 is cut by `causal` anyway
        return g.op("And", causal, g.op("Or", near, far))
    if layout == "fixed":  # i's own block, or the last c positions of any block
        same = g.op("Equal", g.op("Div", j, s), g.op("Div", i, s))  # i, j >= 0: Div is floor division
        summary = g.op("GreaterOrEqual", g.op("Mod", j, s), g.i64(cfg.stride - cfg.fixed_c))
        return g.op("And", causal, g.op("Or", same, summary))
    raise ValueError(f"unknown attention layout {layout!r}")


# ---------------------------------------------------------------------- the blocks
def layernorm(g: GraphBuilder, x: str, p: dict, name: str, eps: float) -> str:
    return g.op("LayerNormalization", x, g.weight(name + ".g", p["g"]), g.weight(name + ".b", p["b"]),
                axis=-1, epsilon=float(eps))


def linear(g: GraphBuilder, x: str, p: dict, name: str) -> str:
    """x @ w + b: (B, T, C_in) -> (B, T, C_out)."""
    return g.op("Add", g.op("MatMul", x, g.weight(name + ".w", p["w"])), g.weight(name + ".b", p["b"]))


def gelu(g: GraphBuilder, x: str) -> str:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the form GPT-2 uses (opset 17 has no Gelu)."""
    x3 = g.op("Mul", g.op("Mul", x, x), x)
    u = g.op("Mul", g.op("Add", x, g.op("Mul", x3, g.f32(0.044715))), g.f32(math.sqrt(2.0 / math.pi)))
    return g.op("Mul", g.op("Mul", x, g.f32(0.5)), g.op("Add", g.op("Tanh", u), g.f32(1.0)))


def attention(g: GraphBuilder, h: str, p: dict, name: str, cfg: GPTConfig, keep: str, layer: int):
    """One attention sub-block over the past keys and values. h: (B, T, C) ->
    (y (B, T, C), present key and value (B, H, S, D), weights (B, H, T, S))."""
    C, H, D = cfg.d_model, cfg.n_head, cfg.d_head
    qkv = linear(g, h, p["c_attn"], name + ".c_attn")
    heads = []
    for t in g.op("Split", qkv, g.i64(C, C, C), axis=-1, n_out=3):
        heads.append(g.op("Transpose", g.op("Reshape", t, g.i64(0, 0, H, D)), perm=[0, 2, 1, 3]))
    q, k, v = heads
    k_all = g.op("Concat", f"past_key_{layer}", k, axis=2, out=f"present_key_{layer}")
    v_all = g.op("Concat", f"past_value_{layer}", v, axis=2, out=f"present_value_{layer}")
    s = g.op("MatMul", g.op("Mul", q, g.f32(1.0 / math.sqrt(D))), g.op("Transpose", k_all, perm=[0, 1, 3, 2]))
    s = g.op("Where", keep, s, g.f32(-np.inf))  # keep (T, S) broadcasts over (B, H)
    w = g.op("Softmax", s, axis=-1)
    a = g.op("MatMul", w, v_all)  # (B, H, T, D)
    a = g.op("Reshape", g.op("Transpose", a, perm=[0, 2, 1, 3]), g.i64(0, 0, C))
    return linear(g, a, p["c_proj"], name + ".c_proj"), k_all, v_all, w


def block(g: GraphBuilder, x: str, p: dict, layer: int, cfg: GPTConfig, keep: str):
    """x + attn(ln_1(x)), then + mlp(ln_2(x)). x: (B, T, C) -> (x, attention weights)."""
    name, eps = f"h.{layer}", cfg.layer_norm_epsilon
    a, _, _, w = attention(g, layernorm(g, x, p["ln_1"], name + ".ln_1", eps), p["attn"], name + ".attn", cfg,
                           keep, layer)
    x = g.op("Add", x, a)
    h = layernorm(g, x, p["ln_2"], name + ".ln_2", eps)
    m = linear(g, gelu(g, linear(g, h, p["mlp"]["c_fc"], name + ".mlp.c_fc")), p["mlp"]["c_proj"],
               name + ".mlp.c_proj")
    return g.op("Add", x, m), w


# ---------------------------------------------------------------------- the graph
def decoder_graph(params: dict, cfg: GPTConfig, xray: bool = False, weight_dtype: str = "float32") -> onnx.ModelProto:
    """The whole decoder with its cache as an ONNX model (see ``engine.onnx`` for the IO contract)."""
    g = GraphBuilder(weight_dtype)
    L, H, D, V = cfg.n_layer, cfg.n_head, cfg.d_head, cfg.vocab_size
    # positions P .. P + T - 1, P read off the first layer's past keys (B, H, P, D)
    T = g.op("Gather", g.op("Shape", "input_ids"), g.const(1, np.int64), axis=0)
    P = g.op("Gather", g.op("Shape", "past_key_0"), g.const(2, np.int64), axis=0)
    S = g.op("Add", P, T)
    one, zero = g.const(1, np.int64), g.const(0, np.int64)
    pos = g.op("Range", P, S, one)  # (T,)
    i = g.op("Unsqueeze", pos, g.i64(1))  # (T, 1) queries
    j = g.op("Unsqueeze", g.op("Range", zero, S, one), g.i64(0))  # (1, S) keys
    masks = {kind: layout_mask(g, kind, i, j, cfg) for kind in sorted(set(cfg.layer_layouts()))}

    wte = g.weight("wte", params["wte"])
    x = g.op("Add", g.op("Gather", wte, "input_ids", axis=0), g.op("Gather", g.weight("wpe", params["wpe"]), pos,
                                                                    axis=0))
    residuals, weights = [x], []
    for layer, kind in enumerate(cfg.layer_layouts()):
        x, w = block(g, x, params["h"][layer], layer, cfg, masks[kind])
        residuals.append(x)
        weights.append(w)
    wte_t = g.op("Transpose", wte, perm=[1, 0])  # (C, V): the tied unembedding; folded at load time

    lnf_g, lnf_b = g.weight("ln_f.g", params["ln_f"]["g"]), g.weight("ln_f.b", params["ln_f"]["b"])

    def lens(r, out=None):  # ln_f, then the unembedding: what the model predicts from this residual
        h = g.op("LayerNormalization", r, lnf_g, lnf_b, axis=-1, epsilon=float(cfg.layer_norm_epsilon))
        return g.op("MatMul", h, wte_t, out=out)

    lens(x, out="logits")
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch", "sequence", V])]
    for layer in range(L):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_{kind}_{layer}", f32, ["batch", H, "past_sequence", D]))
            outputs.append(helper.make_tensor_value_info(f"present_{kind}_{layer}", f32,
                                                         ["batch", H, "total_sequence", D]))
    if xray:
        stack = lambda ts: [g.op("Unsqueeze", t, g.i64(0)) for t in ts]  # noqa: E731
        lens(g.op("Concat", *stack(residuals), axis=0), out="lens_logits")
        g.op("Concat", *stack(weights), axis=0, out="attn")
        outputs.append(helper.make_tensor_value_info("lens_logits", f32, [L + 1, "batch", "sequence", V]))
        outputs.append(helper.make_tensor_value_info("attn", f32, [L, "batch", H, "sequence", "total_sequence"]))
    graph = helper.make_graph(g.nodes, "gpt_decoder", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="engine.onnx")
    model.ir_version = 8  # onnxruntime 1.15 and later (the browser's runtime included) read IR 8 with opset 17
    return model
