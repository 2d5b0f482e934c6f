"""Distillation: the mixed-target loss and its gradient, the teachers' targets, training and resuming with them."""
import json

import numpy as np
import pytest

from engine import GPT, GPTConfig
from engine.bpe import train_bpe
from engine.checkpoint import CheckpointError, load_checkpoint
from engine.data import encode_texts, join_texts, load_corpus
from engine.distill import (distill_cross_entropy_backward, distill_cross_entropy_forward, gather_targets,
                            teacher_targets)
from engine.losses import cross_entropy_backward, cross_entropy_forward
from engine.train import Trainer, TrainConfig, load_teachers, main as train_main


def soft_batch(B=2, T=5, V=11, k=4, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((B, T, V)) * 2
    y = rng.integers(0, V, (B, T))
    y[0, 1] = -1
    idx = np.stack([np.stack([rng.permutation(V)[:k] for _ in range(T)]) for _ in range(B)])
    p = rng.random((B, T, k))
    p /= p.sum(-1, keepdims=True) * rng.uniform(1.0, 1.5, (B, T, 1))  # top-k mass below 1
    p[1, 2] = 0  # a position the teachers did not reach
    return z, y, idx, p


def dense_target(y, idx, p, alpha, V):
    """q = alpha * p_topk + (1 - alpha * s) * onehot(y), written out as a (B, T, V) array."""
    q = np.zeros(y.shape + (V,))
    for b, t in np.ndindex(y.shape):
        q[b, t, idx[b, t]] += alpha * p[b, t]
        q[b, t, y[b, t]] += 1 - alpha * p[b, t].sum()
    return q


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_loss_is_cross_entropy_against_the_mixed_target(alpha):
    z, y, idx, p = soft_batch()
    loss, _ = distill_cross_entropy_forward(z, y, idx, p, alpha)
    q = dense_target(np.where(y >= 0, y, 0), idx, p, alpha, z.shape[-1])
    np.testing.assert_allclose(q.sum(-1), 1.0)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    expected = -(q * logp).sum(-1)[y >= 0].mean()
    assert loss == pytest.approx(expected, rel=1e-12)


def test_gradient_matches_finite_differences():
    z, y, idx, p = soft_batch(seed=3)
    loss, cache = distill_cross_entropy_forward(z, y, idx, p, 0.7)
    g = distill_cross_entropy_backward(1.0, cache)
    num = np.zeros_like(z)
    eps = 1e-6
    for i in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[i] += eps
        zm[i] -= eps
        num[i] = (distill_cross_entropy_forward(zp, y, idx, p, 0.7)[0]
                  - distill_cross_entropy_forward(zm, y, idx, p, 0.7)[0]) / (2 * eps)
    assert np.abs(num - g).max() <= 1e-7 * np.abs(g).max()
    assert not g[0, 1].any()  # an ignored target gives no gradient


def test_zero_teacher_mass_is_the_ordinary_loss():
    z, y, idx, p = soft_batch(seed=1)
    loss, c = distill_cross_entropy_forward(z, y, idx, np.zeros_like(p), 0.8)
    ref, rc = cross_entropy_forward(z, y)
    assert loss == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(distill_cross_entropy_backward(1.0, c), cross_entropy_backward(1.0, rc), atol=1e-15)


def test_model_gradient_matches_hf_gpt2_autograd():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from engine import to_hf_state_dict
    from engine.hf import hf_config_dict

    cfg = GPTConfig(n_layer=2, n_head=2, d_model=8, n_ctx=6, vocab_size=13, attention="dense")
    m = GPT(cfg, dtype="float64", seed=4)
    x = np.random.default_rng(2).integers(0, 13, (2, 6))
    _, y, idx, p = soft_batch(B=2, T=6, V=13, k=3, seed=5)
    loss, grads = m.loss_and_grads(x, y, soft=(idx, p, 0.6))

    hcfg = transformers.GPT2Config(**{k: v for k, v in hf_config_dict(cfg).items() if not k.startswith("engine_")})
    ref = transformers.GPT2LMHeadModel(hcfg).double().eval()
    ref.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in to_hf_state_dict(m.params).items()}, strict=False)
    ref.tie_weights()
    logits = ref(torch.from_numpy(x)).logits
    q = torch.from_numpy(dense_target(np.where(y >= 0, y, 0), idx, p, 0.6, 13))
    tl = -(q * torch.log_softmax(logits, -1)).sum(-1)[torch.from_numpy(y >= 0)].mean()
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-10)
    named = dict(ref.named_parameters())
    for k, g in to_hf_state_dict(grads).items():
        tg = named[k].grad.numpy()
        assert np.abs(g - tg).max() <= 1e-6 * max(np.abs(tg).max(), 1e-12), k


