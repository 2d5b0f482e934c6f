"""Chapter 5: a prompt through every layer: the logit lens' guess after each one, and every attention map."""
from __future__ import annotations

import base64

import numpy as np
import traitlets as t

from ..backend import to_numpy
from ..generate import next_token_probs
from .base import CourseWidget, esm
from .site import publish_encoding, publish_model
from .tokenizer import encoding_spec, piece, site_encoding_name


def xray(model, ids):
    """Forward ``ids`` (T,) keeping every residual and attention map (an engine ``XRay``)."""
    return model.forward(np.asarray(ids), return_residuals=True, return_attention=True)


def logit_lens_table(model, enc, ids, position: int = -1, k: int = 3, xr=None) -> list[list[tuple[str, float]]]:
    """The top-``k`` next tokens (piece, probability) read off the residual stream after the
    embedding and after each layer, at ``position``: n_layer + 1 rows, the last one being
    the model's actual prediction."""
    xr = xr if xr is not None else xray(model, ids)
    rows = []
    for logits in xr.logit_lens():
        p = next_token_probs(to_numpy(logits)[position])
        top = np.argsort(-p, kind="stable")[:k]
        rows.append([(piece(enc, i), float(p[i])) for i in top])
    return rows


class XRayViewer(CourseWidget):
    """A prompt through every layer: the logit lens at the last position and one attention map (chapter 5).

    ``layer`` and ``head`` choose among attention maps that are all saved with the widget, so they
    work anywhere; a new ``prompt`` is run by the NumPy engine in a kernel, or in the static book by the
    same model exported to ONNX (with its logit-lens and attention outputs) and onnxruntime-web.
    """

    _esm = esm("probs", "tiktoken", "model", "xray")
    prompt = t.Unicode("").tag(sync=True)
    layer = t.Int(0).tag(sync=True)
    head = t.Int(0).tag(sync=True)
    k = t.Int(3).tag(sync=True)
    n_layer = t.Int(1).tag(sync=True)
    n_head = t.Int(1).tag(sync=True)
    layouts = t.List(t.Unicode()).tag(sync=True)
    pieces = t.List(t.Unicode()).tag(sync=True)    # the prompt's tokens (T,)
    lens = t.List().tag(sync=True)                 # n_layer + 1 rows of k [piece, p]
    attn_b64 = t.Unicode("").tag(sync=True)        # (n_layer, n_head, T, T) float32
    model_name = t.Unicode("").tag(sync=True)
    encoding_name = t.Unicode("").tag(sync=True)
    encoding = t.Dict().tag(sync=True)

    def __init__(self, model, enc, prompt: str = "ROMEO: What light through yonder window", k: int = 3):
        self.model, self.enc = model, enc
        cfg = model.cfg
        name = site_encoding_name(enc)
        super().__init__(prompt=prompt, k=k, n_layer=cfg.n_layer, n_head=cfg.n_head,
                         layouts=list(cfg.layer_layouts()), encoding=encoding_spec(enc),
                         encoding_name=publish_encoding(enc, name) or "",
                         model_name=publish_model(model, enc, name) or "")
        self.observe(self._update, names=["prompt"])
        self._update()

    def _update(self, change=None):
        if not self.prompt:
            self.error = "the prompt is empty"
            return
        ids = self.enc.encode(self.prompt)[-self.model.cfg.n_ctx:]
        xr = xray(self.model, ids)
        att = np.stack([to_numpy(a)[..., :, :] for a in xr.attention]).astype(np.float32)  # (L, H, T, T)
        self.error = ""
        self.pieces = [piece(self.enc, i) for i in ids]
        self.lens = [[[p, q] for p, q in row] for row in logit_lens_table(self.model, self.enc, ids, -1, self.k, xr)]
        self.attn_b64 = base64.b64encode(np.ascontiguousarray(att.reshape(-1)).tobytes()).decode()
