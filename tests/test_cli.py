"""``python -m engine``: info, generate, tokenize, and clear errors (exit status 2, no traceback)."""
import json
import subprocess
import sys

import numpy as np
import pytest

import engine
from engine import GPT, GPTConfig, get_encoding, save_hf_gpt2
from engine.cli import main
from engine.config import PAPER_PARAMS


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------- info
def test_info_table(capsys):
    code, out, err = run(capsys, "info", "gpt3-175b")
    assert code == 0 and not err
    cfg = GPTConfig.preset("gpt3-175b")
    assert "96 layers, d_model 12288, 96 heads of 128" in out
    assert f"{cfg.n_params():,}" in out and f"{cfg.params_per_layer():,}" in out
    assert f"{cfg.n_params(non_embedding=True):,}" in out
    for label in ("token embedding", "attention", "MLP", "LayerNorm", "forward", "training, 6N", "KV cache",
                  "Adam", "fp16", "petaflop/s-days"):
        assert label in out
    assert "349.2 GB" in out  # fp16 weights
    assert "3,638 petaflop/s-days" in out  # Table D.1: 3.64e3


@pytest.mark.parametrize("name", ["gpt3-175b", "gpt3-small", "gpt2-124m", "course-tiny"])
def test_info_json(capsys, name):
    code, out, _ = run(capsys, "info", name, "--json")
    assert code == 0
    info = json.loads(out)
    cfg = GPTConfig.preset(name)
    p = info["parameters"]
    d, f, L = cfg.d_model, cfg.d_ff, cfg.n_layer
    assert p["total"] == cfg.n_params()
    assert p["token_embedding"] == cfg.vocab_size * d and p["position_embedding"] == cfg.n_ctx * d
    assert p["attention"] == L * (d * 3 * d + 3 * d + d * d + d)
    assert p["mlp"] == L * (d * f + f + f * d + d)
    assert p["layernorm"] == L * 2 * 2 * d + 2 * d
    assert sum(p[k] for k in ("token_embedding", "position_embedding", "attention", "mlp", "layernorm")) == p["total"]
    assert info["flops_per_token"] == cfg.flops_per_token()
    m = info["memory_bytes"]
    assert m["weights_fp32"] == 4 * p["total"] and m["weights_fp16"] == 2 * p["total"]
    assert m["kv_cache_fp16"] == 2 * L * cfg.n_ctx * d * 2
    assert info["training"]["flops_6N"] == 6 * p["total"] * 300e9
    if name in PAPER_PARAMS:
        assert abs(p["total"] / PAPER_PARAMS[name] - 1) < 0.01
    if name == "gpt3-175b":
        assert info["training"]["pf_days"] == pytest.approx(3.64e3, rel=0.01)


def test_info_tokens_option(capsys):
    _, out, _ = run(capsys, "info", "gpt3-small", "--json", "--tokens", "1e9")
    info = json.loads(out)
    assert info["training"]["flops_6N"] == 6 * GPTConfig.preset("gpt3-small").n_params() * 1e9


# ---------------------------------------------------------------------- model folders
@pytest.fixture(scope="module")
def course_folder(tmp_path_factory):
    """A small random model saved as a Hugging Face folder with a course tokenizer beside it."""
    bpe = pytest.importorskip("engine.bpe")
    text = ("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
            "the slings and arrows of outrageous fortune. ") * 20
    enc = bpe.train_bpe(text, vocab_size=300)
    cfg = GPTConfig(n_layer=2, n_head=2, d_model=16, n_ctx=32, vocab_size=enc.n_vocab, attention="alternating",
                    window=4)
    model = GPT(cfg, seed=3, backend="numpy")
    d = tmp_path_factory.mktemp("course")
    save_hf_gpt2(model, d)
    bpe.save_encoding(enc, d / "tokenizer.tiktoken")
    return d, model, get_encoding(str(d / "tokenizer.tiktoken"))


def test_generate_hf_folder(capsys, course_folder):
    d, model, enc = course_folder
    code, out, err = run(capsys, "generate", "--model", str(d), "--prompt", "To be", "--max-new-tokens", "12",
                         "--temperature", "0", "--no-stop")
    assert code == 0, err
    ids = enc.encode("To be")
    want = model.generate(ids, 12, temperature=0)
    assert out == "To be" + enc.decode(want[len(ids):].tolist()) + "\n"
    # sampling: stream, no cache and plain all print the same text for one seed
    outs = []
    for extra in ([], ["--stream"], ["--no-cache"], ["--stream", "--no-cache"]):
        code, out, err = run(capsys, "generate", "--model", str(d), "--prompt", "or not", "--max-new-tokens", "10",
                             "--seed", "7", "--top-k", "20", "--top-p", "0.9", "--temperature", "0.8", *extra)
        assert code == 0, err
        outs.append(out)
    assert len(set(outs)) == 1
    want = model.generate(enc.encode("or not"), 10, seed=7, top_k=20, top_p=0.9, temperature=0.8, stop=enc.eot_token)
    assert outs[0] == "or not" + enc.decode(want[len(enc.encode("or not")):].tolist()) + "\n"


