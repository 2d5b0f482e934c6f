"""Deploying a model: the decoder as one ONNX graph, with its key/value cache as inputs and outputs.

``export_onnx(model, path)`` writes any ``GPT`` (every attention layout: dense, banded, strided,
fixed, alternating or one per layer) as a standard ONNX graph (opset 17, no custom operators) that
onnxruntime runs on a server, in a phone app or in a web page (onnxruntime-web: the book runs the
course model that way). ``export_course_model(out_dir)`` writes the shipped model and a
``model.json`` describing the graph for the book's front end; on the command line:

    python -m engine.onnx OUT_DIR [--float16] [--xray] [--model SOURCE]

The IO contract (B batch, T new tokens, P tokens already in the cache, S = P + T, H heads,
D = d_model / H, V vocabulary, L layers):

=====================================  =================  ==========================================
name                                   shape              what
=====================================  =================  ==========================================
``input_ids`` (int64)                  (B, T)             the new tokens, at positions P .. S - 1
``past_key_i``, ``past_value_i``       (B, H, P, D)       layer i's cache; P = 0 (empty) for a prompt
``logits``                             (B, T, V)          next-token logits at every new position
``present_key_i``, ``present_value_i`` (B, H, S, D)       the cache to pass back with the next token
``lens_logits`` (``xray=True``)        (L + 1, B, T, V)   the logit lens: ln_f and the unembedding
                                                          applied after the embedding and each block
``attn`` (``xray=True``)               (L, B, H, T, S)    every layer's attention weights
=====================================  =================  ==========================================

All floats are float32 (``dtype="float16"`` only stores the weight matrices in half precision,
halving the file; the graph casts them back and computes in float32). The position of the first
new token is read off ``past_key_0``'s shape, so one graph serves the prompt and every new token;
S must not exceed n_ctx. The logits are the engine's own (a calibration temperature lives in
ln_f's weights, so it is in the graph too); ``engine.onnx.greedy`` is the generation loop.

Deploying a model trained here (``pip install onnxruntime``; ``SOURCE`` as for ``load_model``)::

    import numpy as np, onnxruntime as ort
    from engine.loading import load_model
    from engine.onnx import export_onnx, greedy

    model, enc = load_model("runs/my-run")
    export_onnx(model, "model.onnx")
    session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    ids = greedy(session, enc.encode("ROMEO:"), 50, model.cfg)    # == model.generate(..., temperature=0)
    print(enc.decode(ids.tolist()))

To sample rather than take the argmax, feed ``logits[:, -1]`` to ``engine.generate.next_token_probs``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .config import GPTConfig
from .files import sha256_file
from .params import tree_map

WEIGHT_DTYPES = ("float32", "float16")


def _graph():
    try:
        from . import onnx_graph
    except ImportError as e:  # the optional extra: the engine itself never needs onnx
        raise ImportError("engine.onnx needs the onnx package: pip install onnx "
                          "(or the project's [onnx] extra)") from e
    return onnx_graph


def to_onnx(model, *, xray: bool = False, dtype: str = "float32"):
    """The ``onnx.ModelProto`` of ``model`` (a ``GPT``); see the module's docstring for its IO."""
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"dtype must be one of {WEIGHT_DTYPES}, got {dtype!r}")
    cfg = getattr(model, "cfg", None)
    if not isinstance(cfg, GPTConfig) or not hasattr(model, "params"):
        raise TypeError(f"export_onnx takes an engine GPT model, got {type(model).__name__}")
    from .backend import to_numpy

    params = tree_map(lambda a: np.asarray(to_numpy(a), dtype=np.float32), model.params)
    proto = _graph().decoder_graph(params, cfg, xray=bool(xray), weight_dtype=dtype)
    meta = {"engine_config": json.dumps(cfg.to_dict()), "weights_dtype": dtype, "xray": str(bool(xray)).lower()}
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    return proto


def export_onnx(model, path, *, xray: bool = False, dtype: str = "float32") -> Path:
    """Write ``model`` (a ``GPT``) to ``path`` as an ONNX graph with a KV cache. Returns the path.

    ``xray``: add the ``lens_logits`` and ``attn`` outputs. ``dtype``: "float32" or "float16"
    (the weight matrices stored in half precision, computed in float32).
    """
    import onnx

    proto = to_onnx(model, xray=xray, dtype=dtype)
    onnx.checker.check_model(proto)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    return path


# ---------------------------------------------------------------------- running the graph
def empty_past(cfg: GPTConfig, batch: int = 1) -> dict:
    """{past_key_i, past_value_i: (batch, H, 0, D) float32}: the cache before the prompt."""
    z = np.zeros((batch, cfg.n_head, 0, cfg.d_head), dtype=np.float32)
    return {f"past_{kind}_{i}": z for i in range(cfg.n_layer) for kind in ("key", "value")}


