"""Chapter 7: temperature, top-k and top-p reshape the next-token distribution."""
from __future__ import annotations

import base64

import numpy as np
import traitlets as t

from ..backend import to_numpy
from ..generate import next_token_probs
from .base import CourseWidget, esm
from .tokenizer import piece


def sampling_table(logits, enc, temperature: float = 1.0, top_k=None, top_p=None, n: int = 10):
    """The ``n`` most likely next tokens before and after temperature / top-k / top-p.

    logits: (V,). Returns (rows, kept) with rows [(piece, p_raw, p_sampled)], sorted by p_raw,
    and ``kept`` the number of tokens that can still be drawn.
    """
    raw = next_token_probs(logits)
    p = next_token_probs(logits, temperature, top_k, top_p)
    top = np.argsort(-raw, kind="stable")[:n]
    return [(piece(enc, i), float(raw[i]), float(p[i])) for i in top], int((p > 0).sum())


class SamplingExplorer(CourseWidget):
    """Temperature, top-k and top-p reshape the next-token distribution (chapter 7).

    The model's logits for the prompt are computed once, here, and saved with the widget (float32,
    base64); the page applies ``engine.generate.next_token_probs``' rules to them (``js/sampling.js``),
    so every control works in the static book.
    """

    _esm = esm("probs", "sampling")
    prompt = t.Unicode("").tag(sync=True)
    logits_b64 = t.Unicode("").tag(sync=True)      # (V,) float32
    top_ids = t.List(t.Int()).tag(sync=True)       # the n most likely tokens at T = 1
    top_pieces = t.List(t.Unicode()).tag(sync=True)
    temperature = t.Float(1.0).tag(sync=True)
    top_k = t.Int(0).tag(sync=True)                # 0: off
    top_p = t.Float(1.0).tag(sync=True)

    def __init__(self, model, enc, prompt: str = "ROMEO:", n: int = 10):
        ids = enc.encode(prompt)[-model.cfg.n_ctx:]
        if not ids:
            raise ValueError("the prompt is empty")
        self.logits = to_numpy(model.forward(np.asarray(ids)))[-1].astype(np.float32)
        top = np.argsort(-next_token_probs(self.logits), kind="stable")[:n]
        super().__init__(prompt=prompt, logits_b64=base64.b64encode(self.logits.tobytes()).decode(),
                         top_ids=[int(i) for i in top], top_pieces=[piece(enc, i) for i in top])
        self.enc, self.n = enc, n

    def probs(self):
        """The distribution the page shows, from Python: (V,) float64."""
        return next_token_probs(self.logits, self.temperature, self.top_k or None, self.top_p)

    def table(self):
        return sampling_table(self.logits, self.enc, self.temperature, self.top_k or None, self.top_p, self.n)