def test_generate_overflow_slide(capsys, course_folder):
    d, model, enc = course_folder
    code, out, err = run(capsys, "generate", "--model", str(d), "--prompt", "To be", "--max-new-tokens", "40",
                         "--temperature", "0", "--no-stop")
    assert code == 2 and out == ""
    assert "exceeds the model's context of 32 tokens" in err and "--overflow slide" in err
    assert "Traceback" not in err
    code, out, err = run(capsys, "generate", "--model", str(d), "--prompt", "To be", "--max-new-tokens", "40",
                         "--temperature", "0", "--no-stop", "--overflow", "slide")
    assert code == 0
    ids = enc.encode("To be")
    want = model.generate(ids, 40, temperature=0, overflow="slide")
    assert out == "To be" + enc.decode(want[len(ids):].tolist()) + "\n"


def test_generate_training_checkpoint(capsys, course_folder, tmp_path):
    ckpt = pytest.importorskip("engine.checkpoint")
    d, model, enc = course_folder
    run_dir = tmp_path / "run"
    ckpt.save_checkpoint(run_dir / "ckpt", model.state_dict(), {"config": model.cfg.to_dict(), "step": 1}, enc=enc)
    results = []
    for path in (run_dir / "ckpt", run_dir):  # the checkpoint, or the run folder holding it
        code, out, err = run(capsys, "generate", "--model", str(path), "--prompt", "To be", "--max-new-tokens", "8",
                             "--temperature", "0", "--no-stop")
        assert code == 0, err
        results.append(out)
    ids = enc.encode("To be")
    assert results == ["To be" + enc.decode(model.generate(ids, 8, temperature=0)[len(ids):].tolist()) + "\n"] * 2
    code, out, _ = run(capsys, "info", str(run_dir), "--json")
    assert code == 0 and json.loads(out)["parameters"]["total"] == model.cfg.n_params()


def test_generate_default_model(capsys, course_folder, monkeypatch):
    d, model, enc = course_folder
    monkeypatch.setattr(engine, "load_pretrained", lambda: (model, enc), raising=False)
    code, out, err = run(capsys, "generate", "--prompt", "To", "--max-new-tokens", "5", "--temperature", "0",
                         "--no-stop")
    assert code == 0, err
    ids = enc.encode("To")
    assert out == "To" + enc.decode(model.generate(ids, 5, temperature=0)[len(ids):].tolist()) + "\n"
    # no prompt: an unconditional sample from <|endoftext|>
    code, out, err = run(capsys, "generate", "--max-new-tokens", "5", "--seed", "0")
    assert code == 0, err
    monkeypatch.delattr(engine, "load_pretrained")
    code, out, err = run(capsys, "generate", "--prompt", "To")
    assert code == 2 and "pass --model PATH" in err and "Traceback" not in err


@pytest.mark.parametrize("argv,msg", [
    (["generate", "--model", "/nonexistent/model"], "does not exist"),
    (["generate", "--model", "{file}"], "is a file"),
    (["generate", "--model", "{empty}"], "is not a model folder"),
    (["generate", "--model", "{course}", "--top-p", "0"], r"top_p must be in (0, 1]"),
    (["generate", "--model", "{course}", "--top-p", "1.5"], r"top_p must be in (0, 1]"),
    (["generate", "--model", "{course}", "--temperature", "-1"], "temperature must be >= 0"),
    (["generate", "--model", "{course}", "--top-k", "0"], "top_k must be a positive integer"),
    (["generate", "--model", "{course}", "--max-new-tokens", "-3"], "--max-new-tokens must be >= 0"),
    (["generate", "--model", "{gpt2vocab}"], "the tokenizer has 50,257 ids but the model only 300"),
    (["info", "gpt-5"], "unknown model 'gpt-5'"),
    (["info", "{empty}"], "holds no model"),
    (["tokenize", "hi", "--encoding", "cl100k_base"], "unknown encoding 'cl100k_base'"),
    (["generate", "--model", "{broken}"], "not a readable safetensors file"),
])
def test_errors_exit_2(capsys, course_folder, tmp_path, argv, msg):
    d, model, enc = course_folder
    f = tmp_path / "file.txt"
    f.write_text("x")
    (tmp_path / "empty").mkdir()
    g = tmp_path / "gpt2vocab"
    save_hf_gpt2(model, g)  # a 300-token model with no tokenizer of its own: GPT-3's 50,257 would not fit
    b = tmp_path / "broken"
    save_hf_gpt2(model, b)
    (b / "model.safetensors").write_bytes((b / "model.safetensors").read_bytes()[:100])
    subs = {"{file}": str(f), "{empty}": str(tmp_path / "empty"), "{course}": str(d), "{gpt2vocab}": str(g),
            "{broken}": str(b)}
    code, out, err = run(capsys, *[subs.get(a, a) for a in argv])
    assert code == 2
    assert err.startswith("error: ") and msg in err
    assert "Traceback" not in err and out == ""


