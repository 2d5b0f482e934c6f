"""Temperature scaling (engine/calibrate.py) against PyTorch autograd, finite differences and a known answer.

The fit is checked three ways: the derivatives of the loss in beta = 1/T against PyTorch's double
backward; the fitted T is a stationary point of PyTorch's cross-entropy and no grid point does better;
and on labels drawn from softmax(z / T0) the fit recovers T0. Folding is checked on a real forward pass.
"""
import math

import numpy as np
import pytest

from engine import pretrained
from engine.calibrate import (fit_temperature, fold_temperature, held_out_logits, temperature_objective,
                              window_losses_by_temperature)
from engine.config import GPTConfig
from engine.model import GPT

torch = pytest.importorskip("torch")


def _torch_loss(z, y, beta):
    """PyTorch's mean cross-entropy of softmax(beta * z), ignoring targets of -1."""
    return torch.nn.functional.cross_entropy(beta * torch.as_tensor(z, dtype=torch.float64),
                                             torch.as_tensor(y, dtype=torch.int64), ignore_index=-1)


def _sample(z, T0, rng):
    """One label per row drawn from softmax(z / T0)."""
    p = np.exp(z / T0 - (z / T0).max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return (p.cumsum(axis=1) > rng.random((len(z), 1))).argmax(axis=1)


def _problem(seed=0, n=600, V=40, scale=3.0, T0=1.4):
    """Logits and labels drawn from them at temperature T0, 10% of the positions not scored."""
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((n, V)) * scale).astype(np.float32)
    y = _sample(z.astype(np.float64), T0, rng)
    y[rng.random(n) < 0.1] = -1
    return z, y


@pytest.mark.parametrize("beta", [0.3, 1.0, 1.7])
def test_objective_and_derivatives_match_torch(beta):
    z, y = _problem()
    f, d1, d2 = temperature_objective(z, y, beta, chunk=97)  # chunks that do not divide the rows
    b = torch.tensor(beta, dtype=torch.float64, requires_grad=True)
    loss = _torch_loss(z, y, b)
    (g,) = torch.autograd.grad(loss, b, create_graph=True)
    (h,) = torch.autograd.grad(g, b)
    assert f == pytest.approx(loss.item(), rel=1e-12)
    assert d1 == pytest.approx(g.item(), rel=1e-9, abs=1e-12)
    assert d2 == pytest.approx(h.item(), rel=1e-9)
    # and against central differences of the loss itself
    eps = 1e-5
    fp, fm = temperature_objective(z, y, beta + eps)[0], temperature_objective(z, y, beta - eps)[0]
    assert d1 == pytest.approx((fp - fm) / (2 * eps), rel=1e-6, abs=1e-9)


