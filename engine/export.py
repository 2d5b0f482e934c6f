"""Turning a training run into the shipped assets: ``export(run_dir)`` and ``calibrate_shipped``.

``export`` writes the weights, the config, the tokenizer, metrics measured again on the held-out
plays, training and validation curves (PNG) and the model card (``engine.model_card``).
``export(..., average=K)`` ships the mean of the run's last K weight snapshots;
``export(..., calibrate=N)`` first fits a temperature on the first N held-out windows and folds it
into the weights (``engine.calibrate``); ``calibrate_shipped`` does the same to assets already exported.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from . import data
from .backend import to_numpy
from .calibrate import fit_temperature, fold_temperature, held_out_logits, window_losses_by_temperature
from .checkpoint import average_weights, list_snapshots, load_checkpoint
from .config import GPTConfig
from .data import HELD_OUT_PLAYS, encode_texts
from .evaluate import bits_per_byte, evaluate, evaluate_ensemble, loss_by_position, target_bytes
from .files import sha256_file
from .loading import asset_dir, load_pretrained, model_card_metrics, model_from_checkpoint
from .model import GPT
from .model_card import write_model_card
from .params import tree_flatten
from .tokenizer import save_encoding
from .train import load_teachers
from .train.teachers import teacher_path

CHECK_WINDOWS = 32  # held-out windows whose bits/byte the tests recompute


def plot_curves(history: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens_per_step = history["tokens"][0] / history["step"][0]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = history["step"]
    loss = history["loss"]
    k = 25  # running mean over 25 steps: single batches are noisy
    smooth = [sum(loss[max(0, i - k + 1):i + 1]) / len(loss[max(0, i - k + 1):i + 1]) for i in range(len(loss))]
    tok = [s * tokens_per_step / 1e6 for s in steps]
    ax[0].plot(tok, loss, alpha=0.25, color="C0", lw=0.8)
    ax[0].plot(tok, smooth, color="C0", label="training (25-step mean)")
    vt = [s * tokens_per_step / 1e6 for s in history["val_step"]]
    ax[0].plot(vt, history["val_loss"], "o-", color="C1", ms=3, label="held-out plays")
    ax[0].set_xlabel("tokens seen (millions)")
    ax[0].set_ylabel("loss (nats/token)")
    ax[0].legend()
    ax[0].grid(alpha=0.3)
    ax[1].plot(vt, history["val_bpb"], "o-", color="C1", ms=3)
    ax[1].axhline(2.0, ls="--", color="gray", lw=1)
    ax[1].set_xlabel("tokens seen (millions)")
    ax[1].set_ylabel("held-out bits per byte")
    ax[1].grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def export(run_dir, out_dir=None, which: str = "ckpt", command: str = "", machine: str = "", log=print,
           average: int = 0, calibrate: int = 0) -> dict:
    """Write a run's checkpoint (``ckpt``, the latest, or ``best`` by periodic validation loss) as shipped assets.

    Re-measures the validation loss on every held-out window, and on the first
    ``CHECK_WINDOWS`` windows (the slice the tests recompute). ``average=K`` (K >= 2) ships instead
    the mean of the weights of the run's last K snapshots (``train --snapshot-every``), the last one
    being the end of training; the end of training alone is scored too, for comparison.
    ``calibrate=N`` (N >= 1) then divides the logits by the temperature that fits the first N held-out
    windows best, folded into the weights (``_calibrated``); the scores before it are kept in the metrics.
    """
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else asset_dir("shakespeare")
    if calibrate < 0:
        raise ValueError(f"calibrate must be 0 (no calibration) or a number of held-out windows >= 1, not {calibrate}")
    ck = load_checkpoint(run_dir / which)
    last = load_checkpoint(run_dir / "ckpt")["state"]  # the full history lives in the latest checkpoint
    st = ck["state"]
    cfg = GPTConfig.from_dict(st["config"])
    enc = ck["enc"]
    snaps = _snapshots_to_average(run_dir, ck, average, which)  # refuse a bad request before any work
    out.mkdir(parents=True, exist_ok=True)
    train_texts, val_texts = data.shakespeare_split()  # looked up here: the tests swap in a small corpus
    val_ids = encode_texts(enc, val_texts)
    weights, averaged = ck["weights"], None
    if snaps:
        alone = evaluate(model_from_checkpoint(ck), val_ids, enc, progress=True)
        weights = average_weights([p for _, p in snaps])
        averaged = {"steps": [s for s, _ in snaps], "last_loss_nats_per_token": alone["loss"],
                    "last_bits_per_byte": alone["bpb"]}
        log(f"end of training alone: {alone['loss']:.4f} nats/token, {alone['bpb']:.4f} bits/byte; "
            f"shipping the average of steps {averaged['steps']}")
    model = model_from_checkpoint(ck, weights=weights)
    calibration = None
    if calibrate:
        model, calibration = _calibrated(model, val_ids, enc, calibrate, log)
    scores = _held_out_scores(model, val_ids, enc)
    train_ids = encode_texts(enc, train_texts)
    train_ids_n = len(train_ids)
    baselines = ngram_baselines(train_ids, val_ids, enc)
    log(f"held-out: {scores['val_loss_nats_per_token']:.4f} nats/token, {scores['val_bits_per_byte']:.4f} bits/byte "
        f"over {scores['val_tokens']:,} tokens")
    distill = _teachers_report(st["distill"], val_ids, enc) if st.get("distill") else None

    h = last["history"]
    metrics = {
        "name": "shakespeare",
        "config": cfg.to_dict(),
        "n_params": cfg.n_params(),
        "step": st["step"],
        "which": (f"the end of training, averaged with the {len(snaps) - 1} snapshots before it" if snaps else
                  "the end of training" if which == "ckpt" else "the checkpoint with the lowest periodic "
                  "validation loss"),
        "averaged": averaged,
        "calibration": calibration,
        "steps_run": last["step"],
        "tokens_seen": st["step"] * st["train"]["batch_size"] * st["train"]["grad_accum"] * cfg.n_ctx,
        "train_tokens": train_ids_n,
        "train_works": sorted(train_texts),
        "held_out_plays": list(HELD_OUT_PLAYS),
        **scores,
        "baselines": baselines,
        "distill": distill,
        "final_train_loss_25_step_mean": sum(h["loss"][-25:]) / len(h["loss"][-25:]),
        "wall_time_s": last.get("elapsed_s"),
        "tokens_per_s": (last["step"] * st["train"]["batch_size"] * st["train"]["grad_accum"] * cfg.n_ctx
                         / last["elapsed_s"]) if last.get("elapsed_s") else None,
        "train": st["train"],
        "machine": machine or f"{platform.machine()}, {platform.system()}",
        "command": command,
        "history": {k: h[k] for k in ("step", "loss", "lr", "val_step", "val_loss", "val_bpb", "tokens")},
    }
    _write_assets(out, model, enc, metrics)
    return metrics


def calibrate_shipped(fit_windows: int = 48, name: str = "shakespeare", out_dir=None, note: str = "",
                      log=print) -> dict:
    """Calibrate assets that ``export`` wrote without ``calibrate=``: as if they had been exported with it.

    Fits the temperature on the first ``fit_windows`` held-out windows, folds it into the weights, scores
    the calibrated model again (every number of the card that depends on the weights) and rewrites the
    assets in ``out_dir`` (default: in place). ``note`` is added to the card's command.
    Assets that are already calibrated are refused: the scores "before" would be wrong.
    """
    if fit_windows < 1:
        raise ValueError(f"fit_windows must be at least 1, not {fit_windows}")
    metrics = model_card_metrics(name)
    if metrics.get("calibration"):
        raise ValueError(f"the {name} assets are already calibrated (T = {metrics['calibration']['temperature']:.4f})")
    model, enc = load_pretrained(name)
    _, val_texts = data.shakespeare_split()
    val_ids = encode_texts(enc, val_texts)
    model, calibration = _calibrated(model, val_ids, enc, fit_windows, log)
    metrics["calibration"] = calibration
    metrics.update(_held_out_scores(model, val_ids, enc))
    if note:
        metrics["command"] = metrics["command"] + note
    _write_assets(Path(out_dir) if out_dir is not None else asset_dir(name), model, enc, metrics)
    return metrics


def _calibrated(model: GPT, val_ids, enc, fit_windows: int, log=print) -> tuple[GPT, dict]:
    """The model with the temperature that fits the first ``fit_windows`` held-out windows folded in.

    Also returns what the card reports: T, and the scores before and after, on the whole held-out set
    and on the windows after the fitted ones (text that played no part in choosing T).
    """
    z, y = held_out_logits(model, val_ids, enc, fit_windows)
    T = fit_temperature(z, y)
    del z
    # one pass over the held-out windows scores the model at a range of temperatures (the curve the fit
    # minimises, T = 1 among them) and at the fitted T
    grid = [round(t, 3) for t in np.arange(0.8, 1.601, 0.05)]
    nll, y = window_losses_by_temperature(model, val_ids, grid + [T], enc)
    tokens, nbytes = (y >= 0).sum(axis=-1), target_bytes(enc, y).sum(axis=-1)
    fit, rest = slice(0, fit_windows), slice(fit_windows, None)

    def bpb(row, part):
        return float(bits_per_byte(row[part].sum(), nbytes[part].sum())) if nbytes[part].sum() else None

    def scores(row):
        return {"loss_nats_per_token": float(row.sum() / tokens.sum()), "bits_per_byte": bpb(row, slice(None)),
                "fit_bits_per_byte": bpb(row, fit), "rest_bits_per_byte": bpb(row, rest)}

    before, after = scores(nll[grid.index(1.0)]), scores(nll[-1])
    curve = {"temperature": grid, "fit_bits_per_byte": [bpb(r, fit) for r in nll[:-1]],
             "rest_bits_per_byte": [bpb(r, rest) for r in nll[:-1]] if nbytes[rest].sum() else None}
    log(f"temperature {T:.4f} (fitted on the first {fit_windows} held-out windows): {before['bits_per_byte']:.4f} -> "
        f"{after['bits_per_byte']:.4f} bits/byte on the whole held-out set")
    return GPT(model.cfg, params=fold_temperature(model.params, T)), {
        "temperature": T, "fit_windows": fit_windows, "fit_tokens": int(tokens[fit].sum()),
        "rest_tokens": int(tokens[rest].sum()), "before": before, "after": after, "curve": curve}


def _held_out_scores(model: GPT, val_ids, enc) -> dict:
    """Every number of the card that depends on the weights, measured on the held-out plays."""
    full = evaluate(model, val_ids, enc, progress=True)
    check = evaluate(model, val_ids, enc, max_windows=CHECK_WINDOWS)
    stride = model.cfg.n_ctx // 2
    overlapping = evaluate(model, val_ids, enc, stride=stride, progress=True)
    by_pos = loss_by_position(model, val_ids, enc)
    return {
        "val_loss_nats_per_token": full["loss"],
        "val_bits_per_byte": full["bpb"],
        "val_tokens": full["tokens"],
        "val_bytes": full["bytes"],
        "check_windows": CHECK_WINDOWS,
        "check_loss_nats_per_token": check["loss"],
        "check_bits_per_byte": check["bpb"],
        "stride": stride,
        "stride_loss_nats_per_token": overlapping["loss"],
        "stride_bits_per_byte": overlapping["bpb"],
        "stride_tokens": overlapping["tokens"],
        "stride_bytes": overlapping["bytes"],
        "loss_by_position": [round(float(v), 6) for v in by_pos["loss"]],
        "tokens_by_position": [int(v) for v in by_pos["tokens"]],
    }


def _write_assets(out: Path, model: GPT, enc, metrics: dict) -> None:
    """Weights (float32), config, tokenizer, metrics, curves, model card and manifest into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    weights = tree_flatten(model.params)
    # C order: save_file writes an array's memory as it lies, so a transposed view would ship transposed
    save_file({k: np.ascontiguousarray(to_numpy(v), dtype=np.float32) for k, v in weights.items()},
              str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(model.cfg.to_dict(), indent=1) + "\n")
    save_encoding(enc, out / "tokenizer.tiktoken")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    plot_curves(metrics["history"], out / "curves.png", f"course-shakespeare: {model.cfg.n_params() / 1e6:.1f}M parameters")
    write_model_card(metrics, out / "MODEL_CARD.md")
    files = ("model.safetensors", "config.json", "tokenizer.tiktoken", "tokenizer.tiktoken.json")
    manifest = {f: sha256_file(out / f) for f in files if (out / f).exists()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def _snapshots_to_average(run_dir: Path, ck: dict, average: int, which: str) -> list:
    """The last ``average`` weight snapshots of a run, ending at its checkpoint's step ([] for none)."""
    if average < 0 or average == 1:
        raise ValueError(f"average must be 0 (ship the checkpoint) or a number of snapshots >= 2, not {average}")
    if not average:
        return []
    if which != "ckpt":
        raise ValueError("average= averages the snapshots up to the end of training; use it with which='ckpt'")
    step = ck["state"]["step"]
    snaps = [(s, p) for s, p in list_snapshots(run_dir) if s <= step]
    if len(snaps) < average or snaps[-1][0] != step:
        have = ", ".join(str(s) for s, _ in snaps) or "none"
        raise ValueError(f"average={average} needs {average} snapshots in {run_dir / 'snapshots'} ending at the "
                         f"checkpoint's step {step:,} (train with --snapshot-every); there are: {have}")
    final = load_file(str(snaps[-1][1]))
    if final.keys() != ck["weights"].keys() or any(not np.array_equal(final[k], v) for k, v in ck["weights"].items()):
        raise ValueError(f"the snapshot of step {step:,} is not the checkpoint's weights: {run_dir / 'snapshots'} "
                         "holds another run's snapshots")
    return snaps[-average:]


def _teachers_report(d: dict, val_ids, enc) -> dict:
    """The teachers of a distilled run, each scored on the held-out plays, and their average."""
    teachers, _ = load_teachers(d["teachers"])
    ens = evaluate_ensemble(teachers, val_ids, enc)
    rows = []
    for path, model, bpb in zip(d["teachers"], teachers, ens["each_bpb"]):
        st = load_checkpoint(teacher_path(path), verify_hashes=False)["state"]
        rows.append({"run": Path(path).name, "config": model.cfg.to_dict(), "n_params": model.cfg.n_params(),
                     "steps": st["step"], "train": st["train"], "wall_time_s": st.get("elapsed_s"),
                     "val_bits_per_byte": bpb})
    return {"alpha": d["alpha"], "k": d["k"], "teachers": rows, "ensemble_bits_per_byte": ens["bpb"]}


def ngram_baselines(train_ids, val_ids, enc, alpha: float = 0.01) -> dict:
    """Bits per byte of an add-one unigram and a bigram smoothed towards it (the model should beat both)."""
    V = enc.n_vocab
    a, b = np.asarray(train_ids, np.int64), np.asarray(val_ids, np.int64)
    uni = np.bincount(a, minlength=V) + 1.0
    p = uni / uni.sum()
    big = np.zeros((V, V))
    np.add.at(big, (a[:-1], a[1:]), 1.0)
    x, y = b[:-1], b[1:]
    keep = y != enc.eot_token
    x, y = x[keep], y[keep]
    nbytes = float(target_bytes(enc, y).sum())
    cond = (big[x, y] + alpha * V * p[y]) / (big.sum(1)[x] + alpha * V)
    return {"unigram_bpb": float(bits_per_byte(-np.log(p[y]).sum(), nbytes)),
            "bigram_bpb": float(bits_per_byte(-np.log(cond).sum(), nbytes))}
