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
    """Recount every pair after every merge (slow, obviously correct). ``text``: a string or a list
    of strings, each chunked on its own."""
    texts = [text] if isinstance(text, str) else text
    words = collections.Counter(tuple(bytes([b]) for b in m.encode()) for t in texts
                                for m in regex.findall(R50K_PAT_STR, t))
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


# ---------------------------------------------------------------------- special tokens
def naive_split(text, specials):
    """Cut at special tokens, the longest one at each position (a plain scan, no regex)."""
    out, buf, i = [], "", 0
    order = sorted(specials, key=len, reverse=True)
    while i < len(text):
        hit = next((s for s in order if text.startswith(s, i)), None)
        if hit is None:
            buf += text[i]
            i += 1
            continue
        out.append(buf)
        buf = ""
        i += len(hit)
    return out + [buf]


DOCS = ["Hello.", "World!", "the robot must obey.", "Orders|given", "<|no|> is not special", "x"] * 4
SPECIAL_TEXT = "<|endoftext|>".join(DOCS) + "<|pad|><|pad|>tail<|endoftext|><|endoftext|>"


def test_special_tokens_are_hard_boundaries():
    specials = ["<|endoftext|>", "<|pad|>"]
    n = 40
    got = bpe_merges(SPECIAL_TEXT, n, special_tokens=specials)
    # the reference trains on the pieces between the special tokens, each on its own
    assert got == naive_merges(naive_split(SPECIAL_TEXT, specials), n)
    # without the split, the separators' own pieces are among the first merges learned: the test can fail
    crossing = bpe_merges(SPECIAL_TEXT, n, special_tokens=[])
    assert any(b"endoftext" in a + b or b"|>" in a + b for a, b in crossing)
    for a, b in got:  # learned only from the documents
        assert b"endoftext" not in a + b and b"pad" not in a + b and b".<" not in a + b


def test_special_tokens_in_the_encoding():
    specials = ["<|endoftext|>", "<|pad|>"]
    enc = train_bpe(SPECIAL_TEXT, 300, special_tokens=specials)
    assert enc.n_vocab == 300
    assert enc._special_tokens == {"<|endoftext|>": 298, "<|pad|>": 299} and enc.eot_token == 298
    ids = enc.encode(SPECIAL_TEXT, allowed_special="all")
    assert enc.decode(ids) == SPECIAL_TEXT
    assert ids.count(299) == 2 and ids.count(298) == SPECIAL_TEXT.count("<|endoftext|>")
    assert merges(enc) == bpe_merges(SPECIAL_TEXT, 300 - 258, special_tokens=specials)


def test_special_token_ids_chosen_by_the_caller(tmp_path):
    chosen = {"<|pad|>": 0, "<|endoftext|>": 299, "<|im_start|>": 150}
    enc = train_bpe(SPECIAL_TEXT, 300, special_tokens=chosen)
    plain = train_bpe(SPECIAL_TEXT, 300, special_tokens=["<|pad|>", "<|endoftext|>", "<|im_start|>"])
    assert enc._special_tokens == chosen
    # the bytes and merges take the other ids in order: byte 0 is id 1, byte 148 id 149, byte 149 id 151
    assert [enc.encode_single_token(bytes([b])) for b in (0, 148, 149, 255)] == [1, 149, 151, 257]
    assert merges(enc) == merges(plain)  # the same tokenizer, numbered differently
    text = "<|pad|>Hello.<|im_start|>World!<|endoftext|>"
    ids = enc.encode(text, allowed_special="all")
    assert ids[0] == 0 and 150 in ids and ids[-1] == 299 and enc.decode(ids) == text
    assert ([enc.decode_single_token_bytes(i) for i in ids] ==
            [plain.decode_single_token_bytes(i) for i in plain.encode(text, allowed_special="all")])
    again = load_encoding(save_encoding(enc, tmp_path / "tok.tiktoken"))
    assert again._special_tokens == chosen and again.encode(text, allowed_special="all") == ids


def test_no_special_tokens():
    enc = train_bpe(TEXT, 300, special_tokens=[])
    assert enc.n_vocab == 300 and enc.special_tokens_set == set()
    assert merges(enc) == bpe_merges(TEXT, 300 - 256)
    assert enc.decode(enc.encode("a <|endoftext|> b")) == "a <|endoftext|> b"  # just text here


def test_ties_go_to_the_smaller_pair():
    # every pair occurs once: the smaller pair of byte strings is merged first, then the next smaller
    assert bpe_merges("yz\nab\nba", 3) == [(b"a", b"b"), (b"b", b"a"), (b"y", b"z")]
    assert bpe_merges("ac\nab", 1) == [(b"a", b"b")]  # equal first tokens: the smaller second one
    assert "smaller pair" in train_bpe.__doc__


def test_bad_special_tokens():
    with pytest.raises(ValueError, match="at least 258"):
        train_bpe(TEXT, 257, special_tokens=["<|a|>", "<|b|>"])
    with pytest.raises(ValueError, match="outside 0 .. 299"):
        train_bpe(TEXT, 300, special_tokens={"<|a|>": 300})
    with pytest.raises(ValueError, match="id 5 is used twice"):
        train_bpe(TEXT, 300, special_tokens={"<|a|>": 5, "<|b|>": 5})
    with pytest.raises(ValueError, match="twice"):
        train_bpe(TEXT, 300, special_tokens=["<|a|>", "<|a|>"])
    with pytest.raises(TypeError, match="not the string"):
        train_bpe(TEXT, 300, special_tokens="<|endoftext|>")
    with pytest.raises(ValueError, match="non-empty string"):
        train_bpe(TEXT, 300, special_tokens=[""])
