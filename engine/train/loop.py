"""The training loop: ``Trainer`` (one step, evaluation, checkpoints, resume).

One step: draw a batch of windows, run the model forward and backward
(``GPT.loss_and_grads``), clip the gradient's global norm, and let AdamW move
every parameter (Brown et al. 2020, Appendix B). Gradient accumulation adds the
gradients of several micro-batches before a step, so a large batch fits in a
small memory. Every so often the loss on held-out text is measured and a
checkpoint is written (see ``engine.checkpoint``); ``resume`` continues a run
bit for bit. With ``snapshot_every`` the weights alone are also kept every so
many steps, so that the export can ship the average of the last few.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..backend import to_numpy
from ..checkpoint import CheckpointError, list_snapshots, load_checkpoint, save_checkpoint, save_snapshot
from ..config import GPTConfig
from ..data import Batches
from ..distill import gather_targets
from ..evaluate import evaluate
from ..files import atomic_write
from ..model import GPT
from ..optim import AdamW, lr_at
from ..params import check_flat, tree_flatten, tree_unflatten
from .settings import TrainConfig  # noqa: F401  (re-exported: where it has always been found)


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN or infinite."""


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
    """Turns Ctrl-C (SIGINT) and SIGTERM into a flag checked between steps, so a step is never cut in half.

    ``signal``: the signal that asked to stop (None: none did).
    """

    def __init__(self):
        self.stop = False
        self.signal = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                if self.stop:  # a second one: give up immediately
                    raise KeyboardInterrupt
                self.stop, self.signal = True, signal.Signals(signum)

            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.getsignal(sig)
                signal.signal(sig, handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        return False


RESUME_KEYS = {"step": int, "optim_t": int, "rng": dict, "config": dict, "train": dict, "history": dict}


def check_resumable(ck: dict) -> dict:
    """The state of a ``load_checkpoint`` result, if it holds all a resume needs; else CheckpointError."""
    st = ck["state"]
    for key, kind in RESUME_KEYS.items():
        if not isinstance(st.get(key), kind) or isinstance(st.get(key), bool):
            what = "lacks" if key not in st else "has a malformed"
            raise CheckpointError(f"checkpoint {ck['path']}: state.json {what} {key!r} entry; it cannot be resumed")
    return st


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
        self.model, self.tc, self.enc = model, tc.check(), enc
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
        self.stopped_by = None  # the signal (SIGINT, SIGTERM) that stopped the last run(), if one did
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
        text = json.dumps(self.state(), indent=1)
        atomic_write(self.out_dir / "metrics.json", lambda f: Path(f).write_text(text))
        return path

    def load(self, path) -> None:
        """Restore weights, optimizer, sampler RNG and metrics from a checkpoint (for --resume)."""
        ck = load_checkpoint(path)
        st = check_resumable(ck)
        if GPTConfig.from_dict(st["config"]) != self.model.cfg:
            raise CheckpointError(f"checkpoint {ck['path']} is for a different model config: {st['config']}")
        try:
            check_flat(ck["weights"], self.model.cfg)
        except ValueError as e:
            raise CheckpointError(f"checkpoint {ck['path']}: {e}") from None
        want = {p + k for k in self.opt.names for p in ("m.", "v.")}
        if ck["optim"] is None or set(ck["optim"]) != want or \
                any(ck["optim"][p + k].shape != self.flat[k].shape for k in self.opt.names for p in ("m.", "v.")):
            raise CheckpointError(f"checkpoint {ck['path']} has no optimizer state for these parameters; it cannot "
                                  "be resumed")
        for k, v in ck["weights"].items():
            self.flat[k][...] = self.model.xp.asarray(v)
        self.opt.load_state_dict({"t": st["optim_t"], **ck["optim"]})
        try:
            self.batches.set_state(st["rng"])
        except (TypeError, ValueError, KeyError):
            raise CheckpointError(f"checkpoint {ck['path']}: state.json's 'rng' entry is not a random generator's "
                                  "state; it cannot be resumed") from None
        self.step = st["step"]
        self.history = {**self.history, **st["history"]}
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
        # the bar closed on an error too, so that the error's line starts on a line of its own
        with _StopFlag() as flag, (bar if bar is not None else contextlib.nullcontext()):
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
        self.stopped_by = flag.signal
        if interrupted and self.out_dir is not None:
            p = self.save("ckpt")
            log(f"stopped at step {self.step}; checkpoint saved to {p} (continue with --resume)")
        return self.history
