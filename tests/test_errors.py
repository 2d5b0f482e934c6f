"""Bad input gets an error that names the problem, raised at the door, never a NumPy traceback
from deep inside; and the backend switch behaves as documented."""
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import GPT, GPTConfig, get_xp, load_hf_gpt2, save_hf_gpt2
from engine import backend as backend_mod

CFG = GPTConfig(n_layer=2, n_head=2, d_model=8, n_ctx=16, vocab_size=40, attention="alternating", window=4)


@pytest.fixture(scope="module")
def model():
    return GPT(CFG, backend="numpy")


# ---------------------------------------------------------------------- token ids
@pytest.mark.parametrize("ids,exc,msg", [
    ([1, 2, 40], ValueError, r"contains token id 40, outside the vocabulary 0 \.\. 39"),
    ([[1, -3]], ValueError, r"contains token id -3, outside the vocabulary"),
    ([], ValueError, "ids is empty"),
    (np.zeros((2, 0), np.int64), ValueError, "ids is empty"),
    (np.array([]), ValueError, "ids is empty"),
    ([1.0, 2.0], TypeError, "ids must be integers, got dtype float64"),
    (np.array([1.5]), TypeError, "ids must be integers, got dtype float64"),
    ("hello", TypeError, "not text: encode it first"),
    (["he", "llo"], TypeError, "not text: encode it first"),
    ([True, False], TypeError, "ids must be integers, got dtype bool"),
    ([[1, 2], [3]], TypeError, "rectangular list of integers"),
    (np.zeros((1, 2, 3), np.int64), ValueError, r"shape \(T,\) or \(B, T\), got \(1, 2, 3\)"),
    (None, TypeError, "list or array of integer token ids, got NoneType"),
    (list(range(17)), ValueError, "ids has 17 positions but the model's context n_ctx is 16"),
])
def test_bad_ids(model, ids, exc, msg):
    for call in (model.forward, lambda x: model.generate(x, 1), lambda x: model.loss(x, x)):
        with pytest.raises(exc, match=msg):
            call(ids)


def test_generate_policy_errors(model):
    with pytest.raises(ValueError, match=r"prompt \(10 tokens\) \+ max_new_tokens \(7\) exceeds the context n_ctx = 16"):
        model.generate(list(range(10)), 7)
    with pytest.raises(ValueError, match="overflow='slide'"):
        model.generate(list(range(17)), 1)
    with pytest.raises(ValueError, match="max_new_tokens must be a non-negative integer, got -1"):
        model.generate([1], -1)
    with pytest.raises(ValueError, match="max_new_tokens must be a non-negative integer, got 2.5"):
        model.generate([1], 2.5)


@pytest.mark.parametrize("kw,msg", [
    (dict(top_p=0.0), r"top_p must be in \(0, 1\], got 0.0"), (dict(top_p=1.01), r"top_p must be in \(0, 1\]"),
    (dict(top_p=-0.5), r"top_p must be in \(0, 1\]"), (dict(temperature=-0.1), "temperature must be >= 0"),
    (dict(temperature=float("inf")), "temperature must be a finite number"), (dict(top_k=-2), "top_k must be"),
])
def test_bad_sampling(model, kw, msg):
    with pytest.raises(ValueError, match=msg):
        model.generate([1, 2], 2, **kw)
    with pytest.raises(ValueError, match=msg):
        list(model.generate_stream([1, 2], 2, **kw))


def test_bad_targets(model):
    with pytest.raises(ValueError, match=r"targets shape \(1, 2\) must match ids shape \(1, 3\)"):
        model.loss([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r"targets must be token ids in 0 \.\. 39 \(or -1 to ignore\)"):
        model.loss([1, 2], [1, 40])
    with pytest.raises(TypeError, match="targets must be integers"):
        model.loss([1, 2], [1.0, 2.0])


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="dtype must be one of"):
        GPT(CFG, dtype="float8", backend="numpy")
    with pytest.raises(ValueError, match="dtype must be one of"):
        GPT(CFG, dtype="bfloat16", backend="numpy")  # CuPy has no bfloat16 either
    with pytest.raises(ValueError, match="unknown preset 'gpt-5'"):
        GPT("gpt-5")


