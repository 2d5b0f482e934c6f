"""The course's pretrained model, shipped inside the package: no download needed.

``load_pretrained("shakespeare")`` returns a small GPT trained by this engine on
Shakespeare's plays (see ``engine/assets/shakespeare/MODEL_CARD.md``) and its
byte-level BPE tokenizer, as a ``tiktoken.Encoding``.

``export(run_dir)`` turns a training run into those assets: the weights, the
config, the tokenizer, metrics measured again on the held-out plays, training
and validation curves (PNG), and the model card.
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
from importlib import resources
from pathlib import Path

from .config import GPTConfig
from .model import GPT, tree_unflatten

NAMES = ("shakespeare",)
CHECK_WINDOWS = 32  # held-out windows whose bits/byte the tests recompute


def asset_dir(name: str = "shakespeare") -> Path:
    if name not in NAMES:
        raise ValueError(f"unknown pretrained model {name!r}; available: {', '.join(NAMES)}")
    return Path(str(resources.files("engine") / "assets" / name))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


def export(run_dir, out_dir=None, which: str = "best", command: str = "", machine: str = "", log=print) -> dict:
    """Write a run's checkpoint (``best`` by validation loss, or ``ckpt``) as shipped assets.

    Re-measures the validation loss on every held-out window, and on the first
    ``CHECK_WINDOWS`` windows (the slice the tests recompute).
    """
    from safetensors.numpy import save_file

    from .bpe import save_encoding
    from .checkpoint import load_checkpoint
    from .data import HELD_OUT_PLAYS, encode_texts, shakespeare_split
    from .train import evaluate

    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else asset_dir("shakespeare")
    out.mkdir(parents=True, exist_ok=True)
    ck = load_checkpoint(run_dir / which)
    last = load_checkpoint(run_dir / "ckpt")["state"]  # the full history lives in the latest checkpoint
    st = ck["state"]
    cfg = GPTConfig.from_dict(st["config"])
    enc = ck["enc"]
    model = GPT(cfg, params=tree_unflatten(ck["weights"], cfg.n_layer))
    train_texts, val_texts = shakespeare_split()
    val_ids = encode_texts(enc, val_texts)
    full = evaluate(model, val_ids, enc, progress=True)
    check = evaluate(model, val_ids, enc, max_windows=CHECK_WINDOWS)
    train_ids_n = int(sum(len(enc.encode_ordinary(t)) + 1 for t in train_texts.values()))
    log(f"held-out: {full['loss']:.4f} nats/token, {full['bpb']:.4f} bits/byte over {full['tokens']:,} tokens")

    save_file({k: v.astype("float32") for k, v in ck["weights"].items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    save_encoding(enc, out / "tokenizer.tiktoken")
    h = last["history"]
    metrics = {
        "name": "shakespeare",
        "config": cfg.to_dict(),
        "n_params": cfg.n_params(),
        "step": st["step"],
        "steps_run": last["step"],
        "tokens_seen": st["step"] * st["train"]["batch_size"] * st["train"]["grad_accum"] * cfg.n_ctx,
        "train_tokens": train_ids_n,
        "train_works": sorted(train_texts),
        "held_out_plays": list(HELD_OUT_PLAYS),
        "val_loss_nats_per_token": full["loss"],
        "val_bits_per_byte": full["bpb"],
        "val_tokens": full["tokens"],
        "val_bytes": full["bytes"],
        "check_windows": CHECK_WINDOWS,
        "check_loss_nats_per_token": check["loss"],
        "check_bits_per_byte": check["bpb"],
        "final_train_loss_25_step_mean": sum(h["loss"][-25:]) / len(h["loss"][-25:]),
        "wall_time_s": last.get("elapsed_s"),
        "tokens_per_s": (last["step"] * st["train"]["batch_size"] * st["train"]["grad_accum"] * cfg.n_ctx
                         / last["elapsed_s"]) if last.get("elapsed_s") else None,
        "train": st["train"],
        "machine": machine or f"{platform.machine()}, {platform.system()}",
        "command": command,
        "history": {k: h[k] for k in ("step", "loss", "lr", "val_step", "val_loss", "val_bpb", "tokens")},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    plot_curves(h, out / "curves.png", f"course-shakespeare: {cfg.n_params() / 1e6:.1f}M parameters")
    manifest = {f: _sha256(out / f) for f in ("model.safetensors", "config.json", "tokenizer.tiktoken")}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return metrics


def nats_to_bpb(nats_per_token: float, bytes_per_token: float) -> float:
    return nats_per_token / math.log(2) / bytes_per_token