def test_fitted_temperature_minimises_torch_cross_entropy():
    z, y = _problem(seed=1)
    T = fit_temperature(z, y)
    b = torch.tensor(1.0 / T, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(_torch_loss(z, y, b), b)
    assert abs(g.item()) < 1e-9  # a stationary point of the loss in beta
    best = _torch_loss(z, y, 1.0 / T).item()
    grid = [_torch_loss(z, y, 1.0 / t).item() for t in np.linspace(0.2, 5.0, 97)]
    assert best <= min(grid) + 1e-12
    assert T != pytest.approx(1.0, abs=0.1)  # a real change, not the starting point


@pytest.mark.parametrize("T0", [0.6, 1.0, 1.8])
def test_recovers_the_temperature_that_made_the_labels(T0):
    rng = np.random.default_rng(2)
    z = rng.standard_normal((40_000, 30)) * 2.5
    y = _sample(z, T0, rng)
    assert fit_temperature(z, y) == pytest.approx(T0, rel=0.03)


def test_unscored_positions_and_shape_do_not_matter():
    z, y = _problem(seed=3)
    T = fit_temperature(z, y)
    zz = np.concatenate([z, 100 * np.ones((50, z.shape[1]), z.dtype)])  # junk rows, not scored
    yy = np.concatenate([y, -np.ones(50, y.dtype)])
    assert fit_temperature(zz, yy) == pytest.approx(T, rel=1e-12)
    assert fit_temperature(z.reshape(20, 30, -1), y.reshape(20, 30)) == pytest.approx(T, rel=1e-12)


def test_bad_input_is_refused():
    z, y = _problem()
    with pytest.raises(ValueError, match="no scored positions"):
        fit_temperature(z, -np.ones_like(y))
    with pytest.raises(ValueError, match="no information"):  # always the least likely token: T -> infinity
        fit_temperature(z, z.argmin(axis=1))
    with pytest.raises(ValueError, match="do not match"):
        fit_temperature(z, y[:-1])
    with pytest.raises(ValueError, match="positive"):
        fold_temperature({"ln_f": {"g": np.ones(3), "b": np.zeros(3)}}, 0.0)


def test_folding_divides_every_logit_and_keeps_the_original():
    cfg = GPTConfig(n_layer=2, n_head=2, d_model=16, n_ctx=12, vocab_size=50)
    model = GPT(cfg, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    model.params["ln_f"]["b"][:] = rng.standard_normal(16)  # a bias that is not zero, so folding it matters
    g = model.params["ln_f"]["g"].copy()
    ids = rng.integers(0, 50, (3, 12))
    folded = GPT(cfg, dtype="float64", params=fold_temperature(model.params, 1.37))
    np.testing.assert_allclose(folded.forward(ids), model.forward(ids) / 1.37, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(model.params["ln_f"]["g"], g)  # the input tree is unchanged
    # the argmax (greedy decoding) is the same
    np.testing.assert_array_equal(folded.forward(ids).argmax(-1), model.forward(ids).argmax(-1))


def test_held_out_logits_are_the_evaluation_windows():
    from engine.train import eval_windows, evaluate

    cfg = GPTConfig(n_layer=1, n_head=2, d_model=16, n_ctx=8, vocab_size=30)
    model = GPT(cfg, seed=1)
    ids = np.random.default_rng(1).integers(0, 30, 70)
    z, y = held_out_logits(model, ids, max_windows=None, batch_size=3)
    x, yy = eval_windows(ids, 8)
    np.testing.assert_array_equal(y, yy)
    np.testing.assert_allclose(z, model.forward(x), rtol=1e-6)
    loss = temperature_objective(z.reshape(-1, 30), y.reshape(-1), 1.0)[0]
    assert loss == pytest.approx(evaluate(model, ids)["loss"], rel=1e-5)
    assert held_out_logits(model, ids, max_windows=2)[0].shape == (2, 8, 30)
    # the curve: at T = 1 the ordinary loss; at T = 2 the loss of the model with T = 2 folded in
    nll, targets = window_losses_by_temperature(model, ids, [1.0, 2.0], batch_size=3)
    np.testing.assert_array_equal(targets, yy)
    tokens = (yy >= 0).sum()
    assert nll.shape == (2, len(x))
    assert nll[0].sum() / tokens.sum() == pytest.approx(evaluate(model, ids)["loss"], rel=1e-6)
    folded = GPT(cfg, params=fold_temperature(model.params, 2.0))
    assert nll[1].sum() / tokens.sum() == pytest.approx(evaluate(folded, ids)["loss"], rel=1e-6)


def test_export_calibrates_and_reports_before_and_after(tmp_path, monkeypatch):
    """``export(calibrate=N)``: the shipped weights are the run's with T folded in, T fitted on N windows."""
    from safetensors.numpy import load_file

    from engine import data
    from engine.checkpoint import load_checkpoint
    from engine.data import encode_texts, load_corpus
    from engine.model import tree_unflatten
    from engine.train import evaluate
    from engine.train import main as train_main

    run = tmp_path / "run"
    train_main(["--preset", "course-tiny", "--data", "book", "--batch-size", "2", "--eval-interval", "0",
                "--no-progress", "--out", str(run), "--steps", "6", "--lr", "1e-2"])
    monkeypatch.setattr(data, "shakespeare_split", lambda: load_corpus("book"))
    quiet = dict(out_dir=tmp_path / "assets", log=lambda *a: None)
    with pytest.raises(ValueError, match="calibrate must be"):
        pretrained.export(run, calibrate=-1, **quiet)
    m = pretrained.export(run, calibrate=2, **quiet)
    c = m["calibration"]
    ck = load_checkpoint(run / "ckpt")
    cfg = GPTConfig.from_dict(ck["state"]["config"])
    raw = GPT(cfg, params=tree_unflatten(ck["weights"], cfg.n_layer))
    val = encode_texts(ck["enc"], load_corpus("book")[1])
    z, y = held_out_logits(raw, val, ck["enc"], 2)
    assert c["temperature"] == pytest.approx(fit_temperature(z, y), rel=1e-6)
    assert c["fit_windows"] == 2 and c["fit_tokens"] == int((y >= 0).sum())
    shipped = load_file(str(tmp_path / "assets" / "model.safetensors"))
    T = c["temperature"]
    np.testing.assert_allclose(shipped["ln_f.g"], ck["weights"]["ln_f.g"] / T, rtol=1e-6)
    np.testing.assert_allclose(shipped["ln_f.b"], ck["weights"]["ln_f.b"] / T, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(shipped["wte"], ck["weights"]["wte"])
    # the scores before are the run's own, the scores after are the card's, and the split adds up
    before = evaluate(raw, val, ck["enc"])
    assert c["before"]["bits_per_byte"] == pytest.approx(before["bpb"], rel=1e-6)
    assert m["val_bits_per_byte"] == pytest.approx(c["after"]["bits_per_byte"], rel=1e-6)
    assert c["after"]["fit_bits_per_byte"] <= c["before"]["fit_bits_per_byte"] + 1e-9  # T = 1 was a candidate
    fit = evaluate(raw, val, ck["enc"], max_windows=2)
    rest = (before["loss"] * before["tokens"] - fit["loss"] * fit["tokens"]) / math.log(2) / (before["bytes"] - fit["bytes"])
    assert c["before"]["rest_bits_per_byte"] == pytest.approx(rest, rel=1e-6)
    curve = c["curve"]  # the recorded curve: at T = 1 the scores before, and no grid point beats the fit there
    i1 = curve["temperature"].index(1.0)
    assert curve["fit_bits_per_byte"][i1] == pytest.approx(c["before"]["fit_bits_per_byte"], rel=1e-6)
    assert curve["rest_bits_per_byte"][i1] == pytest.approx(c["before"]["rest_bits_per_byte"], rel=1e-6)
    assert min(curve["fit_bits_per_byte"]) >= c["after"]["fit_bits_per_byte"] - 1e-9
    card = (tmp_path / "assets" / "MODEL_CARD.md").read_text()
    assert f"T = {T:.3f}" in card and "Calibration" in card


def test_shipped_assets_are_calibrated_once(tmp_path):
    """The shipped model records its temperature, and calibrating it again is refused."""
    m = pretrained.model_card_metrics()
    c = m.get("calibration")
    if not c:
        pytest.skip("the shipped model is not calibrated")
    assert c["temperature"] > 1  # softer: the model was too sure of itself on new text
    assert c["after"]["bits_per_byte"] == pytest.approx(m["val_bits_per_byte"], rel=1e-6)  # logits / T, or T folded in
    assert c["after"]["bits_per_byte"] < c["before"]["bits_per_byte"]
    assert c["after"]["rest_bits_per_byte"] < c["before"]["rest_bits_per_byte"]  # also where T was not fitted
    with pytest.raises(ValueError, match="already calibrated"):
        pretrained.calibrate_shipped(out_dir=tmp_path)
    assert not any(tmp_path.iterdir())
