"""One base class for the book's widgets: a Python class with traits plus one ES module (anywidget).

The Python side computes the widget's data with the engine and keeps it in synced traits, so it is
saved with the notebook; the ES module in ``js/`` draws it and reacts to the widget's own controls.
In the static book (no kernel) the same module runs on the saved state: controls whose effect the
front end can compute (a window, a mask, a sampling rule, a parameter count) need nothing else; the
ones that need the model run it in the page (``js/model.js``). In a live kernel, a trait the page
sets (a new prompt) reaches Python, which recomputes with the NumPy engine.
"""
from __future__ import annotations

from pathlib import Path

import anywidget
import traitlets as t

JS = Path(__file__).resolve().parent / "js"


def esm(*names: str) -> str:
    """The ES module of a widget: ``js/common.js`` and then each named file, as one module text."""
    return "\n".join((JS / f"{n}.js").read_text() for n in ("common", *names))


class CourseWidget(anywidget.AnyWidget):
    """A widget of the book. Subclasses set ``_esm = esm("name")`` and their traits.

    ``error`` holds a message for the reader (bad input), shown by the front end instead of a result.
    """

    error = t.Unicode("").tag(sync=True)

    def __repr__(self) -> str:
        # what a notebook shows where widgets cannot render (stable text: nbval compares it)
        return f"{type(self).__name__}: an interactive widget (run this cell, or read the online book, to use it)"
