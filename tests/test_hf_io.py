"""Hugging Face GPT-2 folders in and out: what transformers writes, the engine reads, and
what the engine writes, transformers reads, with the same logits."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from engine import GPT, GPTConfig, load_hf_gpt2, save_hf_gpt2, to_hf_state_dict  # noqa: E402
from engine.hf import engine_to_hf_name, hf_to_engine_name  # noqa: E402

CFG = GPTConfig(n_layer=2, n_head=3, d_model=18, n_ctx=20, vocab_size=77, d_ff=40)


def hf_config(**kw):
    base = dict(vocab_size=77, n_positions=20, n_embd=18, n_layer=2, n_head=3, n_inner=40,
                activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                bos_token_id=None, eos_token_id=None)
    base.update(kw)
    return transformers.GPT2Config(**base)


def randomize_(m, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3 + (1.0 if p.ndim == 1 else 0.0) * 0.1)
    return m


def logits_hf(m, ids):
    with torch.no_grad():
        return m(torch.from_numpy(ids)).logits.double().numpy()


def rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


IDS = np.random.default_rng(0).integers(0, 77, (2, 20))


def test_load_lm_head_model_folder(tmp_path):
    """GPT2LMHeadModel.save_pretrained: keys with the ``transformer.`` prefix."""
    m = randomize_(transformers.GPT2LMHeadModel._from_config(hf_config(), attn_implementation="eager"), 1).eval()
    m.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "np") as f:
        keys = list(f.keys())
    assert any(k.startswith("transformer.") for k in keys)
    ours = load_hf_gpt2(tmp_path, dtype="float32", backend="numpy")
    assert ours.cfg.n_head == 3 and ours.cfg.d_ff == 40 and ours.cfg.n_ctx == 20 and ours.cfg.vocab_size == 77
    assert rel(ours.forward(IDS), logits_hf(m, IDS)) < 1e-5
    ours64 = load_hf_gpt2(tmp_path, dtype="float64", backend="numpy")
    assert ours64.forward(IDS).dtype == np.float64
    assert rel(ours64.forward(IDS), logits_hf(m.double(), IDS)) < 1e-6  # float32 weights, float64 arithmetic


def test_load_base_model_folder(tmp_path):
    """GPT2Model.save_pretrained: the same tensors without the prefix (and no lm_head)."""
    lm = randomize_(transformers.GPT2LMHeadModel._from_config(hf_config(), attn_implementation="eager"), 2).eval()
    base = lm.transformer
    base.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "np") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith("transformer.") for k in keys) and "wte.weight" in keys
    ours = load_hf_gpt2(tmp_path, backend="numpy")
    assert rel(ours.forward(IDS), logits_hf(lm, IDS)) < 1e-5


def test_load_float16_folder(tmp_path):
    m = randomize_(transformers.GPT2LMHeadModel._from_config(hf_config(), attn_implementation="eager"), 3).eval()
    m.half().save_pretrained(tmp_path)
    ours = load_hf_gpt2(tmp_path, backend="numpy")
    assert ours.params["wte"].dtype == np.float32
    np.testing.assert_array_equal(ours.params["wte"], m.transformer.wte.weight.detach().float().numpy())
    assert rel(ours.forward(IDS), logits_hf(m.float(), IDS)) < 1e-5


def test_save_loads_in_transformers(tmp_path):
    ours = GPT(CFG, seed=4, backend="numpy")
    rng = np.random.default_rng(5)
    for block in ours.params["h"]:  # non-zero biases and gains so that every tensor counts
        for sub in (block["ln_1"], block["ln_2"]):
            sub["g"] += rng.standard_normal(sub["g"].shape).astype(np.float32) * 0.1
            sub["b"] += rng.standard_normal(sub["b"].shape).astype(np.float32) * 0.1
        block["mlp"]["c_fc"]["b"] += rng.standard_normal(40).astype(np.float32) * 0.1
    save_hf_gpt2(ours, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]  # no temp files left
    m = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert m.config.n_inner == 40 and m.config.n_positions == 20
    assert torch.equal(m.lm_head.weight, m.transformer.wte.weight)
    assert rel(ours.forward(IDS), logits_hf(m, IDS)) < 1e-5
    # and back: bit for bit, engine layout fields included
    again = load_hf_gpt2(tmp_path, backend="numpy")
    assert again.cfg == ours.cfg
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[k], v)


def test_save_keeps_sparse_layouts(tmp_path):
    cfg = GPTConfig(n_layer=4, n_head=2, d_model=8, n_ctx=16, vocab_size=30, attention=("dense", "banded", "fixed",
                    "strided"), window=3, stride=4, fixed_c=2, name="odd")
    model = GPT(cfg, seed=1, dtype="float64", backend="numpy")
    save_hf_gpt2(model, tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    assert d["engine_attention"] == ["dense", "banded", "fixed", "strided"]
    back = load_hf_gpt2(tmp_path, dtype="float64", backend="numpy")
    assert back.cfg == cfg
    save_hf_gpt2(GPT(cfg.replace(attention="alternating"), backend="numpy"), tmp_path / "alt")
    assert load_hf_gpt2(tmp_path / "alt").cfg.attention == "alternating"
    ids = np.arange(16) % 30
    np.testing.assert_array_equal(back.forward(ids), model.forward(ids))


def test_state_dict_names_match_hf():
    m = transformers.GPT2LMHeadModel(hf_config())
    hf_keys = {k for k in m.state_dict() if k != "lm_head.weight" and not k.endswith((".attn.bias", ".masked_bias"))}
    ours = to_hf_state_dict(GPT(CFG, backend="numpy").params)
    assert set(ours) == hf_keys
    for k, v in m.state_dict().items():
        if k in ours:
            assert tuple(ours[k].shape) == tuple(v.shape), k
    # the flat form works too, and names map both ways
    flat = GPT(CFG, backend="numpy").state_dict()
    assert set(to_hf_state_dict(flat)) == hf_keys
    for name in flat:
        assert hf_to_engine_name(engine_to_hf_name(name)) == name
        assert hf_to_engine_name(engine_to_hf_name(name)[len("transformer."):]) == name
    res = m.load_state_dict({k: torch.from_numpy(v) for k, v in ours.items()}, strict=False)
    assert not res.unexpected_keys and set(res.missing_keys) <= {"lm_head.weight"}


def test_untied_lm_head_is_refused(tmp_path):
    from safetensors.numpy import load_file, save_file

    save_hf_gpt2(GPT(CFG, backend="numpy"), tmp_path)
    t = load_file(str(tmp_path / "model.safetensors"))
    t["lm_head.weight"] = t["transformer.wte.weight"] + 1
    save_file(t, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="lm_head.weight differs from wte"):
        load_hf_gpt2(tmp_path)
    t["lm_head.weight"] = t["transformer.wte.weight"].copy()  # a tied copy is fine
    save_file(t, str(tmp_path / "model.safetensors"))
    assert load_hf_gpt2(tmp_path).n_params() == CFG.n_params()


def test_saved_config_special_tokens(tmp_path):
    save_hf_gpt2(GPT(CFG, backend="numpy"), tmp_path / "small")
    d = json.loads((tmp_path / "small" / "config.json").read_text())
    assert d["eos_token_id"] is None  # token 0 is an ordinary token in a small vocabulary
    big = GPTConfig(n_layer=1, n_head=1, d_model=4, n_ctx=8, vocab_size=50257)
    save_hf_gpt2(GPT(big, backend="numpy"), tmp_path / "big")
    d = json.loads((tmp_path / "big" / "config.json").read_text())
    assert d["eos_token_id"] == d["bos_token_id"] == 50256  # GPT-2's <|endoftext|>
