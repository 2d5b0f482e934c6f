"""Chapter 2: the window that slides over a text and makes one training example per position."""
from __future__ import annotations

import numpy as np
import traitlets as t

from .base import CourseWidget, esm


def sliding_window_examples(ids, context: int) -> list[tuple[list, object]]:
    """Every training example a window of ``context`` tokens makes from one sequence.

    ids: a sequence of tokens (ids or strings). Returns [(context_tokens, next_token), ...]:
    for each position t >= 1, the up to ``context`` tokens before t and the token at t.
    A model of context n learns from all of them at once, in one pass.
    (``js/sliding_window.js`` computes the same in the page.)
    """
    if not isinstance(context, (int, np.integer)) or context < 1:
        raise ValueError(f"context must be a positive integer, got {context!r}")
    ids = list(ids)
    return [(ids[max(0, t - context):t], ids[t]) for t in range(1, len(ids))]


class SlidingWindowExplorer(CourseWidget):
    """Slide a window over a sentence and see each (context -> next token) example.

    tokens: the sentence's words (``enc=None``, as chapter 2 does before tokens are introduced) or
    its token pieces; ``position`` (1..len-1) and ``context`` are the two controls. Everything
    after construction runs in the page, so it works the same in the static book.
    """

    _esm = esm("sliding_window")
    tokens = t.List(t.Unicode()).tag(sync=True)
    position = t.Int(1).tag(sync=True)
    context = t.Int(4).tag(sync=True)

    def __init__(self, text: str, enc=None, context: int = 4):
        if enc is None:
            tokens = text.split()
        else:
            tokens = [enc.decode_single_token_bytes(int(i)).decode("utf-8", errors="replace")
                      for i in enc.encode(text)]
        if len(tokens) < 2:
            raise ValueError("the text needs at least two tokens to make an example")
        n = len(tokens) - 1
        super().__init__(tokens=tokens, position=1, context=max(1, min(context, n)))
        self.text = text

    def examples(self):
        return sliding_window_examples(self.tokens, self.context)
