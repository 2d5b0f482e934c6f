"""Chapter 4, Parameters: the shape of a GPT, how many numbers it holds, what it costs.

``GPTConfig`` describes a decoder; ``GPTConfig.preset(name)`` gives every row of
Table 2.1 of the GPT-3 paper (Brown et al. 2020, arXiv:2005.14165), the four
GPT-2 sizes (Radford et al. 2019) and a few small sizes that train on a laptop.
The counts here are exact: they are checked against the real tensors the engine
allocates and against Hugging Face's GPT-2.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .attention import LAYOUTS, attention_mask  # the layouts are chapter 6's; config only names them

ALTERNATING = "alternating"  # GPT-3: dense, banded, dense, banded, ...

DTYPE_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


@dataclass
class GPTConfig:
    """The hyper-parameters of a GPT-2/GPT-3 style decoder.

    Attributes:
        n_layer: number of decoder blocks.
        n_head: attention heads per block; ``d_model`` must divide by it.
        d_model: width of the residual stream (GPT-3's d_model, GPT-2's n_embd).
        n_ctx: context length in tokens (the number of position embeddings).
        vocab_size: number of token ids.
        d_ff: hidden width of the MLP; ``None`` means 4 * d_model, as in both papers.
        attention: ``"dense"``, ``"banded"``, ``"strided"``, ``"fixed"``, ``"alternating"``
            (dense on even layers, banded on odd ones, GPT-3's scheme) or a tuple with one
            layout per layer.
        window: band width of banded layers: a query sees itself and the ``window - 1``
            positions before it. The GPT-3 paper does not publish its value; 256 is what
            GPT-Neo chose for its local layers.
        stride: block length ``l`` of the Sparse Transformer's strided and fixed patterns.
        fixed_c: number of "summary" positions per block in the fixed pattern.
        layer_norm_epsilon: LayerNorm's epsilon (1e-5 as in GPT-2).
        name: a label (the preset's name).
    """

    n_layer: int = 12
    n_head: int = 12
    d_model: int = 768
    n_ctx: int = 1024
    vocab_size: int = 50257
    d_ff: int | None = None
    attention: str | tuple = "dense"
    window: int = 256
    stride: int = 32
    fixed_c: int = 8
    layer_norm_epsilon: float = 1e-5
    name: str = ""

    def __post_init__(self):
        for f in ("n_layer", "n_head", "d_model", "n_ctx", "vocab_size", "window", "stride", "fixed_c"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"GPTConfig.{f} must be a positive integer, got {v!r}")
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model
        if self.d_model % self.n_head:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head}): "
                "each head gets d_model / n_head dimensions"
            )
        if self.fixed_c > self.stride:
            raise ValueError(f"fixed_c ({self.fixed_c}) cannot exceed stride ({self.stride})")
        if isinstance(self.attention, list):
            self.attention = tuple(self.attention)
        self.layer_layouts()  # validates

    # ------------------------------------------------------------------ layout
    @property
    def d_head(self) -> int:
        return self.d_model // self.n_head

    def layer_layouts(self) -> tuple[str, ...]:
        """The attention layout of every layer, e.g. ('dense', 'banded', 'dense', ...)."""
        a = self.attention
        if isinstance(a, tuple):
            if len(a) != self.n_layer:
                raise ValueError(f"attention lists {len(a)} layouts but n_layer is {self.n_layer}")
            bad = [x for x in a if x not in LAYOUTS]
            if bad:
                raise ValueError(f"unknown attention layout(s) {bad}; choose from {LAYOUTS}")
            return a
        if a == ALTERNATING:
            return tuple("dense" if i % 2 == 0 else "banded" for i in range(self.n_layer))
        if a in LAYOUTS:
            return (a,) * self.n_layer
        raise ValueError(f"unknown attention {a!r}; choose from {LAYOUTS + (ALTERNATING,)} or a per-layer tuple")

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str, **overrides) -> "GPTConfig":
        """A named configuration (see ``PRESETS``); keyword arguments override fields."""
        key = name.lower()
        if key not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
        return PRESETS[key].replace(**overrides)

    def replace(self, **changes) -> "GPTConfig":
        """A copy with some fields changed. A new ``d_model`` brings a new ``d_ff`` = 4 * d_model
        when this config has the standard ratio and ``d_ff`` is not given too."""
        if "d_model" in changes and "d_ff" not in changes and self.d_ff == 4 * self.d_model:
            changes = {**changes, "d_ff": None}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if isinstance(d["attention"], tuple):
            d["attention"] = list(d["attention"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        if not isinstance(d, dict):
            raise ValueError(f"a model config must be a JSON object of GPTConfig fields, not a {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown GPTConfig fields: {sorted(unknown)}")
        return cls(**d)

    # ------------------------------------------------------------------ counting
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter tensor, in the engine's (nanoGPT-like) names."""
        d, f = self.d_model, self.d_ff
        shapes = {"wte": (self.vocab_size, d), "wpe": (self.n_ctx, d)}
        for i in range(self.n_layer):
            p = f"h.{i}."
            shapes.update({
                p + "ln_1.g": (d,), p + "ln_1.b": (d,),
                p + "attn.c_attn.w": (d, 3 * d), p + "attn.c_attn.b": (3 * d,),
                p + "attn.c_proj.w": (d, d), p + "attn.c_proj.b": (d,),
                p + "ln_2.g": (d,), p + "ln_2.b": (d,),
                p + "mlp.c_fc.w": (d, f), p + "mlp.c_fc.b": (f,),
                p + "mlp.c_proj.w": (f, d), p + "mlp.c_proj.b": (d,),
            })
        shapes.update({"ln_f.g": (d,), "ln_f.b": (d,)})
        return shapes

    def params_per_layer(self) -> int:
        """Parameters in one decoder block: 12 d^2 + 13 d when d_ff = 4d."""
        d, f = self.d_model, self.d_ff
        return (3 * d * d + 3 * d) + (d * d + d) + (2 * d * f + f + d) + 4 * d

    def n_params(self, non_embedding: bool = False) -> int:
        """Exact parameter count. The unembedding is tied to ``wte``, so it adds nothing.

        N = V d + n_ctx d + n_layer (12 d^2 + 13 d) + 2 d. With ``non_embedding=True``
        the token and position embeddings are left out (Kaplan et al. 2020's N).
        """
        d = self.d_model
        emb = (self.vocab_size + self.n_ctx) * d
        total = emb + self.n_layer * self.params_per_layer() + 2 * d
        return total - emb if non_embedding else total

    def attended_positions(self, layer: int, T: int | None = None) -> float:
        """Average number of keys a query attends to in ``layer`` over a context of ``T``."""
        T = self.n_ctx if T is None else T
        kind = self.layer_layouts()[layer]
        if kind == "dense":
            return (T + 1) / 2
        if kind == "banded":
            w = min(self.window, T)
            return (w * (w + 1) / 2 + (T - w) * w) / T
        m = attention_mask(kind, T, window=self.window, stride=self.stride, c=self.fixed_c)
        return float(m.sum()) / T

    def flops_per_token(self, T: int | None = None) -> dict[str, float]:
        """Floating-point operations per token (a multiply-add counts as 2).

        Returns a dict with
          ``forward``: 2 x (matrix weights + unembedding) plus the attention term
              (scores and weighted sum: 4 d_model per attended key per layer), at context T
              (default n_ctx), counting only the keys each layout keeps;
          ``forward_dense_attention``: the same with every layer dense and the full
              n_ctx counted, Kaplan et al.'s 2N + 2 n_layer n_ctx d_model convention;
          ``training_6N``: 6 N with N = n_params(), the approximation of the GPT-3 paper's
              Table D.1 (attention ignored);
          ``training``: 3 x ``forward`` (the backward pass costs twice the forward).
        """
        T = self.n_ctx if T is None else T
        d = self.d_model
        matmul = self.n_layer * (4 * d * d + 2 * d * self.d_ff) + self.vocab_size * d
        attn = sum(4 * d * self.attended_positions(i, T) for i in range(self.n_layer))
        forward = 2 * matmul + attn
        return {
            "forward": float(forward),
            "forward_dense_attention": float(2 * self.n_params(non_embedding=True) + 2 * self.n_layer * self.n_ctx * d),
            "training_6N": float(6 * self.n_params()),
            "training": float(3 * forward),
        }

    def memory_bytes(self, dtype: str = "float32", batch: int = 1, T: int | None = None) -> dict[str, int]:
        """Bytes for weights, gradients, Adam's two moments and the KV cache.

        ``weights`` and ``grads`` are in ``dtype``; ``adam`` keeps two float32 moments per
        parameter (what mixed-precision training does); ``kv_cache`` stores a key and a value
        of d_model numbers per layer, token and sequence, in ``dtype``, for ``batch`` sequences
        of ``T`` tokens (default n_ctx).
        """
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype must be one of {list(DTYPE_BYTES)}, got {dtype!r}")
        b = DTYPE_BYTES[dtype]
        n = self.n_params()
        T = self.n_ctx if T is None else T
        kv = 2 * self.n_layer * batch * T * self.d_model * b
        return {
            "weights": n * b,
            "grads": n * b,
            "adam": 2 * n * 4,
            "training_total": n * b * 2 + 2 * n * 4 + (n * 4 if b < 4 else 0),  # + fp32 master copy
            "kv_cache": kv,
        }


# GPT-3 paper, Table 2.1. Every model: n_ctx 2048, d_ff = 4 d_model, alternating layers.
# Two rows do not add up as printed: XL lists 24 heads of 128 (3072) with d_model 2048, and
# 13B lists d_model 5140 with 40 heads of 128 (5120). The paper's parameter counts (1.3B,
# 13.0B; Table D.1: 1,320M and 12,850M) fit d_model = 2048 and d_model = 5120 with the
# attention as wide as the residual stream, so we take d_model = 2048 with 16 heads of 128
# for XL and d_model = 5120 with 40 heads of 128 for 13B.
def _gpt3(n_layer, d_model, n_head, name):
    return GPTConfig(n_layer=n_layer, n_head=n_head, d_model=d_model, n_ctx=2048, vocab_size=50257,
                     attention=ALTERNATING, window=256, name=name)


def _gpt2(n_layer, d_model, n_head, name):
    return GPTConfig(n_layer=n_layer, n_head=n_head, d_model=d_model, n_ctx=1024, vocab_size=50257, name=name)


PRESETS: dict[str, GPTConfig] = {
    "gpt3-small": _gpt3(12, 768, 12, "gpt3-small"),
    "gpt3-medium": _gpt3(24, 1024, 16, "gpt3-medium"),
    "gpt3-large": _gpt3(24, 1536, 16, "gpt3-large"),
    "gpt3-xl": _gpt3(24, 2048, 16, "gpt3-xl"),
    "gpt3-2.7b": _gpt3(32, 2560, 32, "gpt3-2.7b"),
    "gpt3-6.7b": _gpt3(32, 4096, 32, "gpt3-6.7b"),
    "gpt3-13b": _gpt3(40, 5120, 40, "gpt3-13b"),
    "gpt3-175b": _gpt3(96, 12288, 96, "gpt3-175b"),
    "gpt2-124m": _gpt2(12, 768, 12, "gpt2-124m"),
    "gpt2-355m": _gpt2(24, 1024, 16, "gpt2-355m"),
    "gpt2-774m": _gpt2(36, 1280, 20, "gpt2-774m"),
    "gpt2-1558m": _gpt2(48, 1600, 25, "gpt2-1558m"),
    # Course sizes: train on a laptop CPU, tokenized by a small BPE of the same kind.
    "course-tiny": GPTConfig(n_layer=2, n_head=2, d_model=32, n_ctx=32, vocab_size=512, window=8, stride=4, fixed_c=2,
                             attention=ALTERNATING, name="course-tiny"),
    "course-small": GPTConfig(n_layer=4, n_head=4, d_model=128, n_ctx=128, vocab_size=2048, window=32, stride=8,
                              fixed_c=2, attention=ALTERNATING, name="course-small"),
    # The shipped Shakespeare model (engine/assets/shakespeare): sized to train in about an hour and a
    # quarter on two CPU cores.
    "course-shakespeare": GPTConfig(n_layer=6, n_head=6, d_model=192, n_ctx=256, vocab_size=4096, window=128,
                                    stride=16, fixed_c=4, attention=ALTERNATING, name="course-shakespeare"),
}

# Parameter counts printed in the papers, for the book's tables and the tests.
PAPER_PARAMS = {  # Brown et al. 2020, Table D.1 (millions)
    "gpt3-small": 125e6, "gpt3-medium": 356e6, "gpt3-large": 760e6, "gpt3-xl": 1320e6,
    "gpt3-2.7b": 2650e6, "gpt3-6.7b": 6660e6, "gpt3-13b": 12850e6, "gpt3-175b": 174600e6,
}
