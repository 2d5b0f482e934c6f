"""The animation player's Python side and the chapters' frames, each checked against the engine.

What frame k shows is recomputed here another way: the tokens of ``model.generate``, BPE merges
applied by hand, parameter shapes summed, ``attention_mask`` sums, a real KV cache, a training run
in one go, the logit lens of ``logit_lens_table``. The pages themselves: ``tests/test_book.py``.
"""
import json

import numpy as np
import pytest
import regex

pytest.importorskip("anywidget")

from engine import GPT, GPTConfig, attention_mask, get_encoding, load_pretrained  # noqa: E402
from engine.bpe import R50K_PAT_STR, bpe_merges, train_bpe  # noqa: E402
from engine.finetune import complete, finetune, right_form, train_test_split  # noqa: E402
from engine.train import TrainConfig, Trainer  # noqa: E402
from engine.widgets import Animation, frames as F, logit_lens_table  # noqa: E402
from engine.widgets import animation as A  # noqa: E402


@pytest.fixture(scope="module")
def course():
    return load_pretrained()


def item(fr, key):
    (it,) = [i for i in fr["items"] if i["key"] == key]
    return it


def texts(fr, key="text"):
    return [t for t, _ in item(fr, key)["tokens"]]


# ---------------------------------------------------------------------- the helper
def test_animation_widget_holds_frames_and_plays_them():
    frs = [A.frame(f"frame {k}", A.counter("n", "count", k), A.tokens("t", ["a", ("b", "new")])) for k in range(3)]
    w = Animation(frs, name="demo", fps=4)
    assert len(w) == 3 and w.frames == frs and w.name == "demo" and w.fps == 4.0 and w.index == 0
    assert json.loads(json.dumps(w.frames)) == frs  # what is saved with the notebook
    state = w.get_state()
    assert state["frames"][2]["items"][0]["value"] == 2 and state["autoplay"] is True
    w.index = 2
    with pytest.raises(Exception, match="index must be in 0..2"):
        w.index = 3
    # one module: the shared helpers, then the player, with its controls and reduced-motion check
    assert "function h(" in w._esm and "prefers-reduced-motion: reduce" in w._esm
    for action in ('"data-action": "play"', '"data-action": "prev"', '"data-action": "next"', '"data-control": "index"'):
        assert action in w._esm
    assert repr(w) == "Animation: an interactive widget (run this cell, or read the online book, to use it)"


@pytest.mark.parametrize("bad, msg", [
    ([], "at least one frame"),
    ([{"items": []}], "frame 0 must be a dict"),
    ([A.frame("ok"), {"caption": "x", "items": [{"kind": "movie", "key": "m"}]}], "frame 1: unknown primitive"),
    ([{"caption": "x", "items": [{"kind": "note", "text": "t"}]}], "has no key"),
    ([A.frame("x", A.counter("c", "c", float("nan")))], "not plain JSON"),
    ([A.frame("x", A.note("n", "t")) | {"extra": object()}], "not plain JSON"),
])
def test_bad_frames_get_a_clear_error(bad, msg):
    with pytest.raises(ValueError, match=msg):
        Animation(bad)


def test_bad_fps_and_grid():
    with pytest.raises(ValueError, match="fps"):
        Animation([A.frame("x")], fps=0)
    with pytest.raises(ValueError, match="same length"):
        A.grid("g", ["ab", "abc"], {})


def test_primitives_carry_what_the_page_shows():
    b = A.bars("b", [("x", 2.0, "2"), ("y", 1.0, "1", "new")])
    assert b["max"] == 2.0 and b["bars"][1] == ["y", 1.0, "1", "new"] and b["bars"][0][3] == "rest"
    assert A.counter("c", "n", 1234567)["text"] == "1,234,567"
    s = A.series("s", {"a": [3, 2]}, 10, 0, 5)
    assert s["lines"] == {"a": [3.0, 2.0]} and s["x_max"] == 10


# ---------------------------------------------------------------------- chapter 1
def test_generation_frames_are_model_generate(course):
    model, enc = course
    prompt, n = "ROMEO:\n", 8
    frs = F.generation_frames(model, enc, prompt, n, temperature=0.7, top_k=40, seed=1)
    ids = enc.encode(prompt)
    out = model.generate(np.array(ids), n, temperature=0.7, top_k=40, seed=1).tolist()
    assert len(frs) == n + 1
    for k, fr in enumerate(frs):  # frame k: the prompt plus the first k generated tokens
        assert texts(fr) == [F.piece(enc, t) for t in out[:len(ids) + k]]
        assert item(fr, "length")["value"] == len(ids) + k
    for k in (1, n):  # the drawn token is marked among the sampling distribution's best
        logits = np.asarray(model.forward(np.array(out[:len(ids) + k - 1])))[-1].astype(np.float64) / 0.7
        keep = np.argsort(-logits)[:40]
        p = np.exp(logits[keep] - logits[keep].max())
        p /= p.sum()
        marked = [b for b in item(frs[k], "guesses")["bars"] if b[3] == "new"]
        assert marked[0][0] == F.piece(enc, out[len(ids) + k - 1])
        assert item(frs[k], "guesses")["bars"][0][1] == pytest.approx(p.max(), abs=1e-5)


