"""Chapter 6: which earlier tokens each token may look at under each attention layout, and the cost."""
from __future__ import annotations

import traitlets as t

from ..attention import LAYOUTS, attention_mask
from .base import CourseWidget, esm


def attention_summary(kind: str, T: int, window: int = 8, stride: int = 4, c: int = 1) -> dict:
    """A layout's mask and what it costs: {"mask" (T, T) bool, "kept", "dense", "fraction",
    "per_query_max"}. ``kept`` counts query-key pairs scored; dense scores T (T + 1) / 2.
    (``js/attention_explorer.js`` computes the same mask in the page with ``engine.attention.keep``'s rules.)"""
    if kind not in LAYOUTS:
        raise ValueError(f"unknown attention layout {kind!r}; choose from {LAYOUTS}")
    m = attention_mask(kind, T, window=window, stride=stride, c=min(c, stride))
    kept, dense = int(m.sum()), T * (T + 1) // 2
    return {"mask": m, "kept": kept, "dense": dense, "fraction": kept / dense,
            "per_query_max": int(m.sum(axis=1).max())}


class AttentionExplorer(CourseWidget):
    """Pick a layout and sizes; see which keys each query sees and how many scores that is (chapter 6).

    The mask is drawn in the page from the controls alone, so every control works in the static book.
    """

    _esm = esm("attention_explorer")
    layouts = t.List(t.Unicode()).tag(sync=True)
    kind = t.Unicode("banded").tag(sync=True)
    T = t.Int(32).tag(sync=True)
    window = t.Int(8).tag(sync=True)
    stride = t.Int(4).tag(sync=True)
    c = t.Int(1).tag(sync=True)

    def __init__(self, kind: str = "banded", T: int = 32, window: int = 8, stride: int = 4, c: int = 1):
        if kind not in LAYOUTS:
            raise ValueError(f"unknown attention layout {kind!r}; choose from {LAYOUTS}")
        super().__init__(layouts=list(LAYOUTS), kind=kind, T=T, window=window, stride=stride, c=c)

    def summary(self) -> dict:
        return attention_summary(self.kind, self.T, self.window, self.stride, self.c)
