"""Chapters 4 and 9: what a GPT of a given shape costs: parameters, memory, compute."""
from __future__ import annotations

import traitlets as t

from ..config import DTYPE_BYTES, PRESETS, GPTConfig
from .base import CourseWidget, esm

SECONDS_PER_YEAR = 365.25 * 24 * 3600
GPU_FLOPS = 28e12  # a V100's tensor-core figure used in public estimates of GPT-3's cost


def parameter_report(n_layer: int, d_model: int, n_ctx: int = 2048, vocab_size: int = 50257,
                     n_head: int | None = None, tokens: float = 300e9, gpu_flops: float = GPU_FLOPS,
                     attention: str = "alternating", window: int = 256) -> dict:
    """Parameters, memory and training cost of a GPT of this shape.

    Training FLOPs use 6 N D (Kaplan et al. 2020; the GPT-3 paper's Table D.1), with D =
    ``tokens``; GPU-years divide that by a sustained ``gpu_flops``. ``forward_per_token`` is
    ``GPTConfig.flops_per_token()["forward"]`` at the full context (attention counted per layout).
    Returns {"n_params", "per_layer", "embedding", "weights_fp32", "weights_fp16",
    "training_bytes", "kv_cache_fp16", "forward_per_token", "train_flops", "gpu_years", "config"}.
    (``js/parameters.js`` computes the same in the page; tests/test_widgets.py compares them.)
    """
    if n_head is None:  # heads of 128 like the large GPT-3s, or fewer when d_model is small
        n_head = max(1, d_model // 128) if d_model % 128 == 0 else 1
    cfg = GPTConfig(n_layer=n_layer, n_head=n_head, d_model=d_model, n_ctx=n_ctx, vocab_size=vocab_size,
                    attention=attention, window=min(window, n_ctx))
    n = cfg.n_params()
    mem16 = cfg.memory_bytes("float16")
    flops = 6.0 * n * tokens
    return {
        "n_params": n, "per_layer": cfg.params_per_layer(), "embedding": (vocab_size + n_ctx) * d_model,
        "weights_fp32": n * DTYPE_BYTES["float32"], "weights_fp16": n * DTYPE_BYTES["float16"],
        "training_bytes": mem16["training_total"], "kv_cache_fp16": mem16["kv_cache"],
        "forward_per_token": cfg.flops_per_token()["forward"], "train_flops": flops,
        "gpu_years": flops / gpu_flops / SECONDS_PER_YEAR, "config": cfg,
    }


def presets() -> dict:
    """The presets the calculator offers: name -> the shape fields it sets."""
    keep = ("n_layer", "d_model", "n_head", "n_ctx", "vocab_size", "attention", "window")
    return {k: {f: getattr(c, f) for f in keep} for k, c in PRESETS.items()
            if c.attention in ("dense", "banded", "alternating")}


class ParameterCalculator(CourseWidget):
    """Layers, width, context, vocabulary -> parameters, memory, training FLOPs, GPU-years (chapter 4).

    Every number is computed in the page by ``js/parameters.js`` (the formulas of ``engine.config``), so
    every control works in the static book; ``report()`` gives the same numbers from Python.
    """

    _esm = esm("parameters")
    preset = t.Unicode("custom").tag(sync=True)
    presets = t.Dict().tag(sync=True)
    n_layer = t.Int(96).tag(sync=True)
    d_model = t.Int(12288).tag(sync=True)
    n_head = t.Int(96).tag(sync=True)
    n_ctx = t.Int(2048).tag(sync=True)
    vocab_size = t.Int(50257).tag(sync=True)
    attention = t.Unicode("alternating").tag(sync=True)
    window = t.Int(256).tag(sync=True)
    tokens_billions = t.Int(300).tag(sync=True)

    def __init__(self, n_layer: int = 96, d_model: int = 12288, n_ctx: int = 2048, tokens_billions: int = 300,
                 vocab_size: int = 50257, n_head: int | None = None, preset: str | None = None):
        table = presets()
        if preset is not None:
            if preset not in table:
                raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(table)}")
            shape = dict(table[preset])
        else:
            if n_head is None:
                n_head = max(1, d_model // 128) if d_model % 128 == 0 else 1
            shape = dict(n_layer=n_layer, d_model=d_model, n_head=n_head, n_ctx=n_ctx, vocab_size=vocab_size,
                         attention="alternating", window=256)
            preset = next((k for k, v in table.items() if v == shape), "custom")
        super().__init__(presets=table, preset=preset, tokens_billions=tokens_billions, **shape)

    def report(self) -> dict:
        return parameter_report(self.n_layer, self.d_model, self.n_ctx, self.vocab_size, None,
                                tokens=self.tokens_billions * 1e9, attention=self.attention, window=self.window)