# ---------------------------------------------------------------------- chapter 2
def test_window_frames():
    words = "Second Law of Robotics: A robot must obey".split()
    frs = F.window_frames(words, 3)
    assert len(frs) == len(words) - 1
    for t, fr in enumerate(frs, start=1):
        roles = [r for _, r in item(fr, "window")["tokens"]]
        assert [w for w, r in zip(words, roles) if r == "context"] == words[max(0, t - 3):t]
        assert roles.index("target") == t and roles.count("target") == 1


def test_training_frames_follow_one_uninterrupted_run():
    text = "the robot must obey the orders given it by human beings. " * 3
    enc = train_bpe(text, 290)
    ids = np.array(enc.encode(text))
    cfg = GPTConfig.preset("course-tiny", vocab_size=enc.n_vocab, n_ctx=16)
    tc = TrainConfig(batch_size=4, max_steps=12, lr=1e-2, warmup=2, eval_interval=0, ckpt_interval=0, seed=0)
    ctx, target = ids[:4], int(ids[4])
    model = GPT(cfg, seed=0)
    frs = F.training_frames(Trainer(model, ids, None, tc), enc, ctx, target, every=5)
    ref = GPT(cfg, seed=0)
    history = Trainer(ref, ids, None, tc).run(progress=False)
    assert [item(f, "step")["value"] for f in frs] == [0, 5, 10, 12]
    assert item(frs[0], "loss")["lines"]["training loss"] == []
    assert item(frs[-1], "loss")["lines"]["training loss"] == pytest.approx(history["loss"], rel=1e-6)
    assert item(frs[2], "loss")["lines"]["training loss"] == pytest.approx(history["loss"][:10], rel=1e-6)
    logits = np.asarray(ref.forward(ctx))[-1].astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    got = {b[0]: b[1] for b in item(frs[-1], "guesses")["bars"]}
    assert got[F.piece(enc, target)] == pytest.approx(p[target], abs=1e-5)
    assert max(got.values()) == pytest.approx(p.max(), abs=1e-5)


# ---------------------------------------------------------------------- chapter 3
def _apply_merges_by_hand(sample, merges):
    out = []
    for chunk in regex.findall(R50K_PAT_STR, sample):
        parts = [bytes([b]) for b in chunk.encode()]
        for a, b in merges:  # in the order they were learned
            i = 0
            while i < len(parts) - 1:
                if parts[i] == a and parts[i + 1] == b:
                    parts[i:i + 2] = [a + b]
                i += 1
        out += parts
    return [p.decode() for p in out]


def test_bpe_frames_apply_the_kth_merge():
    text = ("the robot must obey the orders the robot is given by the human beings; "
            "the robot must protect the humans and the robot must protect itself")
    sample = " the robot must obey the orders"
    frs = F.bpe_frames(text, sample, 12)
    merges = bpe_merges(text, 12)
    assert len(frs) == 13
    for k, fr in enumerate(frs):
        pieces = [t for t, _ in item(fr, "pieces")["tokens"]]
        assert pieces == _apply_merges_by_hand(sample, merges[:k])
        assert "".join(pieces) == sample and item(fr, "n_tokens")["value"] == len(pieces)
        new = [t for t, r in item(fr, "pieces")["tokens"] if r == "new"]
        assert all(t == (merges[k - 1][0] + merges[k - 1][1]).decode() for t in new)
    assert [item(frs[k], "n_tokens")["value"] for k in (0, 4, 8, 12)] == [31, 24, 19, 15]  # chapter 3's figure


# ---------------------------------------------------------------------- chapter 4
@pytest.mark.parametrize("name", ["gpt3-small", "gpt3-175b"])
def test_parameter_frames_count_the_config(name):
    cfg = GPTConfig.preset(name)
    frs = F.parameter_frames(cfg)
    shapes = cfg.param_shapes()
    assert len(frs) == 1 + 6 + (cfg.n_layer - 1) + 1
    assert item(frs[-1], "params")["value"] == cfg.n_params() == sum(int(np.prod(s)) for s in shapes.values())

    def upto(names):
        return sum(int(np.prod(s)) for n, s in shapes.items() if names(n))
    assert item(frs[0], "params")["value"] == upto(lambda n: n in ("wte", "wpe"))
    assert item(frs[6], "params")["value"] == upto(lambda n: n in ("wte", "wpe") or n.startswith("h.0."))
    k = 6 + 10  # ten more layers
    assert item(frs[k], "params")["value"] == upto(lambda n: n in ("wte", "wpe") or
                                                    (n.startswith("h.") and int(n.split(".")[1]) <= 10))
    assert "".join(item(frs[k], "layers")["rows"]).count("#") == 10  # and the 11th is being counted
    assert "".join(item(frs[-1], "layers")["rows"]).count("#") == cfg.n_layer
    assert sum(b[1] for b in item(frs[-1], "layer")["bars"]) == cfg.params_per_layer()


