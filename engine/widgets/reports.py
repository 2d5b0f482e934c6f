"""The book's interactive widgets (ipywidgets 8), one or more per chapter.

Each widget is a thin ``VBox`` over a pure function that does the work, so the
logic is tested without a kernel: set a control's ``.value`` and read
``widget.output.value`` (an HTML string). Controls are attributes
(``widget.temperature``, ``widget.n_layer``...). Updates happen on
``observe(..., names="value")``; sliders use ``continuous_update=False`` so a
drag runs the model once, not once per pixel.

=========================  ==========================================  =======
widget                     pure function(s)                            chapter
=========================  ==========================================  =======
``GenerationPlayground``   ``generate_text``                           1, 7
``SlidingWindowExplorer``  ``sliding_window_examples``                 2
``TokenizerPlayground``    ``tokenize_report``                         3
``ParameterCalculator``    ``parameter_report``                        4, 9
``XRayViewer``             ``logit_lens_table``, ``xray``              5
``AttentionExplorer``      ``attention_summary``                       6
``SamplingExplorer``       ``sampling_table``                          7
=========================  ==========================================  =======
"""
from __future__ import annotations

import base64
import html
import io

import numpy as np

from ..attention import LAYOUTS, attention_mask
from ..backend import to_numpy
from ..config import DTYPE_BYTES, GPTConfig
from ..generate import next_token_probs
from ..units import human

try:  # the engine itself does not need ipywidgets; only these classes do
    import ipywidgets as W
except ImportError:  # pragma: no cover
    W = None

# 12 pale colours that keep black text readable; token i gets colour i % 12.
PALETTE = ["#fbb4ae", "#b3cde3", "#ccebc5", "#decbe4", "#fed9a6", "#ffffcc",
           "#e5d8bd", "#fddaec", "#d9d9d9", "#bfe5e0", "#f2c9a0", "#c9d4f2"]

SECONDS_PER_YEAR = 365.25 * 24 * 3600


def _need_widgets():
    if W is None:  # pragma: no cover
        raise ImportError("engine.widgets needs ipywidgets: pip install 'ipywidgets>=8'")


def _esc(s: str) -> str:
    """Escape a token piece for HTML, showing spaces and newlines (they matter in BPE)."""
    return html.escape(s).replace(" ", "&middot;").replace("\n", "&#8629;")


