"""Chapter 3, Tokens: special tokens as hard boundaries, and encoding a stream of text.

A special token (``<|endoftext|>``, ``<|pad|>``, ...) is never cut by BPE: the text is first split
on the special tokens, and only the stretches between them are tokenised. When one special token is
a prefix of another (``<|endoftext|>`` and ``<|endoftext|><|endoftext|>``), the longest one that
matches wins at each position (greedy, left to right): ``split_special`` does the split, the same
one in training (``engine.bpe``) and in ``Encoding.encode``. tiktoken's own ``encode`` tries its
special tokens in an arbitrary order, so overlapping ones could come out either way.

``Encoding.encode_iterable(chunks)`` yields the ids of ``"".join(chunks)`` while holding only the
text since the last *cut point*: a place where no token can span, so that encoding the two sides
separately gives the ids of the whole. With GPT-2's split pattern every piece is one run of
letters, digits, punctuation or whitespace (at most one leading space), so a place where a
non-space character meets whitespace is such a cut point, and so is either end of a special token.
Memory is bounded by the longest stretch without one (plus the chunk being read).
"""
from __future__ import annotations

import functools
import heapq
from pathlib import Path
from typing import Iterable, Iterator

import regex
import tiktoken

# GPT-2's split pattern (tiktoken's faster equivalent of the regex in GPT-2's encoder.py).
R50K_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# A cut point for that pattern: a non-space character, then whitespace (zero width, between the two).
_CUT_BACKWARDS = regex.compile(r"(?r)(?<=\S)(?=\s)")


@functools.lru_cache(maxsize=256)
def _special_regex(specials: frozenset):
    # longest first, so that an alternation tried left to right takes the longest match at a position
    return regex.compile("|".join(regex.escape(s) for s in sorted(specials, key=lambda s: (-len(s), s))))


def split_special(text: str, specials) -> list[tuple[str, bool]]:
    """``text`` cut at the special tokens: ``[(piece, is_special), ...]``, joined back it is ``text``.

    Specials are matched left to right, the longest at each position; empty ordinary pieces are left out.
    """
    specials = frozenset(specials)
    if not specials:
        return [(text, False)] if text else []
    out, pos = [], 0
    for m in _special_regex(specials).finditer(text):
        if m.start() > pos:
            out.append((text[pos:m.start()], False))
        out.append((m.group(), True))
        pos = m.end()
    if pos < len(text):
        out.append((text[pos:], False))
    return out


def _resolve(enc: tiktoken.Encoding, allowed_special, disallowed_special) -> tuple[frozenset, frozenset]:
    every = frozenset(enc.special_tokens_set)
    # as in tiktoken, a name that is not one of the encoding's special tokens is simply never matched
    allowed = every if allowed_special == "all" else frozenset(allowed_special) & every
    disallowed = every - allowed if disallowed_special == "all" else frozenset(disallowed_special)
    return allowed, disallowed


def encode(enc: tiktoken.Encoding, text: str, allowed_special=frozenset(), disallowed_special="all") -> list[int]:
    """tiktoken's ``encode`` with special tokens matched greedily (longest first). Same arguments:
    ``allowed_special`` ("all" or a set) become their ids; a ``disallowed_special`` found in the
    remaining text raises ValueError; any other special-looking text is encoded as ordinary text."""
    allowed, disallowed = _resolve(enc, allowed_special, disallowed_special)
    ids: list[int] = []
    for piece, special in split_special(text, allowed):
        if special:
            ids.append(enc._special_tokens[piece])
            continue
        if disallowed:
            m = _special_regex(disallowed).search(piece)
            if m:
                raise ValueError(f"the text contains the disallowed special token {m.group()!r}: pass "
                                 "allowed_special={...} to encode it as that token, or disallowed_special=() "
                                 "to encode it as ordinary text")
        ids.extend(tiktoken.Encoding.encode_ordinary(enc, piece))
    return ids