# ---------------------------------------------------------------------- chapter 5
def test_logit_lens_frames_match_logit_lens_table(course):
    model, enc = course
    ids = enc.encode("ROMEO: But soft, what light through yonder window breaks?")
    frs = F.logit_lens_frames(model, enc, ids, k=3)
    rows = logit_lens_table(model, enc, ids, position=-1, k=3)
    assert len(frs) == model.cfg.n_layer + 1 == len(rows)
    for fr, row in zip(frs, rows):
        got = item(fr, "guesses")["bars"]
        assert [b[0] for b in got] == [t for t, _ in row]
        assert [b[1] for b in got] == pytest.approx([q for _, q in row], abs=1e-6)
    logits = np.asarray(model.forward(np.array(ids)))[-1].astype(np.float64)  # the top: the model's own output
    assert item(frs[-1], "guesses")["bars"][0][0] == F.piece(enc, int(logits.argmax()))
    assert "".join(item(frs[2], "stack")["rows"]).count("o") == 8


# ---------------------------------------------------------------------- chapter 6
def test_attention_cost_frames_are_mask_sums():
    T_max, W = 20, 6
    frs = F.attention_cost_frames(T_max, W)
    assert len(frs) == T_max
    for T in (1, 6, 7, 20):
        fr = frs[T - 1]
        assert item(fr, "dense_cost")["value"] == T * (T + 1) // 2 == int(attention_mask("dense", T).sum())
        assert item(fr, "banded_cost")["value"] == int(attention_mask("banded", T, window=W).sum())
        m = attention_mask("banded", T, window=W)
        rows = item(fr, "banded")["rows"]
        assert [[c == "#" for c in r[:T]] for r in rows[:T]] == m.tolist()
        assert all(set(r[T:]) <= {" "} for r in rows) and all(set(r) == {" "} for r in rows[T:])
    assert item(frs[-1], "costs")["lines"]["banded"][-1] == int(attention_mask("banded", T_max, window=W).sum())


# ---------------------------------------------------------------------- chapter 7
def test_kv_cache_frames(course):
    model, enc = course
    prompt, n = "KING HENRY:\nOnce more unto the", 10
    frs = F.kv_cache_frames(model, enc, prompt, n)
    ids = enc.encode(prompt)
    out = model.generate(np.array(ids), n, temperature=0).tolist()
    assert out == model.generate(np.array(ids), n, temperature=0, use_cache=False).tolist()
    cfg = model.cfg
    for s, fr in enumerate(frs, start=1):
        assert texts(fr) == [F.piece(enc, t) for t in out[:len(ids) + s]]
        filled = len(ids) + s - 1  # the positions whose keys and values are cached after step s
        assert item(fr, "cache_bytes")["value"] == 2 * cfg.n_layer * filled * cfg.d_model * 4  # float32
        assert item(fr, "positions")["value"] == (len(ids) if s == 1 else 1)
        rows = item(fr, "cache")["rows"]
        assert len(rows) == cfg.n_layer and all(len(r) - r.count(".") == filled for r in rows)
    work = item(frs[-1], "work")["lines"]
    assert work["with the cache"][-1] == len(ids) + n - 1
    assert work["without"][-1] == sum(len(ids) + s - 1 for s in range(1, n + 1))
    with pytest.raises(ValueError, match="exceeds the context"):
        F.kv_cache_frames(model, enc, prompt, cfg.n_ctx)


# ---------------------------------------------------------------------- chapter 8
def test_answer_recorder_follows_finetune(course):
    base, enc = course
    train, test = train_test_split(seed=0)
    model = base.to("numpy")  # a copy: training it leaves the shared course model as it was
    wte = np.array(base.params["wte"])
    ex = test[0]
    before = complete(base, enc, ex.prompt(), 24)
    rec = F.AnswerRecorder(model, enc, ex, steps=3, every=2)
    calls = []
    losses = finetune(model, enc, train[:16], steps=3, lr=3e-3, batch_size=4, seed=0,
                      callback=lambda s, loss: (calls.append(s), rec(s, loss)))
    assert calls == [1, 2, 3]
    assert [item(f, "step")["value"] for f in rec.frames] == [0, 2, 3]
    assert texts(rec.frames[0], "answer") == [before.strip() or "(nothing)"]
    after = complete(model, enc, ex.prompt(), 24)
    role = "right" if after == ex.target() else ("new" if right_form(ex, after) else "wrong")
    assert item(rec.frames[-1], "answer")["tokens"] == [[after.strip() or "(nothing)", role]]
    assert item(rec.frames[-1], "loss")["lines"]["loss on the answers"] == pytest.approx(losses)
    assert np.array_equal(base.params["wte"], wte)
    # recording does not change the training: the same run without it gives the same losses
    again = finetune(base.to("numpy"), enc, train[:16], steps=3, lr=3e-3, batch_size=4, seed=0)
    assert again == pytest.approx(losses, rel=1e-6)


def test_all_frames_are_valid_animations(course):
    model, enc = course
    for frs in (F.window_frames("a b c".split(), 2), F.bpe_frames("aa ab aa", " aa", 2),
                F.parameter_frames(GPTConfig.preset("gpt3-small")), F.attention_cost_frames(4, 2)):
        assert Animation(frs).frames == frs
