"""Files the static book serves so that its widgets run in the page: tokenizer ranks and ONNX models.

While the book is built, ``book/_ext/book_ext.py`` sets ``COURSE_SITE_DIR``; the chapters' kernels
inherit it, and a widget that needs the model or a tokenizer in the page publishes it there
(``publish_model``, ``publish_encoding``); the build copies the folder to ``_static/course/``.
Outside a book build (a notebook, a script) nothing is written and the widgets call back into Python.

Layout of the folder::

    tokenizers/<name>.tiktoken            ranks, one "base64(token bytes) rank" line per token
    models/<name>/model.onnx, model.json  the decoder with its KV cache and x-ray outputs (engine.onnx)
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..backend import to_numpy
from ..files import atomic_write
from ..params import tree_flatten

ENV = "COURSE_SITE_DIR"
MODEL_DTYPE = "float16"   # half the bytes; the page computes in float32 (tests/test_book.py checks parity)


def site_dir() -> Path | None:
    """The folder being published into, or None outside a book build."""
    p = os.environ.get(ENV)
    return Path(p) if p else None


def _write(path: Path, data: bytes) -> None:
    # atomic: a kernel interrupted mid-write never leaves half a file for the page
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def ranks_text(enc) -> str:
    """``enc``'s mergeable ranks in tiktoken's text format (what tiktoken's WASM build reads)."""
    ranks = sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1])
    return "".join(f"{base64.b64encode(tok).decode()} {rank}\n" for tok, rank in ranks)


def publish_encoding(enc, name: str) -> str | None:
    """Write ``tokenizers/<name>.tiktoken`` (once per build). Returns the name, None outside a build."""
    root = site_dir()
    if root is None:
        return None
    path = root / "tokenizers" / f"{name}.tiktoken"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, ranks_text(enc).encode())
    return name


def model_name(model) -> str:
    """A name fixed by the weights: the same model gets the same files, a fine-tuned one its own."""
    h = hashlib.sha256()
    for k, v in sorted(tree_flatten(model.params).items()):
        h.update(k.encode())
        h.update(np.ascontiguousarray(to_numpy(v)).tobytes())
    return f"{model.cfg.name or 'model'}-{h.hexdigest()[:12]}"


def publish_model(model, enc, encoding_name: str) -> str | None:
    """Export ``model`` for the page (``models/<name>/``) unless already there. Returns the name."""
    root = site_dir()
    if root is None:
        return None
    from ..onnx import describe, export_onnx  # noqa: PLC0415 - the onnx package is needed only in a build

    name = model_name(model)
    folder = root / "models" / name
    if not (folder / "model.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        export_onnx(model, folder / "model.onnx", xray=True, dtype=MODEL_DTYPE)
        info = describe(model, enc, xray=True, dtype=MODEL_DTYPE)
        info["tokenizer"] = encoding_name
        _write(folder / "model.json", (json.dumps(info, indent=1) + "\n").encode())
    return name
