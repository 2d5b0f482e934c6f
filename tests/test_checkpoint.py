"""Checkpoints: resume is bit for bit, saves are atomic, corruption is refused, Ctrl-C saves."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine import GPT, GPTConfig
from engine import checkpoint as ckpt_mod
from engine.bpe import train_bpe
from engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from engine.data import encode_texts, join_texts, load_corpus
from engine.model import tree_flatten
from engine.train import Trainer, TrainConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def book():
    train, val = load_corpus("book")
    enc = train_bpe(join_texts(train).replace("<|endoftext|>", "\n"), 512)
    return enc, encode_texts(enc, train), encode_texts(enc, val)


def make_trainer(book, out, steps=8, workers=1, dropout=0.0):
    enc, tr, va = book
    model = GPT(GPTConfig.preset("course-tiny"), seed=0)
    tc = TrainConfig(batch_size=4, max_steps=steps, lr=3e-3, warmup=2, eval_interval=3, eval_windows=4,
                     ckpt_interval=3, workers=workers, seed=5, dropout=dropout)
    return Trainer(model, tr, va, tc, out_dir=out, enc=enc)


@pytest.mark.parametrize("workers,dropout", [(1, 0.0), (2, 0.0), (2, 0.1)])
def test_resume_equals_uninterrupted(book, tmp_path, workers, dropout):
    straight = make_trainer(book, tmp_path / "a", workers=workers, dropout=dropout)
    straight.run(progress=False)

    first = make_trainer(book, tmp_path / "b", workers=workers, dropout=dropout)
    first.run(progress=False, stop_at=4)  # "interrupted" after step 4 (checkpoint written on stop)
    first.save("ckpt")
    second = make_trainer(book, tmp_path / "b", workers=workers, dropout=dropout)
    second.load(tmp_path / "b" / "ckpt")
    assert second.step == 4
    second.run(progress=False)

    assert second.history["loss"] == straight.history["loss"]  # exactly equal floats
    assert second.history["val_loss"] == straight.history["val_loss"]
    for k, v in tree_flatten(straight.model.params).items():
        np.testing.assert_array_equal(tree_flatten(second.model.params)[k], v)


def test_checkpoint_contents(book, tmp_path):
    t = make_trainer(book, tmp_path, steps=3)
    t.run(progress=False)
    ck = load_checkpoint(tmp_path / "ckpt")
    st = ck["state"]
    assert st["step"] == 3 and st["optim_t"] == 3
    assert GPTConfig.from_dict(st["config"]) == t.model.cfg
    assert st["train"]["max_steps"] == 3 and len(st["history"]["loss"]) == 3
    assert set(ck["weights"]) == set(t.model.cfg.param_shapes())
    assert set(ck["optim"]) == {p + k for k in ck["weights"] for p in ("m.", "v.")}
    assert ck["enc"].encode_ordinary("the model") == t.enc.encode_ordinary("the model")
    assert json.loads((tmp_path / "metrics.json").read_text())["step"] == 3
    assert (tmp_path / "best" / "manifest.json").exists()


def test_failed_save_keeps_the_last_good_one(book, tmp_path, monkeypatch):
    t = make_trainer(book, tmp_path, steps=3)
    t.run(progress=False)
    good = load_checkpoint(tmp_path / "ckpt")
    calls = {"n": 0}
    real = ckpt_mod.save_file

    def dying_writer(tensors, path):  # writes half a file, then "the machine dies"
        calls["n"] += 1
        Path(path).write_bytes(b"\0" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod, "save_file", dying_writer)
    with pytest.raises(OSError, match="disk full"):
        t.save("ckpt")
    monkeypatch.setattr(ckpt_mod, "save_file", real)
    again = load_checkpoint(tmp_path / "ckpt")
    assert again["state"]["step"] == good["state"]["step"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no debris


def test_kill_between_renames_falls_back_to_previous(tmp_path, monkeypatch):
    w1 = {"a": np.ones(3, np.float32)}
    save_checkpoint(tmp_path / "ck", w1, {"step": 1})
    real_replace = os.replace
    calls = {"n": 0}

    def crash_on_second(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # old moved aside, new not yet in place: the process is killed here
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ck", {"a": np.zeros(3, np.float32)}, {"step": 2})
    monkeypatch.setattr(ckpt_mod.os, "replace", real_replace)
    ck = load_checkpoint(tmp_path / "ck")
    assert ck["state"]["step"] == 1 and ck["path"].name == "ck.old"


KILL_SCRIPT = r"""
import os, sys, numpy as np
from engine import checkpoint as c
c.save_checkpoint(sys.argv[1], {"w": np.arange(6, dtype=np.float32)}, {"step": 1})
real = c.save_file
def die_midway(tensors, path):
    with open(path, "wb") as f:
        f.write(b"partial")
        f.flush()
    os.kill(os.getpid(), 9)  # SIGKILL: no cleanup of any kind
