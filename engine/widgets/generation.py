"""Chapters 1, 7 and 8: the model continues a prompt the reader types, one token at a time."""
from __future__ import annotations

import numpy as np
import traitlets as t

from ..backend import to_numpy
from .base import CourseWidget, esm
from .site import publish_encoding, publish_model
from .tokenizer import encoding_spec, site_encoding_name


def generate_text(model, enc, prompt: str, max_new_tokens: int = 40, temperature: float = 0.8,
                  top_k=None, top_p=None, seed: int = 0) -> tuple[str, str]:
    """Continue ``prompt`` with ``model``. Returns (prompt, continuation) as text.

    The prompt is cut to its last ``n_ctx - max_new_tokens`` tokens so that it always fits.
    """
    if not prompt:
        raise ValueError("the prompt is empty: type at least one character")
    ids = enc.encode(prompt, allowed_special="all")
    room = model.cfg.n_ctx - max_new_tokens
    if room < 1:
        raise ValueError(f"max_new_tokens ({max_new_tokens}) must be below the context n_ctx = {model.cfg.n_ctx}")
    ids = ids[-room:]
    out = model.generate(np.asarray(ids), max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                         seed=seed)
    new = [int(i) for i in to_numpy(out)[len(ids):]]
    return enc.decode(ids), enc.decode(new)


class GenerationPlayground(CourseWidget):
    """Type a prompt; the model continues it (chapters 1, 7, 8).

    In a kernel the NumPy engine generates (``generate_text``). In the static book the page runs the
    same model, exported to ONNX when the book is built, with onnxruntime-web: greedy (temperature 0)
    gives the engine's tokens; at other temperatures the page draws with the engine's rules from its
    own seeded generator.
    """

    _esm = esm("probs", "tiktoken", "model", "generation")
    prompt = t.Unicode("ROMEO:").tag(sync=True)
    max_new_tokens = t.Int(40).tag(sync=True)
    temperature = t.Float(0.8).tag(sync=True)
    seed = t.Int(0).tag(sync=True)
    max_tokens = t.Int(200).tag(sync=True)        # the slider's end: below the context
    shown_prompt = t.Unicode("").tag(sync=True)   # the prompt as the model saw it (cut to fit)
    continuation = t.Unicode("").tag(sync=True)
    model_name = t.Unicode("").tag(sync=True)     # the page's copy (site.py), '' outside a book build
    encoding_name = t.Unicode("").tag(sync=True)
    encoding = t.Dict().tag(sync=True)            # encoding_spec

    def __init__(self, model, enc, prompt: str = "ROMEO:", max_new_tokens: int = 40, temperature: float = 0.8,
                 seed: int = 0):
        self.model, self.enc = model, enc
        name = site_encoding_name(enc)
        super().__init__(prompt=prompt, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                         max_tokens=min(200, model.cfg.n_ctx - 1), encoding=encoding_spec(enc),
                         encoding_name=publish_encoding(enc, name) or "",
                         model_name=publish_model(model, enc, name) or "")
        self.observe(self._update, names=["prompt", "max_new_tokens", "temperature", "seed"])
        self._update()

    def _update(self, change=None):
        try:
            p, new = generate_text(self.model, self.enc, self.prompt, self.max_new_tokens, self.temperature,
                                   seed=self.seed)
        except ValueError as e:  # bad input from the reader: say why, in the widget
            self.error = str(e)
            return
        self.error = ""
        self.shown_prompt, self.continuation = p, new