def _png(fig) -> str:
    """A Matplotlib figure as an <img> tag with a data URI (renders from saved state, no kernel)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'


def _table(header, rows) -> str:
    th = "".join(f"<th style='padding:2px 8px;text-align:left'>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='engine-widget-table'><tr>{th}</tr>{body}</table>"


def _piece(enc, i: int) -> str:
    return enc.decode_single_token_bytes(int(i)).decode("utf-8", errors="replace")


# ====================================================================== chapter 1, 7: generation
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
    new = [int(t) for t in to_numpy(out)[len(ids):]]
    return enc.decode(ids), enc.decode(new)


# ====================================================================== chapter 3: tokens
def tokenize_report(text: str, enc) -> dict:
    """How ``enc`` cuts ``text``: ids, pieces, counts and a coloured HTML rendering.

    Returns {"ids", "pieces", "n_tokens", "n_chars", "n_words", "chars_per_token", "html"}.
    """
    ids = enc.encode(text, allowed_special="all")
    pieces = [_piece(enc, i) for i in ids]
    spans = "".join(f"<span title='{i}' style='background:{PALETTE[k % len(PALETTE)]};padding:1px 0;"
                    f"margin:0 1px;font-family:monospace'>{_esc(p)}</span>" for k, (i, p) in enumerate(zip(ids, pieces)))
    n_words = len(text.split())
    return {
        "ids": ids, "pieces": pieces, "n_tokens": len(ids), "n_chars": len(text), "n_words": n_words,
        "chars_per_token": len(text) / len(ids) if ids else 0.0,
        "html": f"<div style='line-height:1.9'>{spans}</div>",
    }


# ====================================================================== chapter 4: parameters
def parameter_report(n_layer: int, d_model: int, n_ctx: int = 2048, vocab_size: int = 50257,
                     n_head: int | None = None, tokens: float = 300e9, gpu_flops: float = 28e12) -> dict:
    """Parameters, memory and training cost of a GPT of this shape.

    Training FLOPs use 6 N D (Kaplan et al. 2020; the GPT-3 paper's Table D.1), with D =
    ``tokens``; GPU-years divide that by a sustained ``gpu_flops`` (28e12: a V100's tensor-core
    figure used in public estimates of GPT-3's cost).
    Returns {"n_params", "per_layer", "embedding", "weights_fp32", "weights_fp16",
    "training_bytes", "train_flops", "gpu_years", "config"}.
    """
    if n_head is None:  # heads of 128 like the large GPT-3s, or fewer when d_model is small
        n_head = max(1, d_model // 128) if d_model % 128 == 0 else 1
    cfg = GPTConfig(n_layer=n_layer, n_head=n_head, d_model=d_model, n_ctx=n_ctx, vocab_size=vocab_size)
    n = cfg.n_params()
    mem16 = cfg.memory_bytes("float16")
    flops = 6.0 * n * tokens
    return {
        "n_params": n, "per_layer": cfg.params_per_layer(), "embedding": (vocab_size + n_ctx) * d_model,
        "weights_fp32": n * DTYPE_BYTES["float32"], "weights_fp16": n * DTYPE_BYTES["float16"],
        "training_bytes": mem16["training_total"], "train_flops": flops,
        "gpu_years": flops / gpu_flops / SECONDS_PER_YEAR, "config": cfg,
    }


# ====================================================================== chapter 5: X-ray
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
        rows.append([(_piece(enc, i), float(p[i])) for i in top])
    return rows


# ====================================================================== chapter 6: attention
def attention_summary(kind: str, T: int, window: int = 8, stride: int = 4, c: int = 1) -> dict:
    """A layout's mask and what it costs: {"mask" (T, T) bool, "kept", "dense", "fraction",
    "per_query_max"}. ``kept`` counts query-key pairs scored; dense scores T (T + 1) / 2."""
    if kind not in LAYOUTS:
        raise ValueError(f"unknown attention layout {kind!r}; choose from {LAYOUTS}")
    m = attention_mask(kind, T, window=window, stride=stride, c=min(c, stride))
    kept, dense = int(m.sum()), T * (T + 1) // 2
    return {"mask": m, "kept": kept, "dense": dense, "fraction": kept / dense,
            "per_query_max": int(m.sum(axis=1).max())}


def _mask_png(mask, title: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.2, 3.2))
    ax.imshow(mask, cmap="Blues", vmin=0, vmax=1.3, interpolation="nearest")
    ax.set_xlabel("key position j")
    ax.set_ylabel("query position i")
    ax.set_title(title, fontsize=9)
    return _png(fig)


# ====================================================================== chapter 7: sampling
def sampling_table(logits, enc, temperature: float = 1.0, top_k=None, top_p=None, n: int = 10):
    """The ``n`` most likely next tokens before and after temperature / top-k / top-p.

    logits: (V,). Returns (rows, kept) with rows [(piece, p_raw, p_sampled)], sorted by p_raw,
    and ``kept`` the number of tokens that can still be drawn.
    """
    raw = next_token_probs(logits)
    p = next_token_probs(logits, temperature, top_k, top_p)
    top = np.argsort(-raw, kind="stable")[:n]
    return [(_piece(enc, i), float(raw[i]), float(p[i])) for i in top], int((p > 0).sum())


# ====================================================================== the widgets
class _Widget(W.VBox if W is not None else object):
    """A VBox of controls above an HTML output; subclasses define ``render() -> str``."""

    def __init__(self, controls):
        _need_widgets()
        self.output = W.HTML()
        super().__init__(children=[*controls, self.output])
        for c in controls:
            if hasattr(c, "value"):
                c.observe(self._update, names="value")
        self._update()

    def _update(self, change=None):
        try:
            self.output.value = self.render()
        except ValueError as e:  # bad input from the reader: say why, in the widget
            self.output.value = f"<p style='color:#b00'>{html.escape(str(e))}</p>"


def _islider(desc, value, lo, hi, step=1):
    return W.IntSlider(value=value, min=lo, max=hi, step=step, description=desc, continuous_update=False,
                       style={"description_width": "initial"})


def _fslider(desc, value, lo, hi, step):
    return W.FloatSlider(value=value, min=lo, max=hi, step=step, description=desc, continuous_update=False,
                         style={"description_width": "initial"})


class GenerationPlayground(_Widget):
    """Type a prompt; the model continues it (chapter 1, 7)."""

    def __init__(self, model, enc, prompt: str = "ROMEO:", max_new_tokens: int = 40, temperature: float = 0.8,
                 seed: int = 0):
        self.model, self.enc = model, enc
        self.prompt = W.Text(value=prompt, description="prompt", continuous_update=False,
                             layout=W.Layout(width="95%"))
        self.max_new_tokens = _islider("new tokens", max_new_tokens, 1, min(200, model.cfg.n_ctx - 1))
        self.temperature = _fslider("temperature", temperature, 0.0, 2.0, 0.1)
        self.seed = W.BoundedIntText(value=seed, min=0, max=10**6, description="seed")
        super().__init__([self.prompt, self.max_new_tokens, self.temperature, self.seed])

    def render(self):
        p, new = generate_text(self.model, self.enc, self.prompt.value, self.max_new_tokens.value,
                               self.temperature.value, seed=self.seed.value)
        return (f"<pre style='white-space:pre-wrap'>{html.escape(p)}"
                f"<b style='color:#1f5fa8'>{html.escape(new)}</b></pre>")


class TokenizerPlayground(_Widget):
    """Type text; see its tokens coloured, their ids and the counts (chapter 3)."""

    def __init__(self, enc, text: str = "Second Law of Robotics: A robot must obey the orders given it by human beings"):
        self.enc = enc
        self.text = W.Textarea(value=text, description="text", continuous_update=False,
                               layout=W.Layout(width="95%", height="5em"))
        super().__init__([self.text])

    def render(self):
        r = tokenize_report(self.text.value, self.enc)
        return (f"{r['html']}<p>{r['n_chars']} characters, {r['n_words']} words, {r['n_tokens']} tokens "
                f"({r['chars_per_token']:.2f} characters per token)</p>"
                f"<p style='font-family:monospace'>ids: {r['ids']}</p>")


class ParameterCalculator(_Widget):
    """Layers, width, context -> parameters, memory, training FLOPs and GPU-years (chapter 4)."""

    def __init__(self, n_layer: int = 96, d_model: int = 12288, n_ctx: int = 2048, tokens_billions: int = 300):
        self.n_layer = _islider("layers", n_layer, 1, 128)
        self.d_model = _islider("d_model", d_model, 128, 16384, 128)
        self.n_ctx = _islider("context", n_ctx, 128, 8192, 128)
        self.tokens = _islider("training tokens (billions)", tokens_billions, 1, 2000)
        super().__init__([self.n_layer, self.d_model, self.n_ctx, self.tokens])

    def report(self):
        return parameter_report(self.n_layer.value, self.d_model.value, self.n_ctx.value,
                                tokens=self.tokens.value * 1e9)

    def render(self):
        r = self.report()
        rows = [
            ("parameters", f"{r['n_params']:,} ({human(r['n_params'], words=True)})"),
            ("per layer", f"{r['per_layer']:,}"),
            ("embeddings (tokens + positions)", f"{r['embedding']:,}"),
            ("weights in fp32 / fp16", f"{human(r['weights_fp32'], 'B', words=True)} / {human(r['weights_fp16'], 'B', words=True)}"),
            ("training state (fp16 weights and grads, fp32 master and Adam)", human(r["training_bytes"], "B", words=True)),
            ("training compute, 6 N D", f"{r['train_flops']:.3g} FLOPs"),
            ("GPU-years at 28 TFLOP/s", f"{r['gpu_years']:,.1f}"),
        ]
        return _table(("", "value"), rows)


class XRayViewer(_Widget):
    """A prompt through every layer: residual norms, one attention map, the logit lens (chapter 5)."""

    def __init__(self, model, enc, prompt: str = "ROMEO: What light through yonder window", k: int = 3):
        self.model, self.enc, self.k = model, enc, k
        self.prompt = W.Text(value=prompt, description="prompt", continuous_update=False,
                             layout=W.Layout(width="95%"))
        self.layer = _islider("layer", 0, 0, model.cfg.n_layer - 1)
        self.head = _islider("head", 0, 0, model.cfg.n_head - 1)
        self._cache = (None, None)
        super().__init__([self.prompt, self.layer, self.head])

    def _xray(self):
        if self._cache[0] != self.prompt.value:
            if not self.prompt.value:
                raise ValueError("the prompt is empty")
            ids = self.enc.encode(self.prompt.value)[-self.model.cfg.n_ctx:]
            self._cache = (self.prompt.value, (ids, xray(self.model, ids)))
        return self._cache[1]

    def render(self):
        import matplotlib.pyplot as plt

        ids, xr = self._xray()
        pieces = [_piece(self.enc, i) for i in ids]
        lens = logit_lens_table(self.model, self.enc, ids, -1, self.k, xr=xr)
        rows = [("embedding" if li == 0 else f"after layer {li - 1}",
                 ", ".join(f"<code>{_esc(p)}</code> {q:.2f}" for p, q in row)) for li, row in enumerate(lens)]
        att = to_numpy(xr.attention[self.layer.value])[self.head.value]
        fig, ax = plt.subplots(figsize=(3.6, 3.6))
        ax.imshow(att, cmap="viridis")
        ax.set_xticks(range(len(pieces)), [p.strip() or "_" for p in pieces], rotation=90, fontsize=7)
        ax.set_yticks(range(len(pieces)), [p.strip() or "_" for p in pieces], fontsize=7)
        layout = self.model.cfg.layer_layouts()[self.layer.value]
        ax.set_title(f"layer {self.layer.value} ({layout}), head {self.head.value}", fontsize=9)
        norms = xr.residual_norms()[:, -1]
        return (f"<p>next-token guesses for the last position (<code>{_esc(pieces[-1])}</code>), "
                f"read after each layer (the logit lens):</p>"
                + _table(("stage", f"top {self.k}"), rows) + _png(fig)
                + f"<p>residual norm at the last position, per stage: "
                f"{', '.join(f'{v:.1f}' for v in norms)}</p>")


class AttentionExplorer(_Widget):
    """Pick a layout and sizes; see which keys each query sees and how many scores that is (chapter 6)."""

    def __init__(self, kind: str = "banded", T: int = 32, window: int = 8, stride: int = 4, c: int = 1):
        self.kind = W.Dropdown(options=list(LAYOUTS), value=kind, description="layout")
        self.T = _islider("context T", T, 4, 128)
        self.window = _islider("window", window, 1, 64)
        self.stride = _islider("stride", stride, 1, 32)
        self.c = _islider("c (fixed)", c, 1, 32)
        super().__init__([self.kind, self.T, self.window, self.stride, self.c])

    def summary(self):
        return attention_summary(self.kind.value, self.T.value, self.window.value, self.stride.value, self.c.value)

    def render(self):
        s = self.summary()
        return (_mask_png(s["mask"], f"{self.kind.value}, T = {self.T.value}")
                + f"<p>{s['kept']:,} of {s['dense']:,} dense scores ({s['fraction']:.0%}); "
                  f"at most {s['per_query_max']} keys per query</p>")


class SamplingExplorer(_Widget):
    """Temperature, top-k and top-p reshape the next-token distribution (chapter 7)."""

    def __init__(self, model, enc, prompt: str = "ROMEO:", n: int = 10):
        self.model, self.enc, self.n = model, enc, n
        ids = enc.encode(prompt)[-model.cfg.n_ctx:]
        self.prompt_text = prompt
        self.logits = to_numpy(model.forward(np.asarray(ids)))[-1]
        self.temperature = _fslider("temperature", 1.0, 0.0, 2.0, 0.1)
        self.top_k = _islider("top-k (0 = off)", 0, 0, 50)
        self.top_p = _fslider("top-p", 1.0, 0.05, 1.0, 0.05)
        super().__init__([self.temperature, self.top_k, self.top_p])

    def table(self):
        return sampling_table(self.logits, self.enc, self.temperature.value, self.top_k.value or None,
                              self.top_p.value, self.n)

    def render(self):
        rows, kept = self.table()
        bar = "<div style='background:#1f5fa8;height:0.8em;width:{:.0f}px'></div>"
        body = [(f"<code>{_esc(p)}</code>", f"{a:.3f}", f"{b:.3f}", bar.format(200 * b)) for p, a, b in rows]
        return (f"<p>next token after <code>{_esc(self.prompt_text)}</code>; {kept:,} of "
                f"{self.logits.shape[-1]:,} tokens can be drawn</p>"
                + _table(("token", "p (T=1)", "p sampled", ""), body))
