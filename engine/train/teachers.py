"""Teachers for distillation: models loaded from their checkpoints, and their predictions for every
training position, computed once and kept in the run's folder (``engine.distill``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..checkpoint import CheckpointError, load_checkpoint
from ..distill import teacher_targets
from ..files import atomic_write
from ..loading import model_from_checkpoint


def teacher_path(path) -> Path:
    """A run folder -> its ``ckpt``; a checkpoint folder -> itself."""
    path = Path(path)
    return path / "ckpt" if (path / "ckpt").is_dir() else path


def load_teachers(paths, backend=None) -> tuple[list, object]:
    """Teacher models from checkpoints: ([GPT, ...], the first one's tokenizer)."""
    teachers, enc = [], None
    for path in paths:
        ck = load_checkpoint(teacher_path(path))
        if ck["enc"] is None:
            raise CheckpointError(f"teacher {ck['path']} has no tokenizer")
        if enc is None:
            enc = ck["enc"]
        elif ck["enc"].n_vocab != enc.n_vocab or ck["enc"]._mergeable_ranks != enc._mergeable_ranks:
            raise CheckpointError(f"teacher {ck['path']} has a different tokenizer from {paths[0]}")
        teachers.append(model_from_checkpoint(ck, backend=backend))
    return teachers, enc


def prepare_teacher_targets(paths, train_ids, out: Path, k: int, backend=None, log=print):
    """The teachers' top-k targets for every training position, computed once and kept in OUT/teachers.npz."""
    cache = out / "teachers.npz"
    meta = {"teachers": [str(p) for p in paths], "k": k, "tokens": len(train_ids)}
    if cache.exists():
        with np.load(cache) as z:
            if json.loads(str(z["meta"])) == meta:
                return z["idx"], z["p"]
        log(f"{cache} was made for other teachers or data; recomputing it")
    teachers, _ = load_teachers(paths, backend)
    log(f"computing {len(teachers)} teacher(s)' predictions for {len(train_ids):,} training positions (once)")
    idx, p = teacher_targets(teachers, train_ids, k=k, progress=True)
    # atomic: a kill leaves either no cache or a whole one
    atomic_write(cache, lambda f: np.savez(f, idx=idx, p=p, meta=json.dumps(meta)), suffix=".npz")
    return idx, p