def test_teacher_targets_are_the_averaged_top_k():
    cfg = GPTConfig(n_layer=1, n_head=2, d_model=8, n_ctx=8, vocab_size=20, attention="dense")
    a, b = GPT(cfg, seed=1), GPT(cfg, seed=2)
    ids = np.random.default_rng(0).integers(0, 20, 30)
    idx, p = teacher_targets([a, b], ids, k=5, batch_size=2)
    assert idx.shape == p.shape == (30, 5) and p.dtype == np.float16
    for j in [0, 7, 8, 13, 22]:  # stream positions in windows 0, 0, 1, 1, 2 (non-overlapping)
        w, t = divmod(j, 8)
        window = ids[w * 8:w * 8 + 8]
        probs = np.mean([np.exp(m.forward(window)[t] - np.logaddexp.reduce(m.forward(window)[t])) for m in (a, b)],
                        axis=0)
        top = np.sort(np.argsort(probs)[-5:])
        order = np.argsort(idx[j])
        np.testing.assert_array_equal(np.sort(idx[j]), top)
        np.testing.assert_allclose(p[j][order].astype(float), probs[np.sort(idx[j])], rtol=2e-3, atol=1e-6)
    assert not p[24:].any()  # past the last whole window, and the final position: no target
    # with a stride, a later position is read from a window that gives it more context
    idx2, p2 = teacher_targets([a], ids, k=5, stride=4)
    w = ids[4:12]
    probs = np.exp(a.forward(w)[5] - np.logaddexp.reduce(a.forward(w)[5]))
    np.testing.assert_allclose(np.sort(p2[9].astype(float)), np.sort(probs)[-5:], rtol=2e-3, atol=1e-6)


def test_teacher_targets_refuse_mismatched_teachers():
    a = GPT(GPTConfig(n_layer=1, n_head=2, d_model=8, n_ctx=8, vocab_size=20), seed=1)
    b = GPT(GPTConfig(n_layer=1, n_head=2, d_model=8, n_ctx=8, vocab_size=21), seed=1)
    with pytest.raises(ValueError, match="share the student's tokenizer"):
        teacher_targets([a, b], np.arange(20), k=3)
    with pytest.raises(ValueError, match="at least one teacher"):
        teacher_targets([], np.arange(20))
    with pytest.raises(ValueError, match="k must be"):
        teacher_targets([a], np.arange(20), k=0)


@pytest.fixture(scope="module")
def book():
    train, val = load_corpus("book")
    enc = train_bpe(join_texts(train).replace("<|endoftext|>", "\n"), 512)
    return enc, encode_texts(enc, train), encode_texts(enc, val)


def _student(book, out, soft, workers=1, steps=6):
    enc, tr, va = book
    model = GPT(GPTConfig.preset("course-tiny"), seed=0)
    tc = TrainConfig(batch_size=4, max_steps=steps, lr=3e-3, warmup=2, eval_interval=3, eval_windows=4,
                     ckpt_interval=3, workers=workers, seed=5, dropout=0.1, distill_alpha=0.8)
    return Trainer(model, tr, va, tc, out_dir=out, enc=enc, soft=soft)


def test_training_with_teachers_resumes_bit_for_bit_on_any_number_of_workers(book, tmp_path):
    enc, tr, _ = book
    teacher = GPT(GPTConfig.preset("course-tiny"), seed=9)
    soft = teacher_targets([teacher], tr, k=8)
    assert gather_targets(soft, np.array([5]), 32)[0].shape == (1, 32, 8)
    straight = _student(book, tmp_path / "a", soft)
    straight.run(progress=False)
    two = _student(book, None, soft, workers=2)
    two.run(progress=False)
    assert two.history["loss"] == pytest.approx(straight.history["loss"], rel=1e-5)
    first = _student(book, tmp_path / "b", soft, workers=2)
    first.run(progress=False, stop_at=3)
    second = _student(book, tmp_path / "b", soft, workers=2)
    second.load(tmp_path / "b" / "ckpt")
    second.run(progress=False)
    assert second.history["loss"] == two.history["loss"]
    # the teachers change what is learned
    plain = Trainer(GPT(GPTConfig.preset("course-tiny"), seed=0), tr, None,
                    TrainConfig(batch_size=4, max_steps=6, lr=3e-3, warmup=2, seed=5, dropout=0.1))
    plain.run(progress=False)
    assert plain.history["loss"] != straight.history["loss"]


def test_trainer_refuses_half_a_distillation_setup(book):
    enc, tr, va = book
    with pytest.raises(ValueError, match="distill_alpha"):
        Trainer(GPT(GPTConfig.preset("course-tiny")), tr, va, TrainConfig(distill_alpha=0.5))
    with pytest.raises(ValueError, match="cover"):
        Trainer(GPT(GPTConfig.preset("course-tiny")), tr, va, TrainConfig(distill_alpha=0.5),
                soft=(np.zeros((10, 2), np.int16), np.zeros((10, 2), np.float16)))


