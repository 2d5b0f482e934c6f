"""Parameter trees: the nested {"wte", "wpe", "h": [block, ...], "ln_f"} dicts a GPT keeps its weights in.

Flattening gives the names checkpoints and Hugging Face files use ("h.0.attn.c_attn.w");
``init_params`` draws GPT-2's initialisation; ``check_params`` names every tensor that does not fit.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import to_numpy
from .config import GPTConfig


def tree_flatten(tree, prefix: str = "") -> dict:
    """Nested parameter (or gradient) tree -> {"h.0.attn.c_attn.w": array, ...}."""
    out = {}
    items = enumerate(tree) if isinstance(tree, list) else tree.items()
    for k, v in items:
        name = f"{prefix}{k}"
        if isinstance(v, (dict, list)):
            out.update(tree_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def tree_unflatten(flat: dict, n_layer: int) -> dict:
    """Inverse of ``tree_flatten`` for a GPT's parameter names."""
    tree: dict = {"h": [{} for _ in range(n_layer)]}
    for name, v in flat.items():
        parts = name.split(".")
        node = tree
        if parts[0] == "h":
            if len(parts) < 3 or not parts[1].isdigit() or int(parts[1]) >= n_layer:
                raise ValueError(f"unexpected tensor {name}: the config has layers h.0 .. h.{n_layer - 1}")
            node, parts = tree["h"][int(parts[1])], parts[2:]
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return tree


def tree_map(fn, tree):
    """``fn`` applied to every array of a tree; same nesting."""
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [tree_map(fn, v) for v in tree]
    return fn(tree)


def init_params(cfg: GPTConfig, seed: int = 0, dtype: str = "float32") -> dict:
    """Random parameters as GPT-2 initialises them, as NumPy arrays.

    Weights ~ N(0, 0.02); the two projections that write into the residual stream
    (attn.c_proj, mlp.c_proj) ~ N(0, 0.02 / sqrt(2 n_layer)) so that the stream's
    variance does not grow with depth (Radford et al. 2019, section 2.3); biases 0;
    LayerNorm gains 1.
    """
    rng = np.random.default_rng(seed)
    np_dtype = np.float64 if dtype == "float64" else np.float32
    flat = {}
    for name, shape in cfg.param_shapes().items():
        if name.endswith(".g"):
            a = np.ones(shape, np_dtype)
        elif name.endswith(".b"):
            a = np.zeros(shape, np_dtype)
        else:
            std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith("c_proj.w") else 0.02
            a = rng.standard_normal(shape, dtype=np_dtype) * np_dtype(std)
        flat[name] = a
    return tree_unflatten(flat, cfg.n_layer)


def _some(names, n: int = 6) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def check_flat(flat: dict, cfg: GPTConfig) -> None:
    """Raise a one-line ValueError naming every missing, unexpected, mis-shaped or non-float tensor.

    flat: {engine name: array}, before ``tree_unflatten`` (which cannot place a tensor like ``h.7.*``
    of a 2-layer config).
    """
    want = cfg.param_shapes()
    missing = sorted(set(want) - set(flat))
    extra = sorted(set(flat) - set(want))
    wrong = [f"{k}: got {tuple(flat[k].shape)}, config expects {want[k]}"
             for k in want if k in flat and tuple(flat[k].shape) != tuple(want[k])]
    # an integer weight would be silently converted (and truncated on the way out): refuse it
    ints = [f"{k} ({np.dtype(flat[k].dtype).name})" for k in want
            if k in flat and hasattr(flat[k], "dtype") and np.dtype(flat[k].dtype).kind != "f"]
    problems = []
    if missing:
        problems.append("missing: " + _some(missing))
    if extra:
        problems.append("unexpected: " + _some(extra))
    if wrong:
        problems.append("wrong shape: " + "; ".join(wrong[:3]) + (f" and {len(wrong) - 3} more" if len(wrong) > 3
                                                                  else ""))
    if ints:
        problems.append("not floating point: " + _some(ints))
    if problems:
        raise ValueError("parameters do not match the config: " + "; ".join(problems))


def check_params(params: dict, cfg: GPTConfig):
    """Raise a ValueError listing every missing, unexpected, mis-shaped or non-float tensor, or NaN/inf weights."""
    flat = tree_flatten(params)
    check_flat(flat, cfg)
    bad = [k for k, v in flat.items() if not bool(np.isfinite(to_numpy(v)).all())]
    if bad:
        raise ValueError("parameters contain NaN or inf in: " + ", ".join(bad))
