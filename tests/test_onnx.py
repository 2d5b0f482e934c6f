"""engine.onnx: the exported graph, run by onnxruntime, gives the engine's numbers.

onnxruntime (Python, CPU) is the reference runtime: the same kernels the browser's WebAssembly
build runs. Every layout on small random models, then the shipped course model in float32 and
float16: logits without and with the cache, greedy generation, the X-ray outputs.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from engine import GPT, GPTConfig, attention_mask, load_pretrained  # noqa: E402
from engine.onnx import empty_past, export_onnx, greedy, main, run, to_onnx  # noqa: E402

LAYOUTS = ["dense", "banded", "strided", "fixed", "alternating", ("fixed", "strided", "banded")]
TOL = 1e-4          # float32 graph against the float32 engine
TOL_F16 = 0.02      # float16 weights (each rounded by up to 2^-11 relative): 0.0074 measured, logits up to 12


def session(model, **kw):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(to_onnx(model, **kw).SerializeToString(), so, providers=["CPUExecutionProvider"])


def small(attention, seed=0):
    n_layer = len(attention) if isinstance(attention, tuple) else 2
    cfg = GPTConfig(n_layer=n_layer, n_head=2, d_model=16, n_ctx=40, vocab_size=37, window=5, stride=4,
                    fixed_c=2, attention=attention)
    return GPT(cfg, seed=seed)


def outputs(sess, ids, past):
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"input_ids": np.asarray(ids, np.int64), **past})))


def cached_logits(sess, ids, cfg, chunks):
    """Logits (B, T, V) of ids fed through the cache in pieces of the given lengths."""
    past, got, t = empty_past(cfg, ids.shape[0]), [], 0
    for n in chunks:
        logits, past = run(sess, ids[:, t:t + n], past, cfg)
        got.append(logits)
        t += n
    assert t == ids.shape[1]
    assert past["past_key_0"].shape == (ids.shape[0], cfg.n_head, t, cfg.d_head)
    return np.concatenate(got, axis=1)


# ---------------------------------------------------------------------- every layout, random models
@pytest.mark.parametrize("attention", LAYOUTS, ids=str)
def test_logits_match_the_engine_without_and_with_the_cache(attention):
    m = small(attention, seed=3)
    sess = session(m)
    ids = np.random.default_rng(1).integers(0, 37, (2, 31))
    ref = m.forward(ids)
    no_cache = outputs(sess, ids, empty_past(m.cfg, 2))["logits"]
    assert no_cache.shape == (2, 31, 37) and np.abs(no_cache - ref).max() < TOL
    # a prompt, then single tokens and a few multi-token steps after a non-empty cache
    step = cached_logits(sess, ids, m.cfg, [9] + [1] * 12 + [3, 7])
    assert np.abs(step - ref).max() < TOL


@pytest.mark.parametrize("attention", LAYOUTS, ids=str)
def test_xray_outputs_are_the_logit_lens_and_the_layouts_attention(attention):
    m = small(attention, seed=5)
    sess = session(m, xray=True)
    ids = np.random.default_rng(2).integers(0, 37, (2, 29))
    xr = m.forward(ids, return_residuals=True, return_attention=True)
    o = outputs(sess, ids, empty_past(m.cfg, 2))
    L = m.cfg.n_layer
    assert o["lens_logits"].shape == (L + 1, 2, 29, 37) and o["attn"].shape == (L, 2, 2, 29, 29)
    assert np.abs(o["lens_logits"] - np.stack(xr.logit_lens())).max() < TOL
    assert np.abs(o["attn"] - np.stack(xr.attention)).max() < 1e-5
    # the graph's own masks: weights exactly zero where attention_mask says no, positive elsewhere
    for layer, kind in enumerate(m.cfg.layer_layouts()):
        mask = attention_mask(kind, 29, window=5, stride=4, c=2)
        w = o["attn"][layer]
        assert np.all(w[..., ~mask] == 0) and np.all(w[..., mask] > 0), kind
    # with a cache, the new rows see every earlier key: the full sequence's last rows
    past = {k: v for k, v in o.items() if k.startswith("present_")}
    past = {k.replace("present_", "past_"): v[:, :, :25] for k, v in past.items()}
    o2 = outputs(sess, ids[:, 25:], past)
    assert o2["attn"].shape == (L, 2, 2, 4, 29)
    assert np.abs(o2["attn"] - o["attn"][:, :, :, 25:]).max() < 1e-5
    assert np.abs(o2["lens_logits"] - o["lens_logits"][:, :, 25:]).max() < TOL


@pytest.mark.parametrize("attention", ["alternating", "strided", "fixed"])
def test_greedy_through_the_cache_equals_generate(attention):
    m = small(attention, seed=7)
    sess = session(m)
    prompt = np.random.default_rng(4).integers(0, 37, 5)
    got = greedy(sess, prompt, 30, m.cfg)
    assert np.array_equal(got, m.generate(prompt, 30, temperature=0))
    batch = np.stack([prompt, prompt[::-1]])
    assert np.array_equal(greedy(sess, batch, 12, m.cfg), m.generate(batch, 12, temperature=0))


# ---------------------------------------------------------------------- the shipped model
@pytest.fixture(scope="module")
def course():
    model, enc = load_pretrained()
    return model, enc, enc.encode("JULIET:\nO Romeo, Romeo! wherefore art thou")


@pytest.fixture(scope="module")
def course_sessions(course):
    model = course[0]
    return {dt: session(model, xray=True, dtype=dt) for dt in ("float32", "float16")}


def test_course_model_logits_and_xray_match_the_engine(course, course_sessions):
    model, _, prompt = course
    ids = np.asarray(prompt)[None]
    xr = model.forward(ids, return_residuals=True, return_attention=True)
    o = outputs(course_sessions["float32"], ids, empty_past(model.cfg))
    assert np.abs(o["logits"] - xr.logits).max() < TOL
    assert np.abs(o["lens_logits"] - np.stack(xr.logit_lens())).max() < TOL
    assert np.abs(o["attn"] - np.stack(xr.attention)).max() < 1e-5
    # the logit lens's top tokens per layer, as the X-ray viewer shows them
    assert np.array_equal(o["lens_logits"][:, 0, -1].argmax(-1), np.stack(xr.logit_lens())[:, 0, -1].argmax(-1))
    T = ids.shape[1]
    step = cached_logits(course_sessions["float32"], ids, model.cfg, [T - 6] + [1] * 6)
    assert np.abs(step - xr.logits).max() < TOL


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_course_model_greedy_32_tokens_equal_generate(course, course_sessions, dtype):
    model, enc, prompt = course
    want = model.generate(prompt, 32, temperature=0)
    got = greedy(course_sessions[dtype], prompt, 32, model.cfg)
    assert np.array_equal(got, want), (enc.decode(got.tolist()), enc.decode(want.tolist()))


def test_course_model_in_float16_stays_close(course, course_sessions):
    model, _, prompt = course
    ids = np.asarray(prompt)[None]
    ref = model.forward(ids)
    got = outputs(course_sessions["float16"], ids, empty_past(model.cfg))["logits"]
    err = np.abs(got - ref).max()
    assert 0 < err < TOL_F16  # not zero: the weights really are stored in half precision
    assert np.array_equal(got.argmax(-1), ref.argmax(-1))


def test_export_writes_the_files_and_their_contract(tmp_path, course):
    assert main([str(tmp_path / "f32")]) == 0
    assert main([str(tmp_path / "f16"), "--float16", "--xray"]) == 0
    info = json.loads((tmp_path / "f16" / "model.json").read_text())
    size32 = (tmp_path / "f32" / "model.onnx").stat().st_size
    size16 = (tmp_path / "f16" / "model.onnx").stat().st_size
    assert 13e6 < size32 < 15e6 and size16 < 8e6 and info["bytes"] == size16
    model, enc, _ = course
    assert info["weights_dtype"] == "float16" and info["xray"] is True
    assert info["layouts"] == list(model.cfg.layer_layouts()) and info["eos_id"] == enc.eot_token
    assert (info["n_layer"], info["n_head"], info["d_head"], info["n_ctx"], info["vocab_size"]) == (6, 6, 32, 256,
                                                                                                     4096)
    sess = ort.InferenceSession(str(tmp_path / "f16" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == info["outputs"]
    assert sorted(i.name for i in sess.get_inputs()) == sorted(info["inputs"])
    assert json.loads((tmp_path / "f32" / "model.json").read_text())["xray"] is False


# ---------------------------------------------------------------------- bad input
def test_bad_input_is_refused_clearly(tmp_path):
    m = small("dense")
    with pytest.raises(ValueError, match="dtype must be one of"):
        export_onnx(m, tmp_path / "m.onnx", dtype="bfloat16")
    with pytest.raises(TypeError, match="engine GPT model"):
        export_onnx({"wte": np.zeros((3, 2))}, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="exceeds the context"):
        greedy(session(m), [1, 2, 3], 40, m.cfg)
    with pytest.raises(ValueError, match=r"shape \(B, T\)"):
        run(session(m), [1, 2], empty_past(m.cfg), m.cfg)
    assert not (tmp_path / "m.onnx").exists()
