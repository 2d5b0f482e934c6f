"""Model folders from elsewhere: only bounded regular files are read, nothing hangs or reads without end, a
malformed folder ends in one `error:` line (exit 2), and no error quotes a file's contents. Also the small
promises of `generate` and `tokenize` about what they print and read."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from engine import GPT, GPTConfig, load_hf_gpt2, save_hf_gpt2
from engine import cli
from engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from engine.files import read_bytes, read_json, read_text, regular_file, sha256_file
from engine.loading import load_model
from engine.tokenizer import get_encoding, load_encoding

ROOT = Path(__file__).resolve().parent.parent
CFG = GPTConfig(n_layer=2, n_head=2, d_model=8, n_ctx=16, vocab_size=50257)  # GPT-2's tokenizer fits


@pytest.fixture(scope="module")
def model():
    return GPT(CFG, seed=1, backend="numpy")


@pytest.fixture
def hf(model, tmp_path):
    return save_hf_gpt2(model, tmp_path / "hf")


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(capsys, *argv) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "", (code, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _retensor(folder: Path, change) -> None:
    t = load_file(str(folder / "model.safetensors"))
    change(t)
    save_file(t, str(folder / "model.safetensors"))


# ---------------------------------------------------------------------- malformed folders: one line, exit 2
def test_config_json_holding_a_list(capsys, hf):
    (hf / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match=r"config.json holds a JSON list, not an object"):
        load_hf_gpt2(hf)
    assert "holds a JSON list" in assert_one_error(capsys, "generate", "--model", hf)
    assert "holds a JSON list" in assert_one_error(capsys, "info", hf)


def test_an_extra_layer_is_listed(capsys, hf, model, tmp_path):
    _retensor(hf, lambda t: t.update({"transformer.h.7.ln_1.weight": np.ones(8, np.float32),
                                      "transformer.h.7.mlp.c_fc.weight": np.ones((8, 32), np.float32)}))
    err = assert_one_error(capsys, "generate", "--model", hf)
    assert "unexpected: h.7.ln_1.g, h.7.mlp.c_fc.w" in err
    w = dict(model.state_dict(), **{"h.7.attn.c_attn.w": np.zeros((8, 24), np.float32)})  # a checkpoint too
    save_checkpoint(tmp_path / "ck", w, {"config": CFG.to_dict(), "step": 1})
    assert "unexpected: h.7.attn.c_attn.w" in assert_one_error(capsys, "generate", "--model", tmp_path / "ck")


def test_an_int32_weight_is_refused_not_truncated(capsys, hf, model):
    _retensor(hf, lambda t: t.update({"transformer.wpe.weight": (t["transformer.wpe.weight"] * 100).astype(np.int32)}))
    with pytest.raises(ValueError, match=r"not floating point: wpe \(int32\)"):
        load_hf_gpt2(hf)
    assert "not floating point: wpe (int32)" in assert_one_error(capsys, "generate", "--model", hf)
    with pytest.raises(ValueError, match=r"not floating point: h.0.ln_1.g \(int64\)"):
        GPT(CFG, params={**model.params, "h": [dict(model.params["h"][0], ln_1={"g": np.ones(8, np.int64),
                                                                                   "b": np.zeros(8)}),
                                               model.params["h"][1]]})


def test_a_tensor_name_without_a_dot(capsys, hf):
    _retensor(hf, lambda t: t.update({"nodot": np.ones(3, np.float32)}))
    assert "unexpected: nodot" in assert_one_error(capsys, "generate", "--model", hf)


# ---------------------------------------------------------------------- only bounded regular files
def _cli(*argv, timeout=60):
    """The command line in a subprocess: a regression here would hang, and a timeout then fails the test."""
    return subprocess.run([sys.executable, "-m", "engine", *map(str, argv)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))


def _assert_refused(r, msg):
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and msg in r.stderr, r.stderr


def test_config_json_linked_to_dev_zero(hf):
    (hf / "config.json").unlink()
    (hf / "config.json").symlink_to("/dev/zero")
    _assert_refused(_cli("generate", "--model", hf, "--max-new-tokens", "1"),
                    "config.json is a character device, not a regular file")
    _assert_refused(_cli("info", hf), "config.json is a character device")


def test_a_fifo_model_safetensors(hf):
    (hf / "model.safetensors").unlink()
    os.mkfifo(hf / "model.safetensors")
    _assert_refused(_cli("generate", "--model", hf, "--max-new-tokens", "1"), "model.safetensors is a FIFO")


def test_a_manifest_entry_outside_the_checkpoint(model, tmp_path):
    ck = save_checkpoint(tmp_path / "ck", model.state_dict(), {"config": CFG.to_dict(), "step": 1})
    man = json.loads((ck / "manifest.json").read_text())
    for name in ("/dev/zero", "../../etc/passwd"):
        (ck / "manifest.json").write_text(json.dumps(dict(man, **{name: "0" * 64})))
        _assert_refused(_cli("generate", "--model", ck, "--max-new-tokens", "1"),
                        f"its manifest lists {name!r}, not a file name")
    (ck / "manifest.json").write_text(json.dumps(man))
    (ck / "state.json").unlink()
    os.mkfifo(ck / "state.json")  # listed in the manifest, but a FIFO: its hash is not read
    with pytest.raises(CheckpointError, match="state.json is a FIFO"):
        load_checkpoint(ck)


def test_errors_never_quote_a_file(capsys, hf, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("hunter2:s3cr3t-t0ken\n")
    (hf / "tokenizer.tiktoken").symlink_to(secret)
    err = assert_one_error(capsys, "generate", "--model", hf)
    assert "tokenizer.tiktoken:1 is not a tiktoken rank line" in err and "hunter2" not in err
    (hf / "tokenizer.tiktoken").unlink()
    (hf / "config.json").unlink()
    (hf / "config.json").symlink_to(secret)  # not JSON: the message gives a position, not the text
    err = assert_one_error(capsys, "generate", "--model", hf)
    assert "config.json is not valid JSON" in err and "hunter2" not in err and "s3cr3t" not in err
    secret.write_bytes(b"\xffhunter2")
    err = assert_one_error(capsys, "info", hf)
    assert "is not UTF-8 text" in err and "hunter2" not in err


def test_file_readers(tmp_path):
    f = tmp_path / "f.json"
    f.write_text('{"a": 1}')
    assert read_json(f) == {"a": 1} and read_text(f) == '{"a": 1}' and read_bytes(f, 8) == b'{"a": 1}'
    with pytest.raises(ValueError, match=r"is 8 bytes, more than the 7 such a file may hold"):
        read_bytes(f, 7)
    with pytest.raises(ValueError, match="is a folder, not a regular file"):
        read_text(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_text(tmp_path / "nothing")
    os.mkfifo(tmp_path / "fifo")
    for fn in (lambda p: read_bytes(p, 10), sha256_file, regular_file, load_encoding):
        with pytest.raises(ValueError, match="is a FIFO"):
            fn(tmp_path / "fifo")
    assert regular_file(f, limit=8) == f
    with pytest.raises(ValueError, match="more than"):
        regular_file(f, limit=7)


# ---------------------------------------------------------------------- generate and tokenize
def test_generate_seed_minus_one_prints_nothing(capsys, hf):
    for extra in ([], ["--stream"]):
        err = assert_one_error(capsys, "generate", "--model", hf, "--prompt", "To be", "--seed", "-1", *extra)
        assert err == "error: --seed must be >= 0, got -1\n"


def test_generate_without_stream_says_it_is_working(capsys, hf, monkeypatch):
    argv = ["generate", "--model", hf, "--prompt", "To be", "--max-new-tokens", "12", "--seed", "3", "--no-stop"]
    code, quick, err = run(capsys, *argv)
    assert code == 0 and err == ""  # a short run says nothing
    code, streamed, _ = run(capsys, *argv, "--stream")
    assert code == 0 and streamed == quick
    monkeypatch.setattr(cli, "NOTICE_AFTER_S", 0.0)  # every run is "long"
    code, out, err = run(capsys, *argv)
    assert code == 0 and out == quick  # the text on stdout is unchanged
    assert err == "generating 12 tokens (1 so far; --stream prints them as they come)...\n"


def test_tokenize_dash_reads_standard_input():
    # 300 kB: more than one command-line argument may hold (Linux: 128 kB)
    text = "It is a truth universally acknowledged, that a single man in possession of a good fortune. " * 3300
    assert len(text) > 131072
    r = subprocess.run([sys.executable, "-m", "engine", "tokenize", "-", "--json"], input=text, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ids"] == get_encoding().encode(text, allowed_special="all")


def test_load_model_still_reads_good_folders(hf, model):
    got, enc = load_model(hf)
    np.testing.assert_array_equal(got.state_dict()["wte"], model.state_dict()["wte"])
    assert enc.n_vocab == 50257