# ---------------------------------------------------------------------- parameters and checkpoints
def test_params_that_do_not_match_the_config(model):
    sd = model.state_dict()
    from engine.model import tree_unflatten

    bad = dict(sd)
    del bad["h.1.ln_2.b"]
    bad["h.0.mlp.c_fc.w"] = np.zeros((8, 31), np.float32)
    bad["h.0.attn.bias"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as e:
        GPT(CFG, backend="numpy", params=tree_unflatten(bad, 2))
    msg = str(e.value)
    assert "missing: h.1.ln_2.b" in msg
    assert "unexpected: h.0.attn.bias" in msg
    assert "h.0.mlp.c_fc.w: got (8, 31), config expects (8, 32)" in msg
    nan = dict(sd)
    nan["h.1.attn.c_proj.w"] = sd["h.1.attn.c_proj.w"].copy()
    nan["h.1.attn.c_proj.w"][0, 0] = np.nan
    nan["wpe"] = sd["wpe"].copy()
    nan["wpe"][3, 1] = np.inf
    with pytest.raises(ValueError, match="parameters contain NaN or inf in: .*h.1.attn.c_proj.w"):
        GPT(CFG, backend="numpy", params=tree_unflatten(nan, 2))


def _save(model, path) -> Path:
    return save_hf_gpt2(model, path)


def test_checkpoint_shape_and_key_mismatch(model, tmp_path):
    from safetensors.numpy import load_file, save_file

    d = _save(model, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["n_inner"] = 24  # the config now disagrees with the tensors
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"wrong shape: .*h\.0\.mlp\.c_fc\.w: got \(8, 32\), config expects \(8, 24\)"):
        load_hf_gpt2(d)
    d2 = _save(model, tmp_path / "m2")
    t = load_file(str(d2 / "model.safetensors"))
    del t["transformer.h.1.attn.c_attn.bias"]
    t["transformer.h.0.crossattention.q_attn.weight"] = np.zeros((8, 8), np.float32)
    save_file(t, str(d2 / "model.safetensors"))
    with pytest.raises(ValueError) as e:
        load_hf_gpt2(d2)
    assert "missing: h.1.attn.c_attn.b" in str(e.value)
    assert "unexpected: h.0.crossattention.q_attn.w" in str(e.value)


def test_nan_in_loaded_weights(model, tmp_path):
    from safetensors.numpy import load_file, save_file

    d = _save(model, tmp_path / "m")
    t = load_file(str(d / "model.safetensors"))
    t["transformer.h.1.mlp.c_fc.weight"][2, 5] = np.nan
    save_file(t, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match=r"NaN or inf in: h\.1\.mlp\.c_fc\.w"):
        load_hf_gpt2(d)


@pytest.mark.parametrize("damage", ["truncate", "header", "empty", "garbage"])
def test_damaged_safetensors(model, tmp_path, damage):
    d = _save(model, tmp_path / "m")
    f = d / "model.safetensors"
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "header":
        f.write_bytes(data[:8] + b"{not json" + data[17:])
    elif damage == "empty":
        f.write_bytes(b"")
    else:
        f.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match=re.escape(str(f)) + r" is not a readable safetensors file \(truncated or corrupted\?\)"):
        load_hf_gpt2(d)


def test_missing_or_bad_files(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        load_hf_gpt2(tmp_path)
    d = _save(model, tmp_path / "m")
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors not found"):
        load_hf_gpt2(d)
    d = _save(model, tmp_path / "m2")
    (d / "config.json").write_text("{oops")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_hf_gpt2(d)
    for change, msg in [({"activation_function": "relu"}, "activation 'relu'"),
                        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
                        ({"scale_attn_weights": False}, "scale_attn_weights")]:
        d = _save(model, tmp_path / "m3")
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(change)
        (d / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(ValueError, match=msg):
            load_hf_gpt2(d)
    d = _save(model, tmp_path / "m4")
    cfg = json.loads((d / "config.json").read_text())
    del cfg["n_embd"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="config.json lacks 'n_embd'"):
        load_hf_gpt2(d)


# ---------------------------------------------------------------------- backends
def test_backend_selection(monkeypatch):
    assert get_xp("numpy") is np
    assert get_xp("NumPy") is np
    assert get_xp(np) is np
    monkeypatch.setitem(sys.modules, "cupy", None)  # as if CuPy were not installed
    assert get_xp("auto") is np
    with pytest.raises(ImportError, match="backend='cupy' needs CuPy"):
        get_xp("cupy")
    with pytest.raises(ValueError, match=r"backend must be one of \('numpy', 'cupy', 'auto'\), got 'gpu'"):
        get_xp("gpu")
    monkeypatch.setenv("ENGINE_BACKEND", "numpy")
    assert get_xp() is np and GPT(CFG).xp is np
    monkeypatch.setenv("ENGINE_BACKEND", "cupy")
    with pytest.raises(ImportError, match="needs CuPy"):
        get_xp()
    with pytest.raises(ImportError, match="needs CuPy"):
        GPT(CFG)
    monkeypatch.setenv("ENGINE_BACKEND", "auto")
    assert get_xp() is np
    monkeypatch.delenv("ENGINE_BACKEND")
    assert get_xp() is np  # default auto, and no CuPy
    monkeypatch.setenv("ENGINE_BACKEND", "tpu")
    with pytest.raises(ValueError, match="got 'tpu'"):
        get_xp()


def test_backend_helpers():
    a = np.arange(3)
    assert backend_mod.array_module(a) is np
    assert backend_mod.backend_name(np) == "numpy"
    assert backend_mod.to_numpy(a) is a or np.array_equal(backend_mod.to_numpy(a), a)
    assert isinstance(backend_mod.to_numpy([1, 2]), np.ndarray)


def test_no_cupy_forks_in_model_code():
    """Only the backend layer may name CuPy (backend.py; kernels.py and grad_kernels.py, which pick a
    fused GPU kernel or the plain expression from the array's module): the model code runs on
    whatever module xp is."""
    root = Path(__file__).resolve().parents[1] / "engine"
    offenders = []
    for f in sorted(root.rglob("*.py")):
        if f.name in ("backend.py", "kernels.py", "grad_kernels.py"):
            continue
        for n, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\bimport\s+cupy|\bfrom\s+cupy|\bif\s+.*cupy|cupy\.", code):
                offenders.append(f"{f.name}:{n}: {line.strip()}")
    assert not offenders, "CuPy named outside backend.py:\n" + "\n".join(offenders)
