"""Weights in and out: the Hugging Face GPT-2 format (``config.json`` + ``model.safetensors``).

This is how the real GPT-2 weights run on this engine: a folder written by
``GPT2LMHeadModel.save_pretrained`` loads with ``load_hf_gpt2``, and
``save_hf_gpt2`` writes a folder that ``transformers`` loads back. Hugging Face's
GPT-2 stores its linear layers as ``Conv1D`` with (in, out) weights, the same
layout as the engine, so the mapping is names only.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .config import GPTConfig
from .files import JSON_LIMIT, atomic_write, read_json, regular_file
from .model import GPT, check_params, tree_flatten, tree_unflatten
from .params import check_flat

PREFIX = "transformer."
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers some checkpoints carry


def engine_to_hf_name(name: str) -> str:
    """'h.0.attn.c_attn.w' -> 'transformer.h.0.attn.c_attn.weight'; 'wte' -> 'transformer.wte.weight'."""
    if name in ("wte", "wpe"):
        return f"{PREFIX}{name}.weight"
    stem, leaf = name.rsplit(".", 1)
    return f"{PREFIX}{stem}.{'bias' if leaf == 'b' else 'weight'}"


def hf_to_engine_name(name: str) -> str:
    """Inverse of ``engine_to_hf_name``; a name that is no GPT-2 weight's ("nodot") comes back as it is."""
    if name.startswith(PREFIX):
        name = name[len(PREFIX):]
    if "." not in name:
        return name  # then listed as an unexpected tensor
    stem, leaf = name.rsplit(".", 1)
    if stem in ("wte", "wpe"):
        return stem
    if leaf == "bias":
        return f"{stem}.b"
    return f"{stem}.{'g' if stem.split('.')[-1].startswith('ln_') else 'w'}"


def to_hf_state_dict(tree) -> dict[str, np.ndarray]:
    """Any tree shaped like the parameters (weights or gradients) -> {HF name: NumPy array}.

    Keys are those of ``GPT2LMHeadModel.state_dict()`` (without the tied ``lm_head.weight``),
    and the layouts already match, so ``model.load_state_dict(torch tensors of these)`` works
    with ``strict=False``.
    """
    flat = tree if all(isinstance(k, str) and not isinstance(v, (dict, list)) for k, v in tree.items()) \
        else tree_flatten(tree)
    return {engine_to_hf_name(k): to_numpy(v) for k, v in flat.items()}


def hf_config_dict(cfg: GPTConfig) -> dict:
    """config.json contents that transformers' GPT2Config reads, plus the engine's layout fields."""
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.n_ctx,
        "n_ctx": cfg.n_ctx,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": None if cfg.d_ff == 4 * cfg.d_model else cfg.d_ff,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "tie_word_embeddings": True,
        # GPT-2's <|endoftext|>; a smaller (course) vocabulary has its own, unknown here: none, rather
        # than token 0, at which transformers' generate would stop
        "bos_token_id": 50256 if cfg.vocab_size > 50256 else None,
        "eos_token_id": 50256 if cfg.vocab_size > 50256 else None,
        # transformers ignores these; the engine reads them back (GPT-3's sparse layers)
        "engine_attention": list(cfg.attention) if isinstance(cfg.attention, tuple) else cfg.attention,
        "engine_window": cfg.window, "engine_stride": cfg.stride, "engine_fixed_c": cfg.fixed_c,
        "engine_name": cfg.name,
    }


