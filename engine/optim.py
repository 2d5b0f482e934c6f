"""Chapter 2, Training: the optimizer GPT-3 used, AdamW, and its learning-rate schedule.

Brown et al. 2020 (arXiv:2005.14165), Appendix B: Adam with beta1 = 0.9,
beta2 = 0.95, eps = 1e-8; the global norm of the gradient clipped at 1.0; a
linear warm-up, then cosine decay of the learning rate down to 10% of its
peak; weight decay 0.1 (decoupled, as in AdamW, Loshchilov & Hutter 2019).

Which tensors decay: every matrix (attention and MLP weights, and the token and
position embeddings, as nanoGPT does) but no bias and no LayerNorm gain/shift,
i.e. decay exactly the tensors with two or more dimensions.

The two moment buffers are allocated once and updated in place, so a step
creates no parameter-sized temporaries beyond one scratch buffer per tensor.
"""
from __future__ import annotations

import math
from functools import partial

from . import kernels
from .backend import array_module


def lr_at(step: int, max_lr: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up over ``warmup`` steps to ``max_lr``,
    cosine decay to ``min_ratio * max_lr`` at ``total``, constant after."""
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return max_lr * min_ratio
    progress = (step - warmup) / max(1, total - warmup)
    return max_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def global_norm(grads) -> float:
    """sqrt of the sum of squares of every gradient entry (``grads``: list of arrays)."""
    total = 0.0
    for g in grads:
        xp = array_module(g)
        s = float(xp.vdot(g.ravel(), g.ravel()))
        if not math.isfinite(s) and bool(xp.isfinite(g).all()):  # float32 overflow of the sum of squares
            a = float(xp.abs(g).max())
            s = a * a * float(xp.vdot((g / a).ravel(), (g / a).ravel()))
        total += s
    return math.sqrt(total)


def clip_grad_norm_(grads, max_norm: float) -> float:
    """Scale every gradient in place so the global norm is at most ``max_norm``; returns the norm before.

    Same rule as ``torch.nn.utils.clip_grad_norm_``: factor max_norm / (norm + 1e-6), only if below 1.
    """
    norm = global_norm(grads)
    scale_to_norm_(grads, max_norm, norm)
    return norm


def scale_to_norm_(grads, max_norm: float, norm: float) -> None:
    """The clipping itself, given the global ``norm``: scale in place by max_norm / (norm + 1e-6) if below 1."""
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= g.dtype.type(coef)


def decays(name: str, shape) -> bool:
    """Whether a parameter gets weight decay: matrices yes (embeddings included), biases and LayerNorm no."""
    return len(shape) >= 2


def _adamw_update(p, g, m, v, tmp, decay, b1, b2, bc2, eps, step_size):
    """One AdamW update of p in place from its gradient g and moments m, v (tmp: scratch), all one shape."""
    xp = array_module(p)
    dt = p.dtype.type
    if decay != 1.0:
        p *= dt(decay)                     # decoupled weight decay
    m *= dt(b1)
    xp.multiply(g, dt(1 - b1), out=tmp)
    m += tmp                               # m = b1 m + (1 - b1) g
    xp.multiply(g, g, out=tmp)
    v *= dt(b2)
    tmp *= dt(1 - b2)
    v += tmp                               # v = b2 v + (1 - b2) g^2
    xp.sqrt(v, out=tmp)
    tmp *= dt(1 / math.sqrt(bc2))
    tmp += dt(eps)                         # sqrt(v_hat) + eps
    xp.divide(m, tmp, out=tmp)
    tmp *= dt(step_size)
    p -= tmp                               # p -= lr m_hat / (sqrt(v_hat) + eps)


class AdamW:
    """AdamW with GPT-3's defaults, updating flat {name: array} parameters in place.

    Args:
        params: {name: array}: the model's arrays themselves (``tree_flatten(model.params)``).
        lr: peak learning rate (the schedule is applied by passing ``lr`` to ``step``).
        betas, eps, weight_decay: as in Brown et al. 2020, Appendix B.
        grad_clip: global gradient-norm clipping threshold (None: no clipping).
        trainable: optional set of names to update; the others are frozen (no state allocated).
    """

    def __init__(self, params: dict, lr: float = 6e-4, betas=(0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.1, grad_clip: float | None = 1.0, trainable=None):
        self.params = params
        self.names = [k for k in params if trainable is None or k in trainable]
        if trainable is not None:
            unknown = set(trainable) - set(params)
            if unknown:
                raise ValueError(f"trainable names not in the model: {sorted(unknown)}")
        if not self.names:
            raise ValueError("nothing to train: the trainable set is empty")
        self.lr, self.betas, self.eps = lr, betas, eps
        self.weight_decay, self.grad_clip = weight_decay, grad_clip
        self.t = 0
        self.m = {k: array_module(params[k]).zeros_like(params[k]) for k in self.names}
        self.v = {k: array_module(params[k]).zeros_like(params[k]) for k in self.names}
        self._tmp = {k: array_module(params[k]).empty_like(params[k]) for k in self.names}

    def step(self, grads: dict, lr: float | None = None) -> float:
        """One update from flat {name: grad}. Gradients are clipped in place. Returns the pre-clip norm."""
        lr = self.lr if lr is None else lr
        missing = [k for k in self.names if k not in grads]
        if missing:
            raise ValueError(f"no gradient for: {missing[:5]}")
        with kernels.blas_on_one_thread():  # the update is cut across the cores by the engine (threads.py)
            return self._step(grads, lr)

    def _step(self, grads: dict, lr: float) -> float:
        gs = [grads[k] for k in self.names]
        norm = global_norm(gs)
        if not math.isfinite(norm):  # refuse before touching any parameter
            bad = [k for k in self.names if not bool(array_module(grads[k]).isfinite(grads[k]).all())]
            raise FloatingPointError(f"gradient norm is {norm}: non-finite gradients in {', '.join(bad[:5])}")
        if self.grad_clip is not None:
            scale_to_norm_(gs, self.grad_clip, norm)  # as clip_grad_norm_, reusing the norm just checked
        self.t += 1
        b1, b2 = self.betas
        bc1 = 1 - b1 ** self.t
        bc2 = 1 - b2 ** self.t
        step_size = lr / bc1
        for k in self.names:
            decay = 1 - lr * self.weight_decay if self.weight_decay and decays(k, self.params[k].shape) else 1.0
            # the update is element-wise: big tensors are cut across cores (small ones run inline)
            kernels.parallel(partial(_adamw_update, decay=decay, b1=b1, b2=b2, bc2=bc2, eps=self.eps,
                                     step_size=step_size),
                             self.params[k], grads[k], self.m[k], self.v[k], self._tmp[k])
        return norm

    def state_dict(self) -> dict:
        """{'t': int, 'm.<name>': array, 'v.<name>': array}."""
        out = {"t": self.t}
        for k in self.names:
            out["m." + k] = self.m[k]
            out["v." + k] = self.v[k]
        return out

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        for k in self.names:
            for buf, pre in ((self.m, "m."), (self.v, "v.")):
                if pre + k not in state:
                    raise ValueError(f"optimizer state has no {pre + k}")
                src = state[pre + k]
                if tuple(src.shape) != tuple(buf[k].shape):
                    raise ValueError(f"optimizer state {pre + k} has shape {tuple(src.shape)}, "
                                     f"expected {tuple(buf[k].shape)}")
                buf[k][...] = array_module(buf[k]).asarray(src)
