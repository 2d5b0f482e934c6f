"""Which engine functions each task rebuilds: an answer that calls one of them is refused.

Entries are ``"module:name"``, ``"module:Class.method"`` or ``"module:*"`` (every function defined
in that module). ``ALWAYS`` applies to every task: the grader's own reference implementations.
"""
from __future__ import annotations

_LAYERS = ("engine.layers:*", "engine.attention:*", "engine.decoder:*")  # "no engine.layers in your answers"
_MASKS = ("engine.attention:attention_mask", "engine.attention:keep", "engine.attention:sparse_index")

from .checks import MODULES as _CHECKS

ALWAYS = ("engine.grader.checks._util:*",) + tuple(f"engine.grader.checks.{m}:*" for m in _CHECKS)

REBUILDS: dict[str, tuple] = {
    "make_windows": ("engine.data:sliding_windows", "engine.data:examples_from_ids"),
    "cross_entropy": ("engine.losses:cross_entropy_forward", "engine.losses:token_nll", "engine.losses:_log_probs"),
    "most_frequent_pair": ("engine.bpe:*",),
    "merge": ("engine.bpe:*",),
    "n_params": ("engine.config:GPTConfig.n_params", "engine.config:GPTConfig.params_per_layer",
                 "engine.config:GPTConfig.param_shapes", "engine.model:GPT.n_params"),
    "memory": ("engine.config:GPTConfig.memory_bytes",),
    "training_flops": ("engine.config:GPTConfig.flops_per_token",),
    "layernorm": _LAYERS, "gelu": _LAYERS, "causal_attention": _LAYERS, "heads": _LAYERS, "mlp": _LAYERS,
    "self_attention": _LAYERS, "block": _LAYERS,
    "banded_mask": _MASKS, "strided_mask": _MASKS, "dot_products": _MASKS,
    "softmax": ("engine.generate:softmax", "engine.layers:softmax", "engine.generate:next_token_probs"),
    "top_k": ("engine.generate:next_token_probs", "engine.generate:sample"),
    "top_p": ("engine.generate:next_token_probs", "engine.generate:sample"),
    "greedy_generate": ("engine.generate:generate", "engine.generate:generate_stream", "engine.model:GPT.generate",
                        "engine.model:GPT.generate_stream"),
}


def forbidden(task: str) -> tuple:
    """The entries refused while task ``task`` calls the learner's code."""
    return tuple(REBUILDS.get(task, ())) + ALWAYS


def every_entry() -> list:
    out = list(ALWAYS)
    for v in REBUILDS.values():
        out += [e for e in v if e not in out]
    return out