def run(session, ids, past: dict, cfg: GPTConfig) -> tuple[np.ndarray, dict]:
    """One call of the graph: ids (B, T) ints after the cache ``past`` -> (logits (B, T, V), new cache).

    ``session``: an onnxruntime ``InferenceSession`` (or anything with its ``run``)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 2:
        raise ValueError(f"ids must have shape (B, T), got {ids.shape}")
    names = ["logits"] + [f"present_{kind}_{i}" for i in range(cfg.n_layer) for kind in ("key", "value")]
    out = session.run(names, {"input_ids": ids, **past})
    new = {n.replace("present_", "past_"): a for n, a in zip(names[1:], out[1:])}
    return out[0], new


def greedy(session, ids, max_new_tokens: int, cfg: GPTConfig) -> np.ndarray:
    """Greedy generation through the graph and its cache: the prompt once, then one token per call.

    ids: (T,) or (B, T) ints -> prompt plus ``max_new_tokens`` tokens, like
    ``GPT.generate(ids, max_new_tokens, temperature=0)``."""
    a = np.asarray(ids, dtype=np.int64)
    squeeze = a.ndim == 1
    seq = a[None] if squeeze else a
    if seq.shape[1] + max_new_tokens > cfg.n_ctx:
        raise ValueError(f"prompt ({seq.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                         f"context n_ctx = {cfg.n_ctx}")
    past, step = empty_past(cfg, seq.shape[0]), seq
    for _ in range(max_new_tokens):
        logits, past = run(session, step, past, cfg)
        step = logits[:, -1].argmax(axis=-1)[:, None]
        seq = np.concatenate([seq, step], axis=1)
    return seq[0] if squeeze else seq


# ---------------------------------------------------------------------- the book's model
def describe(model, enc, *, xray: bool, dtype: str, file: str = "model.onnx") -> dict:
    """The IO contract of an exported model as a dict (written as model.json for the front end)."""
    cfg = model.cfg
    layers = [f"{kind}_{i}" for i in range(cfg.n_layer) for kind in ("key", "value")]
    outputs = ["logits"] + ["present_" + n for n in layers] + (["lens_logits", "attn"] if xray else [])
    return {
        "file": file, "format": "onnx", "opset": 17, "weights_dtype": dtype, "compute_dtype": "float32",
        "name": cfg.name, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "d_head": cfg.d_head,
        "d_model": cfg.d_model, "n_ctx": cfg.n_ctx, "vocab_size": cfg.vocab_size,
        "eos_id": getattr(enc, "eot_token", None), "tokenizer": getattr(enc, "name", None),
        "layouts": list(cfg.layer_layouts()), "window": cfg.window, "stride": cfg.stride, "fixed_c": cfg.fixed_c,
        "inputs": {"input_ids": ["batch", "sequence"], **{"past_" + n: ["batch", cfg.n_head, "past_sequence",
                                                                         cfg.d_head] for n in layers}},
        "outputs": outputs, "xray": bool(xray),
        "notes": "positions start at past_sequence (read off past_key_0); feed the present_* outputs back as "
                 "past_*; past tensors of length 0 for the prompt; past + new tokens <= n_ctx",
    }


def export_course_model(out_dir, *, dtype: str = "float16", xray: bool = True, source="shakespeare") -> dict:
    """Write ``model.onnx`` and ``model.json`` for ``source`` (default: the shipped course model) into
    ``out_dir``. Returns the model.json dict, with the file's size in bytes and SHA-256."""
    from .loading import load_model

    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"dtype must be one of {WEIGHT_DTYPES}, got {dtype!r}")
    model, enc = load_model(source)
    out = Path(out_dir)
    path = export_onnx(model, out / "model.onnx", xray=xray, dtype=dtype)
    info = describe(model, enc, xray=xray, dtype=dtype, file=path.name)
    info.update(bytes=path.stat().st_size, sha256=sha256_file(path))
    (out / "model.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.onnx",
                                 description="Export a model as model.onnx + model.json (see engine.onnx).")
    ap.add_argument("out_dir", type=Path, help="folder to write model.onnx and model.json into")
    ap.add_argument("--float16", action="store_true", help="store the weight matrices in float16 (half the size)")
    ap.add_argument("--xray", action="store_true", help="add the logit-lens and attention-weight outputs")
    ap.add_argument("--model", default="shakespeare",
                    help="the shipped model's name or a model folder, as for load_model (default: shakespeare)")
    a = ap.parse_args(argv)
    t = time.perf_counter()
    info = export_course_model(a.out_dir, dtype="float16" if a.float16 else "float32", xray=a.xray, source=a.model)
    print(f"wrote {a.out_dir / info['file']} ({info['bytes'] / 1e6:.1f} MB, {info['weights_dtype']} weights"
          f"{', x-ray outputs' if a.xray else ''}) and model.json in {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