def test_command_line_distillation_and_resume(tmp_path, capsys):
    common = ["--preset", "course-tiny", "--data", "book", "--batch-size", "2", "--eval-interval", "0",
              "--no-progress"]
    train_main(common + ["--out", str(tmp_path / "teacher"), "--steps", "2"])
    student = ["--out", str(tmp_path / "student"), "--distill", str(tmp_path / "teacher"), "--distill-k", "6"]
    train_main(common + student + ["--steps", "2"])
    out = capsys.readouterr().out
    assert "computing 1 teacher(s)' predictions" in out
    ck = load_checkpoint(tmp_path / "student" / "ckpt")
    assert ck["state"]["distill"] == {"teachers": [str(tmp_path / "teacher")], "k": 6, "alpha": 0.8}
    assert ck["state"]["train"]["distill_alpha"] == 0.8
    with np.load(tmp_path / "student" / "teachers.npz") as z:
        assert z["idx"].shape[1] == 6 and json.loads(str(z["meta"]))["k"] == 6
    train_main(common + ["--out", str(tmp_path / "student"), "--resume", "--steps", "3"])
    out = capsys.readouterr().out
    assert "resumed at step 2" in out and "computing" not in out  # the targets are read back, not recomputed
    assert load_checkpoint(tmp_path / "student" / "ckpt")["state"]["step"] == 3


def test_a_teacher_with_another_tokenizer_is_refused(tmp_path, book):
    common = ["--preset", "course-tiny", "--data", "book", "--batch-size", "2", "--eval-interval", "0",
              "--no-progress", "--steps", "1"]
    train_main(common + ["--out", str(tmp_path / "a")])
    train_main(common + ["--out", str(tmp_path / "b"), "--vocab-size", "300"])
    with pytest.raises(CheckpointError, match="different tokenizer"):
        load_teachers([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match="vocab_size"):  # the CLI: one `error:` line, exit 2
        train_main(common + ["--out", str(tmp_path / "c"), "--distill", str(tmp_path / "b")])


def test_ensemble_loss_is_the_averaged_probability():
    from engine.distill import evaluate_ensemble
    from engine.train import evaluate

    cfg = GPTConfig(n_layer=1, n_head=2, d_model=8, n_ctx=8, vocab_size=20, attention="dense")
    a, b = GPT(cfg, seed=1), GPT(cfg, seed=2)
    ids = np.random.default_rng(3).integers(0, 20, 41)
    one = evaluate_ensemble([a], ids)
    assert one["loss"] == pytest.approx(evaluate(a, ids)["loss"], rel=1e-6)
    two = evaluate_ensemble([a, b], ids)
    assert two["each"][1] == pytest.approx(evaluate(b, ids)["loss"], rel=1e-6)
    x, y = ids[:40].reshape(5, 8), ids[1:41].reshape(5, 8)
    pa, pb = (np.exp(m.forward(x) - np.logaddexp.reduce(m.forward(x), axis=-1, keepdims=True)) for m in (a, b))
    ref = -np.log(np.take_along_axis((pa + pb) / 2, y[..., None], axis=-1)).mean()
    assert two["loss"] == pytest.approx(ref, rel=1e-5)
    assert two["loss"] < np.mean(two["each"])  # averaging probabilities never does worse than the mean loss


def test_export_of_a_distilled_run_describes_its_teachers(tmp_path, monkeypatch, capsys):
    from engine import data, pretrained
    from engine.train import evaluate

    common = ["--preset", "course-tiny", "--data", "book", "--batch-size", "2", "--eval-interval", "0",
              "--no-progress"]
    for name, seed in (("t1", "1"), ("t2", "2")):
        train_main(common + ["--out", str(tmp_path / name), "--steps", "3", "--seed", seed])
    train_main(common + ["--out", str(tmp_path / "s"), "--steps", "2", "--distill", str(tmp_path / "t1"),
                         str(tmp_path / "t2"), "--distill-alpha", "0.5"])
    monkeypatch.setattr(data, "shakespeare_split", lambda: load_corpus("book"))
    m = pretrained.export(tmp_path / "s", out_dir=tmp_path / "assets", command="make course-model", log=lambda *a: None)
    d = m["distill"]
    assert d["alpha"] == 0.5 and [r["run"] for r in d["teachers"]] == ["t1", "t2"]
    teachers, enc = load_teachers([tmp_path / "t1", tmp_path / "t2"])
    val = encode_texts(enc, load_corpus("book")[1])
    for r, t in zip(d["teachers"], teachers):
        assert r["val_bits_per_byte"] == pytest.approx(evaluate(t, val, enc)["bpb"], rel=1e-6)
        assert r["steps"] == 3
    assert d["ensemble_bits_per_byte"] < np.mean([r["val_bits_per_byte"] for r in d["teachers"]])
    card = (tmp_path / "assets" / "MODEL_CARD.md").read_text()
    assert "Learning from teachers" in card and f"{d['ensemble_bits_per_byte']:.3f}" in card
    assert "against the teachers' mixed target" in card
