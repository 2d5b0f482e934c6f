"""Big numbers for people: 1.2345e11 -> "123.5 B" (the command line) or "123.5 billion" (the widgets)."""
from __future__ import annotations

_SHORT = ((1e15, " P"), (1e12, " T"), (1e9, " B"), (1e6, " M"), (1e3, " K"))
_WORDS = ((1e12, "trillion"), (1e9, "billion"), (1e6, "million"), (1e3, "thousand"))
_BYTES = ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB"))


def human(n: float, unit: str = "", words: bool = False) -> str:
    """A count in powers of 1000.

    ``words=False``: 4 significant digits and a letter, then ``unit`` (1.2345e11, "FLOP" -> "123.5 BFLOP").
    ``words=True``: one decimal and a word (1.75e11 -> "175.0 billion"); ``unit="B"``: bytes ("350.0 GB").
    """
    if not words:
        for div, suffix in _SHORT:
            if abs(n) >= div:
                return f"{n / div:.4g}{suffix}{unit}"
        return f"{n:.4g} {unit}".rstrip()
    if unit == "B":
        for div, suffix in _BYTES:
            if n >= div:
                return f"{n / div:.1f} {suffix}"
        return f"{n:.0f} B"
    for div, word in _WORDS:
        if n >= div:
            return f"{n / div:.1f} {word}"
    return f"{n:.0f}"


def human_bytes(n: float) -> str:
    """Bytes with 4 significant digits: 3.5e9 -> "3.5 GB"."""
    for div, suffix in _BYTES:
        if n >= div:
            return f"{n / div:.4g} {suffix}"
    return f"{int(n)} B"
