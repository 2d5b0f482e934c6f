"""One way to build a model from files: ``load_model(source)``.

``source`` is the name of a model shipped with the package ("shakespeare", in
``engine/assets``), a Hugging Face GPT-2 folder (config.json + model.safetensors), a
training checkpoint (``engine.checkpoint``) or a training run whose ``ckpt`` holds one.
The command line, fine-tuning, distillation's teachers and the export all come here.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from safetensors.numpy import load_file

from .checkpoint import load_checkpoint
from .config import GPTConfig
from .files import plain_name, read_json, regular_file, sha256_file
from .hf import load_hf_gpt2
from .model import GPT
from .params import check_flat, tree_unflatten
from .tokenizer import get_encoding, load_encoding

NAMES = ("shakespeare",)


class ModelFolderError(ValueError):
    """``source`` names no model this engine can read."""


# ---------------------------------------------------------------------- the shipped model
def asset_dir(name: str = "shakespeare") -> Path:
    """The folder of a shipped model inside the installed package."""
    if name not in NAMES:
        raise ValueError(f"unknown pretrained model {name!r}; available: {', '.join(NAMES)}")
    return Path(str(resources.files("engine") / "assets" / name))


def load_pretrained(name: str = "shakespeare", dtype: str = "float32", backend=None):
    """(GPT, tiktoken.Encoding) of a shipped model. The files are checked against their SHA-256."""
    d = asset_dir(name)
    if not (d / "model.safetensors").exists():
        raise FileNotFoundError(f"the pretrained model files are missing from {d}; reinstall the engine package")
    manifest = read_json(d / "manifest.json")
    for fname, digest in manifest.items():
        if not plain_name(fname) or sha256_file(d / fname) != digest:
            raise ValueError(f"{d / str(fname)} does not match its SHA-256 in manifest.json: the file is damaged "
                             "(or a Git LFS pointer); reinstall the engine package")
    cfg = GPTConfig.from_dict(read_json(d / "config.json"))
    weights = load_file(str(regular_file(d / "model.safetensors")))
    check_flat(weights, cfg)
    params = tree_unflatten({k: v.astype("float32") for k, v in weights.items()}, cfg.n_layer)
    model = GPT(cfg, dtype=dtype, backend=backend, params=params)
    return model, load_encoding(d / "tokenizer.tiktoken")


def model_card_metrics(name: str = "shakespeare") -> dict:
    """The numbers in the model card (metrics.json)."""
    return read_json(asset_dir(name) / "metrics.json")


# ---------------------------------------------------------------------- checkpoints and folders
def model_from_checkpoint(ck: dict, dtype: str = "float32", backend=None, weights: dict | None = None) -> GPT:
    """The GPT of a ``load_checkpoint`` result (``weights``: other flat weights of the same shape)."""
    if not isinstance(ck["state"].get("config"), dict):
        raise ModelFolderError(f"{ck['path'] / 'state.json'} holds no model config")
    cfg = GPTConfig.from_dict(ck["state"]["config"])
    flat = ck["weights"] if weights is None else weights
    check_flat(flat, cfg)  # names (an extra h.7.* included), shapes and dtypes, before tree_unflatten
    return GPT(cfg, dtype=dtype, backend=backend, params=tree_unflatten(flat, cfg.n_layer))


def checkpoint_dir(p: Path) -> Path | None:
    """The training checkpoint inside ``p``: ``p`` itself, or the ``ckpt`` a training run writes."""
    for cand in (p, p / "ckpt"):
        if (cand / "manifest.json").exists() or ((cand / "state.json").exists() and
                                                  (cand / "model.safetensors").exists()):
            return cand
    return None


def load_model(source, backend=None, dtype: str = "float32", need_tokenizer: bool = False):
    """(GPT, tokenizer) from a shipped model's name or a model folder (see the module's docstring).

    A folder without its own tokenizer gets GPT-2's, unless ``need_tokenizer`` (a course model
    speaks its own tokens: then that is an error). Raises ``ModelFolderError`` (a ValueError)
    saying what was expected.
    """
    if isinstance(source, str) and source in NAMES and not Path(source).exists():
        model, enc = load_pretrained(source, dtype=dtype, backend=backend)
        return model, enc
    p = Path(source)
    if not p.exists():
        raise ModelFolderError(f"model folder {p} does not exist")
    if not p.is_dir():
        raise ModelFolderError(f"{p} is a file; --model takes a folder (config.json + model.safetensors, "
                               "or a checkpoint)")
    if (p / "config.json").exists() and (p / "model.safetensors").exists():
        model = load_hf_gpt2(p, dtype=dtype, backend=backend)
        tok = p / "tokenizer.tiktoken"
        return model, (get_encoding(str(tok)) if tok.exists() else _default_encoding(p, need_tokenizer))
    ck_dir = checkpoint_dir(p)
    if ck_dir is None:
        raise ModelFolderError(f"{p} is not a model folder: expected config.json + model.safetensors (Hugging "
                               "Face GPT-2) or a training checkpoint (manifest.json, state.json, model.safetensors)")
    ck = load_checkpoint(ck_dir)
    model = model_from_checkpoint(ck, dtype=dtype, backend=backend)
    return model, ck.get("enc") or _default_encoding(ck["path"], need_tokenizer)


def _default_encoding(where: Path, need_tokenizer: bool):
    if need_tokenizer:
        raise ModelFolderError(f"checkpoint {where} has no tokenizer.tiktoken")
    return get_encoding("r50k_base")