def _last_cut(buf: str, hi: int, specials, allowed: frozenset) -> int:
    """The largest cut point 0 < p <= hi of ``buf`` (which starts at one): the end of an allowed special
    token as ``encode`` matches it, or a non-space character followed by whitespace, and in either case
    inside no occurrence of any special token (the caller keeps the longest one's length back from the
    end, so every occurrence that could reach back to ``hi`` is already in ``buf``)."""
    if hi <= 0:
        return 0
    inside = []
    for s in specials:  # every occurrence, overlapping ones too: never cut through one
        i = buf.find(s)
        while 0 <= i < hi:
            inside.append((i, i + len(s)))
            i = buf.find(s, i + 1)
    ends = [m.end() for m in _special_regex(allowed).finditer(buf)] if allowed and inside else []
    spaces = (m.start() for m in _CUT_BACKWARDS.finditer(buf, 0, hi + 1))  # from the end backwards
    for p in heapq.merge(spaces, reversed([e for e in ends if e <= hi]), reverse=True):
        if p > 0 and not any(a < p < b for a, b in inside):
            return p
    return 0


def encode_iterable(enc: tiktoken.Encoding, chunks: Iterable[str], allowed_special=frozenset(),
                    disallowed_special="all") -> Iterator[int]:
    """Yield the ids of ``"".join(chunks)`` (the same as ``encode`` on the whole text), holding only
    the text since the last cut point (see the module's docstring). Needs GPT-2's split pattern."""
    if enc._pat_str != R50K_PAT_STR:
        raise ValueError("encode_iterable knows where tokens can be cut only for GPT-2's split pattern; "
                         f"this encoding uses {enc._pat_str!r}")
    allowed, _ = _resolve(enc, allowed_special, disallowed_special)
    specials = sorted(enc.special_tokens_set)
    keep = max(map(len, specials), default=0) + 1  # a special token could still be completing in the tail
    buf = ""
    for chunk in chunks:
        if not isinstance(chunk, str):
            raise TypeError(f"encode_iterable reads str chunks, got {type(chunk).__name__}")
        buf += chunk
        p = _last_cut(buf, len(buf) - keep, specials, allowed)
        if p:
            yield from encode(enc, buf[:p], allowed_special, disallowed_special)
            buf = buf[p:]
    yield from encode(enc, buf, allowed_special, disallowed_special)


def read_chunks(path, chunk_chars: int = 1 << 16, encoding: str = "utf-8") -> Iterator[str]:
    """The text of a file, ``chunk_chars`` characters at a time (newlines read as ``Path.read_text`` does)."""
    with open(path, encoding=encoding) as f:
        while True:
            s = f.read(chunk_chars)
            if not s:
                return
            yield s


def encode_file(enc: tiktoken.Encoding, path, allowed_special=frozenset(), disallowed_special="all",
                chunk_chars: int = 1 << 16) -> Iterator[int]:
    """Yield the ids of a UTF-8 text file without reading it whole: the same as
    ``encode(enc, Path(path).read_text(encoding="utf-8"), ...)``."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no text file at {path}")
    yield from encode_iterable(enc, read_chunks(path, chunk_chars), allowed_special, disallowed_special)


class Encoding(tiktoken.Encoding):
    """A ``tiktoken.Encoding`` whose special tokens are matched greedily, and that encodes streams.

    Everything else (``encode_ordinary``, ``decode``, ``n_vocab``, ...) is tiktoken's own.
    """

    def encode(self, text: str, *, allowed_special=frozenset(), disallowed_special="all") -> list[int]:
        return encode(self, text, allowed_special, disallowed_special)

    def encode_iterable(self, chunks: Iterable[str], *, allowed_special=frozenset(),
                        disallowed_special="all") -> Iterator[int]:
        return encode_iterable(self, chunks, allowed_special, disallowed_special)

    def encode_file(self, path, *, allowed_special=frozenset(), disallowed_special="all",
                    chunk_chars: int = 1 << 16) -> Iterator[int]:
        return encode_file(self, path, allowed_special, disallowed_special, chunk_chars)
