"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a directory:

* ``model.safetensors``  the weights (engine names, e.g. ``h.0.attn.c_attn.w``);
* ``optim.safetensors``  AdamW's two moment buffers;
* ``state.json``         step, optimizer step count, the batch sampler's RNG state, the
                         model config, the training settings and the metrics so far;
* ``tokenizer.tiktoken`` the tokenizer (tiktoken format), when there is one, and its header
                         ``tokenizer.tiktoken.json`` (split pattern, special tokens);
* ``manifest.json``      the SHA-256 of each file above.

Writes are atomic: the directory is written under a temporary name, flushed to
disk, then renamed into place (the previous checkpoint is kept as ``<name>.old``
until the rename is done), so a crash or a kill during a save never leaves
only a half-written checkpoint. Loading checks every file against the manifest
and refuses a corrupted checkpoint with a clear error.

Weight snapshots (``save_snapshot``) are lighter: the weights alone, one file per
step under ``run/snapshots``, kept so that the last few can be averaged
(``average_weights``) into the model that is shipped.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from .files import (JSON_LIMIT, atomic_write, fsync, os_error, plain_name, private_tmpdir, read_json, regular_file,
                    remove, remove_leftovers, sha256_file)  # noqa: F401  (sha256_file: re-exported)
from .tokenizer import load_encoding, save_encoding

FILES = ("model.safetensors", "optim.safetensors", "state.json", "tokenizer.tiktoken", "tokenizer.tiktoken.json")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupted."""


def save_checkpoint(path, weights: dict, state: dict, optim: dict | None = None, enc=None) -> Path:
    """Atomically write a checkpoint directory at ``path``.

    weights: {name: NumPy array}; optim: {name: NumPy array} (optional); state: JSON-able dict;
    enc: a tiktoken.Encoding to store alongside (optional).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = private_tmpdir(path)
    kept = "; the last complete checkpoint is kept" if path.exists() else ""
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(tmp / "model.safetensors"))
        if optim is not None:
            save_file({k: np.ascontiguousarray(v) for k, v in optim.items()}, str(tmp / "optim.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        if enc is not None:
            save_encoding(enc, tmp / "tokenizer.tiktoken")
        manifest = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        for f in tmp.iterdir():
            fsync(f)
        old = path.with_name(path.name + ".old")
        if path.exists():
            remove(old)  # a symlink planted there is unlinked, never followed
            os.replace(path, old)  # keep the last good one until the new one is in place
        os.replace(tmp, path)
        remove(old)
    except BaseException as e:
        remove(tmp)
        err = os_error(e) if isinstance(e, Exception) else None
        if err is None or err.errno is None:
            raise
        # disk full, read-only, ...: one line that says what is kept (safetensors reports these as text)
        raise OSError(err.errno, f"checkpoint {path} was not saved: {err.strerror}{kept}") from e
    return path


def resolve(path) -> Path:
    """The checkpoint directory to read: ``path``, or ``path.old`` if a save was cut short."""
    path = Path(path)
    if (path / "manifest.json").exists():
        return path
    old = path.with_name(path.name + ".old")
    if (old / "manifest.json").exists():
        return old
    if path.exists():
        raise CheckpointError(f"{path} is not a complete checkpoint (no manifest.json); it may have been "
                              "cut off while saving. Start again without --resume, or point at another checkpoint.")
    raise CheckpointError(f"no checkpoint at {path}")


def verify(path) -> Path:
    """Check every file against the manifest; returns the directory. Raises CheckpointError."""
    path = resolve(path)
    try:
        manifest = read_json(path / "manifest.json")
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path} is corrupted: manifest.json is not valid JSON ({e})") from None
    if "model.safetensors" not in manifest or "state.json" not in manifest:
        raise CheckpointError(f"checkpoint {path} is incomplete: its manifest lists no model or state")
    for name, digest in manifest.items():
        # a name with a path in it ("/dev/zero", "../x") would read outside the checkpoint
        if not plain_name(name) or not isinstance(digest, str):
            raise CheckpointError(f"checkpoint {path} is corrupted: its manifest lists {name!r}, not a file name "
                                  "with its SHA-256")
        f = path / name
        if not f.exists():
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
        try:
            got = sha256_file(f)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from None
        if got != digest:
            raise CheckpointError(f"checkpoint {path} is corrupted: {name} has SHA-256 {got[:16]}..., the manifest "
                                  f"says {digest[:16]}.... Do not resume from it; use an older checkpoint or "
                                  "start again.")
    return path


def load_checkpoint(path, verify_hashes: bool = True) -> dict:
    """Read a checkpoint: {'weights', 'optim' (or None), 'state', 'enc' (or None), 'path'}."""
    path = verify(path) if verify_hashes else resolve(path)
    try:
        weights = load_file(str(regular_file(path / "model.safetensors")))
        optim = None
        if (path / "optim.safetensors").exists():
            optim = load_file(str(regular_file(path / "optim.safetensors")))
        state = read_json(path / "state.json", JSON_LIMIT)
        enc = load_encoding(path / "tokenizer.tiktoken") if (path / "tokenizer.tiktoken").exists() else None
    except Exception as e:  # noqa: BLE001 - re-raise with the file named
        raise CheckpointError(f"checkpoint {path} could not be read: {e}") from None
    return {"weights": weights, "optim": optim, "state": state, "enc": enc, "path": path}


# ---------------------------------------------------------------------- weight snapshots
SNAPSHOTS = "snapshots"


def save_snapshot(run_dir, step: int, weights: dict) -> Path:
    """Atomically write the weights alone as ``run_dir/snapshots/step{step}.safetensors``.

    Snapshots are for averaging the weights of the last steps of a run (``average_weights``); they
    hold no optimizer state and cannot be resumed from. The step is stored in the file's metadata.
    """
    d = Path(run_dir) / SNAPSHOTS
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"step{step:07d}.safetensors"
    tensors = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    # save_file looked up at call time: the tests replace it with one that dies half-way
    return atomic_write(path, lambda f: save_file(tensors, f, metadata={"step": str(step)}))


def list_snapshots(run_dir) -> list[tuple[int, Path]]:
    """The run's weight snapshots as (step, path), oldest first."""
    d = Path(run_dir) / SNAPSHOTS
    found = []
    for p in d.glob("step*.safetensors") if d.is_dir() else ():
        try:
            found.append((int(p.name[4:-len(".safetensors")]), p))
        except ValueError:
            continue
    return sorted(found)


def average_weights(paths) -> dict:
    """The element-wise mean of the weights in several safetensors files (same names and shapes).

    Summed in float64 (one file in memory at a time), returned in the files' own dtype.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("average_weights needs at least one file")
    total, dtypes = None, None
    for p in paths:
        try:
            w = load_file(str(regular_file(p)))
        except Exception as e:  # noqa: BLE001 - name the file
            raise CheckpointError(f"snapshot {p} could not be read: {e}") from e
        if total is None:
            total = {k: v.astype(np.float64) for k, v in w.items()}
            dtypes = {k: v.dtype for k, v in w.items()}
            continue
        if w.keys() != total.keys() or any(w[k].shape != total[k].shape for k in w):
            raise CheckpointError(f"snapshot {p} has other tensors than {paths[0]}: they are not of one model")
        for k, v in w.items():
            total[k] += v
    return {k: (v / len(paths)).astype(dtypes[k]) for k, v in total.items()}
