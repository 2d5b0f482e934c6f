"""Chapter 5, Layers (the whole stack): token ids in, next-token logits out.

``gpt_forward`` is the entire decoder on one screen: embed, run the blocks,
normalise, unembed with the same matrix that embedded (tied weights, as in
GPT-2 and GPT-3). ``GPT`` wraps it with parameters, input checks, the X-ray
used in the book, the training gradients and generation.
"""
from __future__ import annotations

import math

import numpy as np

from .attention import attention_probs
from .backend import backend_name, get_xp, to_numpy
from .config import GPTConfig
from .distill import distill_cross_entropy_backward, distill_cross_entropy_forward
from .layers import (Dropout, block_backward, block_forward, cross_entropy_backward, cross_entropy_forward,
                     dropout_backward, dropout_forward, embedding_backward, embedding_forward,
                     layernorm_backward, layernorm_forward, linear_forward, split_qkv, unembed)

DTYPES = ("float64", "float32", "float16")  # CuPy has no bfloat16 dtype, so neither do we


# ---------------------------------------------------------------------- the forward pass
def gpt_forward(params, ids, cfg: GPTConfig):
    """ids: (B, T) int -> logits (B, T, V)."""
    x, _ = embedding_forward(ids, params["wte"], params["wpe"])
    for block, layout in zip(params["h"], cfg.layer_layouts()):
        x, _ = block_forward(x, block, cfg.n_head, layout, cfg.window, cfg.stride, cfg.fixed_c,
                             cfg.layer_norm_epsilon, for_backward=False)
    x, _ = layernorm_forward(x, params["ln_f"], cfg.layer_norm_epsilon)
    return unembed(x, params["wte"])  # x @ wte.T


