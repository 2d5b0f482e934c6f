"""Chapter 3: how a tokenizer cuts the text the reader types, for GPT-3's vocabulary and the course's."""
from __future__ import annotations

import traitlets as t

import hashlib

from ..loading import asset_dir
from ..tokenizer import get_encoding, load_encoding
from .base import CourseWidget, esm
from .site import publish_encoding, ranks_text


def piece(enc, i: int) -> str:
    """Token ``i`` as text (bytes that are not whole UTF-8 characters shown as U+FFFD)."""
    return enc.decode_single_token_bytes(int(i)).decode("utf-8", errors="replace")


def tokenize_report(text: str, enc) -> dict:
    """How ``enc`` cuts ``text``: {"ids", "pieces", "n_tokens", "n_chars", "n_words", "chars_per_token"}."""
    ids = enc.encode(text, allowed_special="all")
    return {"ids": ids, "pieces": [piece(enc, i) for i in ids], "n_tokens": len(ids), "n_chars": len(text),
            "n_words": len(text.split()), "chars_per_token": len(text) / len(ids) if ids else 0.0}


def default_encodings() -> dict:
    """label -> encoding: GPT-3's vocabulary and the course model's own."""
    return {"GPT-3 (r50k_base)": get_encoding("r50k_base"), "course model": load_encoding(asset_dir())}


def site_encoding_name(enc) -> str:
    """The name of ``enc``'s ranks file in the static book: fixed by its content."""
    if enc.name == "r50k_base":
        return "r50k_base"
    return "bpe-" + hashlib.sha256(ranks_text(enc).encode()).hexdigest()[:12]


def encoding_spec(enc, label: str = "") -> dict:
    """What the page needs besides the ranks file to rebuild ``enc`` with tiktoken's WASM build."""
    return {"pat_str": enc._pat_str, "special_tokens": dict(enc._special_tokens), "n_vocab": enc.n_vocab,
            "label": label or enc.name}


class TokenizerPlayground(CourseWidget):
    """Type text; see its tokens coloured, their ids and the counts (chapter 3).

    ``encoding`` picks one of ``encodings`` (label -> tiktoken Encoding; default: GPT-3's r50k_base and
    the course model's own). In a kernel Python tokenises with tiktoken; in the static book the page
    does, with the WASM build of the same tiktoken core and the ranks files the site serves.
    """

    _esm = esm("tiktoken", "tokenizer")
    text = t.Unicode("").tag(sync=True)
    encoding = t.Unicode("r50k_base").tag(sync=True)   # a key of specs
    specs = t.Dict().tag(sync=True)                     # site name -> encoding_spec
    ids = t.List(t.Int()).tag(sync=True)
    pieces = t.List(t.Unicode()).tag(sync=True)

    def __init__(self, enc=None, text: str = "Second Law of Robotics: A robot must obey the orders given it by "
                 "human beings", encodings: dict | None = None):
        encodings = dict(encodings) if encodings is not None else default_encodings()
        if enc is not None and not any(e is enc or e.name == enc.name for e in encodings.values()):
            encodings[enc.name] = enc
        self._encodings = {}
        specs = {}
        for label, e in encodings.items():
            name = site_encoding_name(e)
            publish_encoding(e, name)
            self._encodings[name] = e
            specs[name] = encoding_spec(e, label)
        first = next(iter(self._encodings))
        if enc is not None:
            first = next(k for k, e in self._encodings.items() if e is enc or e.name == enc.name)
        super().__init__(text=text, encoding=first, specs=specs)
        self.observe(self._update, names=["text", "encoding"])
        self._update()

    def _update(self, change=None):
        if self.encoding not in self._encodings:
            self.error = f"unknown encoding {self.encoding!r}; choose from {sorted(self._encodings)}"
            return
        r = tokenize_report(self.text, self._encodings[self.encoding])
        self.error = ""
        self.ids, self.pieces = r["ids"], r["pieces"]

    def report(self) -> dict:
        return tokenize_report(self.text, self._encodings[self.encoding])
