"""``TrainConfig``: the settings of a training run (the model's shape lives in ``GPTConfig``), and their checks."""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass


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

    def check(self, flags: bool = False) -> "TrainConfig":
        """Raise a one-line ValueError for a setting that cannot train (``flags``: in the command line's words):
        a NaN learning rate trains nothing, a negative ``ckpt_interval`` would checkpoint every step."""
        for f, (ok, what) in _RULES.items():
            v = getattr(self, f)
            if not ok(v):
                flag = ("--steps" if f == "max_steps" else "--" + f.replace("_", "-")) if flags else f
                raise ValueError(f"{flag} must be {what}, got {v!r}")
        return self


def _int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


_RULES = {  # field: (test, what it must be)
    **{f: (lambda v: _int(v) and v >= 1, "a whole number >= 1")
       for f in ("batch_size", "grad_accum", "max_steps", "eval_windows", "workers")},
    **{f: (lambda v: _int(v) and v >= 0, "a whole number >= 0 (0: never)")
       for f in ("eval_interval", "ckpt_interval", "snapshot_every", "keep_snapshots")},
    **{f: (lambda v: _int(v) and v >= 0, "a whole number >= 0") for f in ("warmup", "seed")},
    **{f: (lambda v: _real(v) and v > 0, "a finite number > 0") for f in ("lr", "eps")},
    **{f: (lambda v: v is None or (_real(v) and v > 0), "a finite number > 0") for f in ("grad_clip", "max_minutes")},
    "weight_decay": (lambda v: _real(v) and v >= 0, "a finite number >= 0"),
    **{f: (lambda v: _real(v) and 0 <= v <= 1, "in [0, 1]") for f in ("min_lr_ratio", "distill_alpha")},
    **{f: (lambda v: _real(v) and 0 <= v < 1, "in [0, 1)") for f in ("dropout", "beta1", "beta2")},
}