# ---------------------------------------------------------------------- parameter trees
def tree_flatten(tree, prefix: str = "") -> dict:
    """Nested parameter (or gradient) tree -> {"h.0.attn.c_attn.w": array, ...}."""
    out = {}
    items = enumerate(tree) if isinstance(tree, list) else tree.items()
    for k, v in items:
        name = f"{prefix}{k}"
        if isinstance(v, (dict, list)):
            out.update(tree_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def tree_unflatten(flat: dict, n_layer: int) -> dict:
    """Inverse of ``tree_flatten`` for a GPT's parameter names."""
    tree: dict = {"h": [{} for _ in range(n_layer)]}
    for name, v in flat.items():
        parts = name.split(".")
        node = tree
        if parts[0] == "h":
            node, parts = tree["h"][int(parts[1])], parts[2:]
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return tree


def tree_map(fn, tree):
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [tree_map(fn, v) for v in tree]
    return fn(tree)


def init_params(cfg: GPTConfig, seed: int = 0, dtype: str = "float32") -> dict:
    """Random parameters as GPT-2 initialises them, as NumPy arrays.

    Weights ~ N(0, 0.02); the two projections that write into the residual stream
    (attn.c_proj, mlp.c_proj) ~ N(0, 0.02 / sqrt(2 n_layer)) so that the stream's
    variance does not grow with depth (Radford et al. 2019, section 2.3); biases 0;
    LayerNorm gains 1.
    """
    rng = np.random.default_rng(seed)
    np_dtype = np.float64 if dtype == "float64" else np.float32
    flat = {}
    for name, shape in cfg.param_shapes().items():
        if name.endswith(".g"):
            a = np.ones(shape, np_dtype)
        elif name.endswith(".b"):
            a = np.zeros(shape, np_dtype)
        else:
            std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith("c_proj.w") else 0.02
            a = rng.standard_normal(shape, dtype=np_dtype) * np_dtype(std)
        flat[name] = a
    return tree_unflatten(flat, cfg.n_layer)


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
        return GPT(self.cfg, dtype=dtype or self.dtype, backend=backend,
                   params=tree_map(to_numpy, self.params))

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
        cfg, p = self.cfg, self.params
        x, _ = embedding_forward(ids, p["wte"], p["wpe"])
        residuals, attentions = [x], []
        for block, layout in zip(p["h"], cfg.layer_layouts()):
            if want_att:
                h, _ = layernorm_forward(x, block["ln_1"], cfg.layer_norm_epsilon)
                qkv, _ = linear_forward(h, block["attn"]["c_attn"])
                q, k, _ = split_qkv(qkv, cfg.n_head)
                attentions.append(attention_probs(q, k, layout, cfg.window, cfg.stride, cfg.fixed_c))
            x, _ = block_forward(x, block, cfg.n_head, layout, cfg.window, cfg.stride, cfg.fixed_c,
                                 cfg.layer_norm_epsilon, for_backward=False)
            residuals.append(x)
        h, _ = layernorm_forward(x, p["ln_f"], cfg.layer_norm_epsilon)
        logits = h @ p["wte"].T
        sq = (lambda a: a[0]) if squeeze else (lambda a: a)
        return XRay(logits=sq(logits), residuals=[sq(r) for r in residuals] if want_res else None,
                    attention=[sq(a) for a in attentions] if want_att else None, model=self)

    def logit_lens(self, residual):
        """What the model would predict if it stopped here: ln_f then unembed. (…, C) -> (…, V)"""
        h, _ = layernorm_forward(residual, self.params["ln_f"], self.cfg.layer_norm_epsilon)
        return h @ self.params["wte"].T

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
        cfg, p, xp = self.cfg, self.params, self.xp
        ids, _ = check_ids(ids, cfg, xp)
        targets = check_targets(targets, ids, cfg, xp)
        eps = cfg.layer_norm_epsilon
        drop = None
        if dropout:
            drop = Dropout(dropout, range(ids.shape[0]) if dropout_seeds is None else dropout_seeds)
        # forward, keeping every cache
        x, c_emb = embedding_forward(ids, p["wte"], p["wpe"])
        x, m_emb = dropout_forward(x, drop)
        caches = []
        for block, layout in zip(p["h"], cfg.layer_layouts()):
            x, c = block_forward(x, block, cfg.n_head, layout, cfg.window, cfg.stride, cfg.fixed_c, eps, drop)
            caches.append(c)
        h, c_lnf = layernorm_forward(x, p["ln_f"], eps)
        logits = h @ p["wte"].T
        if soft is None:
            loss, c_ce = cross_entropy_forward(logits, targets)
        else:
            loss, c_ce = distill_cross_entropy_forward(logits, targets, *soft)
        # backward, mirroring it
        dlogits = (cross_entropy_backward if soft is None else distill_cross_entropy_backward)(1.0, c_ce)
        C = h.shape[-1]
        dwte = dlogits.reshape(-1, dlogits.shape[-1]).T @ h.reshape(-1, C)  # unembedding use of wte
        dh = dlogits @ p["wte"]
        dx, g_lnf = layernorm_backward(dh, c_lnf)
        g_blocks = [None] * cfg.n_layer
        for i in reversed(range(cfg.n_layer)):
            dx, g_blocks[i] = block_backward(dx, caches[i])
        dwte_emb, dwpe_used = embedding_backward(dropout_backward(dx, m_emb), c_emb)
        dwpe = xp.zeros_like(p["wpe"])
        dwpe[:dwpe_used.shape[0]] = dwpe_used
        grads = {"wte": dwte + dwte_emb, "wpe": dwpe, "h": g_blocks, "ln_f": g_lnf}
        return float(loss), grads

    # -------------------------------------------------------------- generation
    def generate(self, ids, max_new_tokens: int, temperature: float = 1.0, top_k=None, top_p=None,
                 seed=None, use_cache: bool = True, stop=None, overflow: str = "error"):
        """Continue ``ids`` by ``max_new_tokens`` tokens; see ``engine.generate.generate``."""
        from .generate import generate

        return generate(self, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        seed=seed, use_cache=use_cache, stop=stop, overflow=overflow)

    def generate_stream(self, ids, max_new_tokens: int, temperature: float = 1.0, top_k=None, top_p=None,
                        seed=None, use_cache: bool = True, stop=None, overflow: str = "error"):
        """Yield new token ids one at a time as they are sampled; see ``engine.generate``."""
        from .generate import generate_stream

        return generate_stream(self, ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
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


# ---------------------------------------------------------------------- input checks
def check_ids(ids, cfg: GPTConfig, xp, name: str = "ids", allow_long: bool = False):
    """Token ids -> ((B, T) backend int array, was_1d). Raises ValueError/TypeError that name the problem."""
    a = ids
    if isinstance(a, (str, bytes)):
        raise TypeError(f"{name} must be token ids, not text: encode it first, e.g. "
                        "engine.get_encoding('gpt2').encode(text)")
    if isinstance(a, (list, tuple)):
        if len(a) == 0:
            raise ValueError(f"{name} is empty: give at least one token (e.g. the <|endoftext|> id)")
        try:
            a = np.asarray(a)
        except ValueError:  # NumPy refuses ragged nesting
            a = np.empty(0, dtype=object)
        if a.dtype == object:
            raise TypeError(f"{name} must be a rectangular list of integers (every row the same length)")
    elif not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise TypeError(f"{name} must be a list or array of integer token ids, got {type(ids).__name__}")
    kind = np.dtype(a.dtype).kind
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(a.shape)}): give at least one token")
    if kind not in "iu":
        if kind == "U" or kind == "S":
            raise TypeError(f"{name} must be token ids, not text: encode it first, e.g. "
                            "engine.get_encoding('gpt2').encode(text)")
        raise TypeError(f"{name} must be integers, got dtype {a.dtype}")
    if a.ndim not in (1, 2):
        raise ValueError(f"{name} must have shape (T,) or (B, T), got {tuple(a.shape)}")
    squeeze = a.ndim == 1
    if squeeze:
        a = a[None, :]
    if a.shape[1] == 0 or a.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(a.shape)}): give at least one token")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= cfg.vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} contains token id {bad}, outside the vocabulary 0 .. {cfg.vocab_size - 1}")
    if a.shape[1] > cfg.n_ctx and not allow_long:
        raise ValueError(f"{name} has {a.shape[1]} positions but the model's context n_ctx is {cfg.n_ctx}; "
                         "shorten it (or in generate pass overflow='slide' to keep the last n_ctx tokens)")
    return xp.asarray(a, dtype=xp.int64), squeeze