def config_from_hf(d: dict) -> GPTConfig:
    if not isinstance(d, dict):
        raise ValueError(f"config.json must hold a JSON object ({{...}}), not a {type(d).__name__}")
    act = d.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"config.json asks for activation {act!r}; this engine implements GPT-2's tanh GELU "
                         "('gelu_new') only")
    # Variants of GPT-2's attention that compute something else: refuse rather than run them wrong.
    if d.get("scale_attn_by_inverse_layer_idx", False):
        raise ValueError("config.json sets scale_attn_by_inverse_layer_idx: this engine scales attention scores "
                         "by 1/sqrt(d_head) only, as GPT-2 and GPT-3 do")
    if not d.get("scale_attn_weights", True):
        raise ValueError("config.json sets scale_attn_weights = false: this engine always scales attention "
                         "scores by 1/sqrt(d_head)")
    try:
        n_embd, n_layer, n_head = d["n_embd"], d["n_layer"], d["n_head"]
    except KeyError as e:
        raise ValueError(f"config.json lacks {e.args[0]!r}: is this a GPT-2 checkpoint?") from None
    attention = d.get("engine_attention", "dense")
    return GPTConfig(
        n_layer=n_layer, n_head=n_head, d_model=n_embd, n_ctx=d.get("n_positions", d.get("n_ctx", 1024)),
        vocab_size=d.get("vocab_size", 50257), d_ff=d.get("n_inner") or 4 * n_embd,
        layer_norm_epsilon=d.get("layer_norm_epsilon", 1e-5),
        attention=tuple(attention) if isinstance(attention, list) else attention,
        window=d.get("engine_window", 256), stride=d.get("engine_stride", 32), fixed_c=d.get("engine_fixed_c", 8),
        name=d.get("engine_name", ""),
    )


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Load a safetensors file with an error that says what is wrong with it."""
    from safetensors.numpy import load_file

    if not path.exists():
        raise FileNotFoundError(f"{path} not found: expected a model.safetensors written by save_pretrained "
                                "(PyTorch .bin checkpoints are not read; re-save with safe_serialization=True)")
    regular_file(path)  # a FIFO would hang, a device never end
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for bad headers and short files
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupted?): {e}") from None


def load_hf_gpt2(path, dtype: str = "float32", backend=None) -> GPT:
    """A ``GPT`` from a Hugging Face GPT-2 folder (config.json + model.safetensors).

    Keys may carry the ``transformer.`` prefix or not; the tied ``lm_head.weight`` must
    equal ``wte`` if present. Mismatched shapes, missing or unexpected tensors, and NaN
    or inf weights are refused with a list of the offending names.
    """
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"{cfg_file} not found: load_hf_gpt2 expects a folder written by save_pretrained")
    cfg = config_from_hf(read_json(cfg_file, JSON_LIMIT))  # a bounded regular file holding an object
    tensors = read_safetensors(path / "model.safetensors")
    flat, lm_head = {}, None
    for k, v in tensors.items():
        if k.endswith(IGNORED_SUFFIXES):
            continue
        if k in ("lm_head.weight", "transformer.lm_head.weight"):
            lm_head = v
            continue
        flat[hf_to_engine_name(k)] = v.astype(np.float32) if v.dtype == np.float16 else v
    check_flat(flat, cfg)  # before tree_unflatten, which cannot place an extra layer's tensors
    params = tree_unflatten(flat, cfg.n_layer)
    check_params(params, cfg)
    if lm_head is not None and not np.array_equal(lm_head, tensors.get("transformer.wte.weight", tensors.get("wte.weight"))):
        raise ValueError("lm_head.weight differs from wte: this engine ties the unembedding to the embedding")
    return GPT(cfg, dtype=dtype, backend=backend, params=params)


def save_hf_gpt2(model: GPT, path) -> Path:
    """Write ``model`` as a Hugging Face GPT-2 folder that ``GPT2LMHeadModel.from_pretrained`` loads.

    Files are written to a temporary name and renamed, so an interrupted save never
    leaves a half-written model.safetensors behind.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v if v.dtype in (np.float32, np.float64) else v.astype(np.float32))
               for k, v in to_hf_state_dict(model.params).items()}
    atomic_write(path / "model.safetensors", lambda f: save_file(tensors, f, metadata={"format": "pt"}))
    atomic_write(path / "config.json", lambda f: Path(f).write_text(json.dumps(hf_config_dict(model.cfg), indent=2)))
    return path
