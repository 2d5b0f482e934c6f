"""Chapter 5, Layers (the whole stack): ``GPT``, a decoder with its parameters.

``GPT`` wraps the one decoder pass (``engine.decoder.forward``) with parameters, input
checks, the X-ray used in the book, the training gradients and generation. The loss
(``engine.losses``), plain or against teachers' predictions, composes with the pass
here: forward, loss, backward.
"""
from __future__ import annotations

import numpy as np

from .backend import backend_name, get_xp, to_numpy
from .config import GPTConfig
from .decoder import XRayRecord, backward, check_ids, check_targets, forward, gpt_forward  # noqa: F401
from .generate import generate as _generate, generate_stream as _generate_stream
from .layers import Dropout, layernorm_forward, unembed
from .losses import (cross_entropy_backward, cross_entropy_forward, distill_cross_entropy_backward,
                     distill_cross_entropy_forward)
# re-exported: the book, the exercises and the tests import them from engine.model
from .params import check_params, init_params, tree_flatten, tree_map, tree_unflatten  # noqa: F401
from .threads import blas_on_one_thread

DTYPES = ("float64", "float32", "float16")  # CuPy has no bfloat16 dtype, so neither do we


def _xp_dtype(xp, dtype: str):
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return xp.dtype(dtype)


# ---------------------------------------------------------------------- the model
class GPT:
    """A GPT-2/GPT-3 style decoder.

    Args:
        cfg: a ``GPTConfig`` or a preset name.
        seed: seed of the random initialisation.
        dtype: "float32" (default), "float64", or on the GPU "float16".
        backend: "numpy", "cupy" or "auto" (default: the ENGINE_BACKEND variable, else auto).
        params: an existing parameter tree (NumPy or backend arrays) instead of a random init.
    """

    def __init__(self, cfg: GPTConfig | str, seed: int = 0, dtype: str = "float32", backend=None,
                 params: dict | None = None):
        self.cfg = GPTConfig.preset(cfg) if isinstance(cfg, str) else cfg
        self.xp = get_xp(backend)
        self.dtype = dtype
        self._dt = _xp_dtype(self.xp, dtype)
        if params is None:
            params = init_params(self.cfg, seed, "float64" if dtype == "float64" else "float32")
        else:
            check_params(params, self.cfg)
        self.params = tree_map(lambda a: self.xp.asarray(a, dtype=self._dt), params)

    # -------------------------------------------------------------- basics
    @property
    def backend(self) -> str:
        return backend_name(self.xp)

    def n_params(self) -> int:
        """Parameters actually allocated (equals ``cfg.n_params()``)."""
        return sum(int(a.size) for a in tree_flatten(self.params).values())

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat {name: NumPy array} copy of the parameters."""
        return {k: to_numpy(v) for k, v in tree_flatten(self.params).items()}

    def to(self, backend=None, dtype: str | None = None) -> "GPT":
        """A copy of this model on another backend and/or dtype."""
        # np.array copies: on the same backend and dtype, asarray alone would share the arrays, and
        # training the copy in place (chapter 8) would change the original too
        return GPT(self.cfg, dtype=dtype or self.dtype, backend=backend,
                   params=tree_map(lambda a: np.array(to_numpy(a)), self.params))

    def __repr__(self):
        c = self.cfg
        return (f"GPT({c.name or 'custom'}: {c.n_layer} layers, d_model {c.d_model}, {c.n_head} heads, "
                f"n_ctx {c.n_ctx}, vocab {c.vocab_size}, {self.n_params():,} parameters, "
                f"{self.dtype} on {self.backend})")

    # -------------------------------------------------------------- inputs
    def check_ids(self, ids, name: str = "ids", allow_long: bool = False):
        """Validate token ids and return them as a (B, T) integer array on the backend."""
        return check_ids(ids, self.cfg, self.xp, name=name, allow_long=allow_long)[0]

    # -------------------------------------------------------------- forward
    def forward(self, ids, return_residuals: bool = False, return_attention: bool = False):
        """Next-token logits. ids: (B, T) or (T,) ints -> logits (B, T, V) (or (T, V) for 1-D input).

        With ``return_residuals`` and/or ``return_attention`` it returns an ``XRay``: the
        logits, the residual stream after the embedding and after every block
        (n_layer + 1 arrays of (B, T, C)), and every layer's attention weights
        (n_layer arrays of (B, H, T, T), zero where the layout does not look).
        """
        ids, squeeze = check_ids(ids, self.cfg, self.xp)
        if not (return_residuals or return_attention):
            logits = gpt_forward(self.params, ids, self.cfg)
            return logits[0] if squeeze else logits
        return self._xray(ids, return_residuals, return_attention, squeeze)

    __call__ = forward

    def _xray(self, ids, want_res, want_att, squeeze):
        record = XRayRecord(residuals=want_res, attention=want_att)
        logits, _ = forward(self.params, ids, self.cfg, record=record)
        sq = (lambda a: a[0]) if squeeze else (lambda a: a)
        return XRay(logits=sq(logits), residuals=[sq(r) for r in record.residuals] if want_res else None,
                    attention=[sq(a) for a in record.attention] if want_att else None, model=self)

    def logit_lens(self, residual):
        """What the model would predict if it stopped here: ln_f then unembed. (…, C) -> (…, V)"""
        h, _ = layernorm_forward(residual, self.params["ln_f"], self.cfg.layer_norm_epsilon)
        return unembed(h, self.params["wte"])

    # -------------------------------------------------------------- loss and gradients
    def loss(self, ids, targets) -> float:
        """Mean cross-entropy (nats per token) of ``targets`` (B, T) given ``ids`` (B, T)."""
        ids, _ = check_ids(ids, self.cfg, self.xp)
        targets = check_targets(targets, ids, self.cfg, self.xp)
        loss, _ = cross_entropy_forward(gpt_forward(self.params, ids, self.cfg), targets)
        return float(loss)

    def loss_and_grads(self, ids, targets, dropout: float = 0.0, dropout_seeds=None, soft=None):
        """Mean cross-entropy and its gradient for every parameter, by the hand-written backward pass.

        ids, targets: (B, T) ints (a target of -1 is ignored). Returns (loss: float, grads) where
        grads is a tree shaped like ``self.params``. ``dropout`` > 0 zeroes that fraction of the
        embedding output and of every residual branch (see ``layers.Dropout``); ``dropout_seeds``
        gives one integer per row (default: 0 .. B-1), so the same seeds give the same masks.
        ``soft`` = (idx (B, T, k), p (B, T, k), alpha): teachers' predictions to learn from as well
        (knowledge distillation, ``engine.distill``); the loss is then the cross-entropy against
        the mixed target.
        """
        ids, _ = check_ids(ids, self.cfg, self.xp)
        targets = check_targets(targets, ids, self.cfg, self.xp)
        drop = None
        if dropout:
            drop = Dropout(dropout, range(ids.shape[0]) if dropout_seeds is None else dropout_seeds)
        with blas_on_one_thread():  # every product below is cut across the cores by the engine itself
            logits, cache = forward(self.params, ids, self.cfg, drop=drop, for_backward=True)
            if soft is None:
                loss, c_loss = cross_entropy_forward(logits, targets)
                dlogits = cross_entropy_backward(1.0, c_loss)
            else:
                loss, c_loss = distill_cross_entropy_forward(logits, targets, *soft)
                dlogits = distill_cross_entropy_backward(1.0, c_loss)
            return float(loss), backward(dlogits, cache, self.params)

    # -------------------------------------------------------------- generation
    def generate(self, ids, max_new_tokens: int, temperature: float = 1.0, top_k=None, top_p=None,
                 seed=None, use_cache: bool = True, stop=None, overflow: str = "error"):
        """Continue ``ids`` by ``max_new_tokens`` tokens; see ``engine.generate.generate``."""
        return _generate(self, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        seed=seed, use_cache=use_cache, stop=stop, overflow=overflow)

    def generate_stream(self, ids, max_new_tokens: int, temperature: float = 1.0, top_k=None, top_p=None,
                        seed=None, use_cache: bool = True, stop=None, overflow: str = "error"):
        """Yield new token ids one at a time as they are sampled; see ``engine.generate``."""
        return _generate_stream(self, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                               seed=seed, use_cache=use_cache, stop=stop, overflow=overflow)


class XRay:
    """What ``GPT.forward(..., return_residuals=True, return_attention=True)`` returns."""

    def __init__(self, logits, residuals, attention, model):
        self.logits, self.residuals, self.attention, self._model = logits, residuals, attention, model

    def logit_lens(self):
        """Logits the model would give if it stopped after each layer: n_layer + 1 arrays (…, T, V)."""
        if self.residuals is None:
            raise ValueError("logit_lens needs return_residuals=True")
        return [self._model.logit_lens(r) for r in self.residuals]

    def residual_norms(self):
        """L2 norm of the residual stream per layer and position: (n_layer + 1, …, T) NumPy."""
        if self.residuals is None:
            raise ValueError("residual_norms needs return_residuals=True")
        xp = self._model.xp
        return np.stack([to_numpy(xp.linalg.norm(r, axis=-1)) for r in self.residuals])
