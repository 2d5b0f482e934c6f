"""The course BPE trainer: against a naive reference trainer, and as a real tiktoken.Encoding."""
import collections

import pytest
import regex

from engine.bpe import bpe_merges, load_encoding, merges, save_encoding, train_bpe
from engine.tokenizer import R50K_PAT_STR, get_encoding

TEXT = ("Second Law of Robotics: A robot must obey the orders given it by human beings "
        "except where such orders would conflict with the First Law. ") * 3 + (
    "The robot said: 'I'm obeying, obediently, the orders—1234 orders!' Über naïve café.\n\n  Done.  ")


def naive_merges(text, n):
    """Recount every pair after every merge (slow, obviously correct)."""
    words = collections.Counter(tuple(bytes([b]) for b in m.encode()) for m in regex.findall(R50K_PAT_STR, text))
    out = []
    for _ in range(n):
        pairs = collections.Counter()
        for w, f in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += f
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p[0], p[1]))
        out.append(best)
        new = collections.Counter()
        for w, f in words.items():
            res, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    res.append(w[i] + w[i + 1])
                    i += 2
                else:
                    res.append(w[i])
                    i += 1
            new[tuple(res)] += f
        words = new
    return out


def test_incremental_counts_equal_naive_recount():
    n = 60
    assert bpe_merges(TEXT, n) == naive_merges(TEXT, n)


def test_first_merges_are_frequent_pairs():
    m = bpe_merges("aaaa aaaa aaaa bc bc", 3)
    assert m[0] == (b"a", b"a")
    assert m[1] == (b"aa", b"aa")


def test_encoding_round_trips_and_has_requested_size(tmp_path):
    enc = train_bpe(TEXT, 300)
    assert enc.n_vocab == 300
    assert enc.eot_token == 299
    for s in [TEXT, "unseen wörds ★ 🙂", ""]:
        assert enc.decode(enc.encode_ordinary(s)) == s
    assert len(enc.encode_ordinary(TEXT)) < 0.6 * len(TEXT.encode())  # it compresses what it saw
    assert merges(enc) == bpe_merges(TEXT, 300 - 257)
    path = save_encoding(enc, tmp_path / "tok.tiktoken")
    again = load_encoding(path)
    assert again.n_vocab == 300
    assert again.encode(TEXT + "<|endoftext|>", allowed_special="all") == enc.encode(
        TEXT + "<|endoftext|>", allowed_special="all")
    via_tokenizer = get_encoding(str(path))
    assert via_tokenizer.encode_ordinary(TEXT) == enc.encode_ordinary(TEXT)


def test_chunks_never_merge_across_words():
    enc = train_bpe("ab ab ab ab ba", 260)
    for t in range(enc.n_vocab - 1):
        piece = enc.decode_single_token_bytes(t)
        assert not (len(piece) > 1 and piece.strip() and b" " in piece.strip())


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="at least 257"):
        train_bpe(TEXT, 100)
    with pytest.raises(ValueError, match="empty"):
        train_bpe("", 300)
    with pytest.raises(ValueError, match="only supports"):
        train_bpe("ab", 10_000)
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("not base64 at all\n")
    with pytest.raises(ValueError, match="bad.tiktoken:1"):
        load_encoding(bad)
    with pytest.raises(FileNotFoundError):
        load_encoding(tmp_path / "missing.tiktoken")