c.save_file = die_midway
c.save_checkpoint(sys.argv[1], {"w": np.zeros(6, dtype=np.float32)}, {"step": 2})
"""


def test_process_killed_mid_save_leaves_loadable_checkpoint(tmp_path):
    r = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "ck")], cwd=ROOT)
    assert r.returncode == -9
    ck = load_checkpoint(tmp_path / "ck")
    assert ck["state"]["step"] == 1
    np.testing.assert_array_equal(ck["weights"]["w"], np.arange(6, dtype=np.float32))


def test_corrupted_checkpoint_is_refused(tmp_path):
    save_checkpoint(tmp_path / "ck", {"w": np.arange(100, dtype=np.float32)}, {"step": 1})
    f = tmp_path / "ck" / "model.safetensors"
    b = bytearray(f.read_bytes())
    b[-5] ^= 0xFF
    f.write_bytes(bytes(b))
    with pytest.raises(CheckpointError, match="corrupted: model.safetensors"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="manifest.json is not valid JSON"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing")


def test_resume_refuses_corrupted_checkpoint_from_cli(book, tmp_path):
    t = make_trainer(book, tmp_path, steps=3)
    t.run(progress=False)
    f = tmp_path / "ckpt" / "optim.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    r = subprocess.run([sys.executable, "-m", "engine.train", "--data", "book", "--out", str(tmp_path), "--resume",
                        "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "corrupted: optim.safetensors" in r.stderr


def test_ctrl_c_saves_and_resume_continues(tmp_path):
    cmd = [sys.executable, "-m", "engine.train", "--preset", "course-tiny", "--data", "book", "--out", str(tmp_path),
           "--steps", "100000", "--batch-size", "2", "--eval-interval", "0", "--ckpt-interval", "0", "--no-progress"]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in p.stdout:  # wait until training has started
        lines.append(line)
        if line.startswith("GPT("):
            break
    time.sleep(3)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, "".join(lines) + out
    assert "stopped at step" in out and "--resume" in out
    step = load_checkpoint(tmp_path / "ckpt")["state"]["step"]
    assert step >= 1
    r = subprocess.run(cmd[:-5] + ["--resume", "--steps", str(step + 2), "--no-progress"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert f"resumed at step {step}" in r.stdout
    assert load_checkpoint(tmp_path / "ckpt")["state"]["step"] == step + 2


def test_snapshots_are_the_weights_at_their_steps(book, tmp_path):
    from engine.checkpoint import list_snapshots
    from safetensors import safe_open

    t = make_trainer(book, tmp_path / "a", steps=8)
    t.tc.snapshot_every = 3
    t.run(progress=False)
    snaps = list_snapshots(tmp_path / "a")
    assert [s for s, _ in snaps] == [3, 6, 8]  # every 3 steps, and the end of training
    with safe_open(str(snaps[0][1]), "np") as f:
        assert f.metadata() == {"step": "3"}
    ck = load_checkpoint(tmp_path / "a" / "ckpt")["weights"]
    from safetensors.numpy import load_file

    for k, v in load_file(str(snaps[-1][1])).items():
        np.testing.assert_array_equal(v, ck[k])
    stopped = make_trainer(book, None, steps=8)
    stopped.run(progress=False, stop_at=3)
    for k, v in load_file(str(snaps[0][1])).items():
        np.testing.assert_array_equal(v, stopped.model.state_dict()[k])
    # taking snapshots does not change the training
    plain = make_trainer(book, None, steps=8)
    plain.run(progress=False)
    assert plain.history["loss"] == t.history["loss"]


def test_average_weights_is_the_element_wise_mean(tmp_path):
    from engine.checkpoint import average_weights, list_snapshots, save_snapshot

    rng = np.random.default_rng(0)
    ws = [{"a": rng.standard_normal((3, 4)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}
          for _ in range(3)]
    for step, w in zip((10, 200, 30), ws):
        save_snapshot(tmp_path, step, w)
    (tmp_path / "snapshots" / "stepnotes.safetensors").write_text("not a snapshot")
    snaps = list_snapshots(tmp_path)
    assert [s for s, _ in snaps] == [10, 30, 200]
    avg = average_weights([p for _, p in snaps])
    for k in ("a", "b"):
        assert avg[k].dtype == np.float32
        np.testing.assert_allclose(avg[k], sum(w[k].astype(np.float64) for w in ws) / 3, rtol=1e-6)
    save_snapshot(tmp_path, 40, {"a": ws[0]["a"][:2], "b": ws[0]["b"]})
    with pytest.raises(CheckpointError, match="not of one model"):
        average_weights([p for _, p in list_snapshots(tmp_path)])
    with pytest.raises(ValueError, match="at least one"):
        average_weights([])


def test_snapshot_every_from_the_command_line_and_on_resume(tmp_path):
    from engine.checkpoint import list_snapshots
    from engine.train import main as train_main

    common = ["--preset", "course-tiny", "--data", "book", "--batch-size", "2", "--eval-interval", "0",
              "--no-progress", "--out", str(tmp_path)]
    train_main(common + ["--steps", "3"])
    assert list_snapshots(tmp_path) == []  # off by default
    train_main(common + ["--resume", "--steps", "6", "--snapshot-every", "2"])
    assert [s for s, _ in list_snapshots(tmp_path)] == [4, 6]
    assert load_checkpoint(tmp_path / "ckpt")["state"]["train"]["snapshot_every"] == 2
    train_main(common + ["--resume", "--steps", "12", "--keep-snapshots", "3"])  # snapshot_every stays 2
    assert [s for s, _ in list_snapshots(tmp_path)] == [8, 10, 12]  # the older ones deleted
    assert load_checkpoint(tmp_path / "ckpt")["state"]["train"]["keep_snapshots"] == 3
    with pytest.raises(ValueError, match="snapshot-every"):
        train_main(common + ["--resume", "--snapshot-every", "-1"])
    with pytest.raises(ValueError, match="keep-snapshots"):
        train_main(common + ["--resume", "--keep-snapshots", "-2"])
