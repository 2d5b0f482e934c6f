"""One player for the book's animations: a list of frames the engine computed, played by the page.

A frame is a caption plus a few drawing primitives (plain JSON, so the frames are saved with the
notebook and the static book plays them with no kernel); ``js/animation.js`` draws them and adds
play, pause, step and a scrubber. A chapter adds an animation in a few lines::

    from engine.widgets import Animation, frames
    Animation(frames.bpe_frames(text, sample, 12), name="bpe", title="BPE, merge by merge")

The primitives (each with a ``key`` the page exposes as ``data-key``, and the value it shows as
``data-value``, so that tests can read what a frame displays):

* ``tokens(key, [(text, role), ...])``: a row of token pieces, coloured by role;
* ``bars(key, [(label, value, text, role), ...], vmax)``: horizontal bars with labels and values;
* ``grid(key, rows, legend)``: a grid of cells, each row a string of one-character cell codes;
* ``counter(key, label, value, text)``: a number, big;
* ``series(key, {name: [values so far]}, x_max, y_min, y_max)``: a line chart up to this frame;
* ``note(key, text)``: a line of text.

Roles (colours) the page knows: prompt, generated, new, context, target, rest, even, odd, right,
wrong, current, done, todo, dense, banded.
"""
from __future__ import annotations

import json
import math

import traitlets as t

from .base import CourseWidget, esm

KINDS = ("tokens", "bars", "grid", "counter", "series", "note")


# ---------------------------------------------------------------------- the primitives
def tokens(key: str, pieces, label: str = "") -> dict:
    """A row of tokens: pieces is [(text, role), ...] (a bare string gets role "rest")."""
    pieces = [(p, "rest") if isinstance(p, str) else (str(p[0]), str(p[1])) for p in pieces]
    return {"kind": "tokens", "key": key, "label": label, "tokens": [list(p) for p in pieces]}


def bars(key: str, rows, vmax: float | None = None, label: str = "") -> dict:
    """Horizontal bars: rows is [(label, value, text, role), ...]; ``vmax`` is the full width
    (default: the largest value), fixed across frames so that bars are comparable."""
    rows = [[str(r[0]), float(r[1]), str(r[2]), str(r[3]) if len(r) > 3 else "rest"] for r in rows]
    if vmax is None:
        vmax = max([r[1] for r in rows] + [1e-12])
    return {"kind": "bars", "key": key, "label": label, "bars": rows, "max": float(vmax)}


def grid(key: str, rows, legend: dict, label: str = "") -> dict:
    """A grid: rows is a list of equal-length strings, one character per cell; legend maps each
    character to (role, description). Cells whose character is not in the legend are blank."""
    rows = [str(r) for r in rows]
    if len({len(r) for r in rows}) > 1:
        raise ValueError("grid rows must all have the same length")
    return {"kind": "grid", "key": key, "label": label, "rows": rows,
            "legend": {str(k): [str(v[0]), str(v[1])] for k, v in legend.items()}}


def counter(key: str, label: str, value, text: str | None = None) -> dict:
    """A counted number; ``text`` is how it is shown (default: with thousands separators)."""
    if text is None:
        text = f"{value:,}" if isinstance(value, int) else f"{value:,.3g}"
    return {"kind": "counter", "key": key, "label": label, "value": value, "text": text}


def series(key: str, lines: dict, x_max: int, y_min: float, y_max: float, label: str = "",
           x_label: str = "step") -> dict:
    """A line chart of the values so far: lines maps a name to [y0, y1, ...] (x = 1, 2, ...);
    the axes (x up to ``x_max``, y from ``y_min`` to ``y_max``) stay fixed across frames."""
    return {"kind": "series", "key": key, "label": label, "x_label": x_label,
            "lines": {str(k): [float(v) for v in vs] for k, vs in lines.items()},
            "x_max": int(x_max), "y_min": float(y_min), "y_max": float(y_max)}


def note(key: str, text: str) -> dict:
    """A line of text."""
    return {"kind": "note", "key": key, "text": str(text)}


def frame(caption: str, *items: dict) -> dict:
    """One frame: a caption and the primitives to draw, top to bottom."""
    return {"caption": str(caption), "items": list(items)}


def check_frames(frames) -> list[dict]:
    """Validate a list of frames (what ``Animation`` plays); returns it as a list.

    Raises ValueError naming the first bad frame: not a dict, no items, an unknown kind, a
    missing key, a value that is not finite or not JSON.
    """
    frames = list(frames)
    if not frames:
        raise ValueError("an animation needs at least one frame")
    for k, f in enumerate(frames):
        if not isinstance(f, dict) or "caption" not in f or not isinstance(f.get("items"), list):
            raise ValueError(f"frame {k} must be a dict with 'caption' and 'items' (use animation.frame)")
        for item in f["items"]:
            if not isinstance(item, dict) or item.get("kind") not in KINDS:
                raise ValueError(f"frame {k}: unknown primitive {item!r}; the kinds are {KINDS}")
            if not item.get("key"):
                raise ValueError(f"frame {k}: a {item['kind']} has no key")
        try:
            json.dumps(f, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"frame {k} is not plain JSON (finite numbers, strings, lists, dicts): {e}") from None
    return frames


class Animation(CourseWidget):
    """Play engine-computed frames: play, pause, step and a scrubber, in the book and in a notebook.

    frames: a list of ``frame(...)`` dicts; name: an id for the page (``data-animation``) and
    tests; fps: frames per second when playing; index: the frame shown (the page sets it as it
    plays; set it from Python to show a frame). The page plays by itself when the animation
    scrolls into view, except where the reader asked for reduced motion.
    """

    _esm = esm("animation")
    frames = t.List(t.Dict()).tag(sync=True)
    name = t.Unicode("animation").tag(sync=True)
    title = t.Unicode("").tag(sync=True)
    fps = t.Float(2.0).tag(sync=True)
    index = t.Int(0).tag(sync=True)
    autoplay = t.Bool(True).tag(sync=True)

    def __init__(self, frames, name: str = "animation", title: str = "", fps: float = 2.0,
                 autoplay: bool = True):
        frames = check_frames(frames)
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 0 < fps <= 60):
            raise ValueError(f"fps must be a number in (0, 60], got {fps!r}")
        super().__init__(frames=frames, name=name, title=title, fps=float(fps), index=0, autoplay=autoplay)

    @t.validate("index")
    def _index_in_range(self, proposal):
        n = len(self.frames)
        i = proposal["value"]
        if not 0 <= i < max(n, 1):
            raise t.TraitError(f"index must be in 0..{n - 1}, got {i}")
        return i

    def __len__(self) -> int:
        return len(self.frames)