def check_targets(targets, ids, cfg, xp):
    t = targets if hasattr(targets, "dtype") else np.asarray(targets)
    if np.dtype(t.dtype).kind not in "iu":
        raise TypeError(f"targets must be integers, got dtype {t.dtype}")
    if t.ndim == 1:
        t = t[None, :]
    if tuple(t.shape) != tuple(ids.shape):
        raise ValueError(f"targets shape {tuple(t.shape)} must match ids shape {tuple(ids.shape)}")
    if int(t.max()) >= cfg.vocab_size or int(t.min()) < -1:
        raise ValueError(f"targets must be token ids in 0 .. {cfg.vocab_size - 1} (or -1 to ignore)")
    return xp.asarray(t, dtype=xp.int64)


def check_params(params: dict, cfg: GPTConfig):
    """Raise a ValueError listing every missing, unexpected or mis-shaped tensor, or NaN/inf weights."""
    flat = tree_flatten(params)
    want = cfg.param_shapes()
    missing = sorted(set(want) - set(flat))
    extra = sorted(set(flat) - set(want))
    wrong = [f"{k}: got {tuple(flat[k].shape)}, config expects {want[k]}"
             for k in want if k in flat and tuple(flat[k].shape) != tuple(want[k])]
    problems = []
    if missing:
        problems.append("missing: " + ", ".join(missing))
    if extra:
        problems.append("unexpected: " + ", ".join(extra))
    if wrong:
        problems.append("wrong shape: " + "; ".join(wrong))
    if problems:
        raise ValueError("parameters do not match the config:\n  " + "\n  ".join(problems))
    bad = [k for k, v in flat.items() if not bool(np.isfinite(to_numpy(v)).all())]
    if bad:
        raise ValueError("parameters contain NaN or inf in: " + ", ".join(bad))