# ---------------------------------------------------------------------- tokenize
def test_tokenize(capsys):
    text = "Hello world, it's 2024 😀 中文<|endoftext|>"
    enc = get_encoding()
    ids = enc.encode(text, allowed_special="all")
    code, out, _ = run(capsys, "tokenize", text)
    assert code == 0
    assert out.startswith(f"{len(ids)} tokens")
    assert out.strip().splitlines()[-1] == "ids: " + " ".join(map(str, ids))
    assert "'Hello'" in out and "' world'" in out and "<|endoftext|>" in out
    code, out, _ = run(capsys, "tokenize", text, "--json")
    j = json.loads(out)
    assert j["ids"] == ids and j["count"] == len(ids) and j["pieces"][:2] == ["Hello", " world"]


def test_tokenize_stdin_and_course_encoding(capsys, course_folder, monkeypatch):
    import io

    d, _, enc = course_folder
    monkeypatch.setattr(sys, "stdin", io.StringIO("whether 'tis nobler"))
    code, out, _ = run(capsys, "tokenize", "-", "--encoding", str(d / "tokenizer.tiktoken"), "--json")
    assert code == 0 and json.loads(out)["ids"] == enc.encode("whether 'tis nobler")


# ---------------------------------------------------------------------- the parser
def test_help_and_usage(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "info" in out and "generate" in out and "tokenize" in out
    code, out, _ = run(capsys)
    assert code == 2 and "usage" in out
    code, _, err = run(capsys, "bogus")
    assert code == 2 and "invalid choice" in err
    code, _, err = run(capsys, "generate", "--max-new-tokens", "ten")
    assert code == 2 and "invalid int value" in err


def test_train_and_finetune_registered_when_present(capsys):
    for name, module, fn in (("train", "engine.train", "add_train_arguments"),
                             ("finetune", "engine.finetune", "add_finetune_arguments")):
        try:
            mod = __import__(module, fromlist=[fn])
            present = hasattr(mod, fn)
        except ImportError:
            present = False
        code, out, err = run(capsys, name, "--help")
        if present:
            assert code == 0 and "usage: python -m engine " + name in out
        else:
            assert code == 2 and "invalid choice" in err


def test_python_dash_m():
    r = subprocess.run([sys.executable, "-m", "engine", "info", "gpt2-124m", "--json"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["parameters"]["total"] == 124_439_808
    r = subprocess.run([sys.executable, "-m", "engine", "info", "nope"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown model") and "Traceback" not in r.stderr


def test_load_model_roundtrip(course_folder):
    """The CLI's loader gives back the model the folder was written from."""
    from engine.cli import load_model

    d, model, enc = course_folder
    m2, enc2 = load_model(d, backend="numpy")
    assert m2.cfg == model.cfg and enc2.n_vocab == enc.n_vocab
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k], v)


def _readme_section(name):
    from pathlib import Path

    s = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return s[s.index(f"<!-- section: {name} -->"):s.index(f"<!-- end section: {name} -->")]


def test_readme_api_example_runs(tmp_path, capsys):
    code = _readme_section("api").split("```python")[1].split("```")[0]
    exec(compile(code.replace("/tmp/my-model", str(tmp_path / "m")), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("174,604,259,328\n")


def test_readme_cli_examples_run(capsys):
    import shlex

    block = _readme_section("cli").split("```bash")[1].split("```")[0]
    lines = [ln.split("#")[0].strip() for ln in block.strip().splitlines()]
    ran = 0
    for ln in lines:
        argv = shlex.split(ln)[3:]  # drop "python -m engine"
        if argv and argv[0] in ("info", "tokenize"):
            code, out, err = run(capsys, *argv)
            assert code == 0 and out and not err, ln
            ran += 1
    assert ran >= 3


def test_generate_cupy_without_cupy(capsys, course_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # as if CuPy were not installed
    d, _, _ = course_folder
    code, out, err = run(capsys, "generate", "--model", str(d), "--backend", "cupy", "--prompt", "To")
    assert code == 2 and "error: backend='cupy' needs CuPy" in err and out == ""
