"""Chapter 8, Fine-tuning: a low-rank adapter (LoRA, Hu et al. 2021).

Instead of changing a weight matrix ``W`` (C_in, C_out) itself, LoRA learns a change of
rank ``r``: two thin matrices ``A`` (C_in, r) and ``B`` (r, C_out), and the layer computes

    y = x @ W + b + (alpha / r) * (x @ A) @ B        x: (..., C_in) -> y: (..., C_out)

``W`` stays frozen. ``B`` starts at zero, so the adapted model starts as the pretrained one.
With r = 8 on a 192 x 576 matrix that is 6,144 numbers to learn instead of 110,592, and
the adapter is a small file next to the model.

Because the change is a matrix product, it can be *merged*: ``W + (alpha / r) A @ B`` is an
ordinary weight, and the merged model is exactly as fast as the original. Training uses the
same identity: the engine's backward pass gives d loss / d W_eff (C_in, C_out) for the merged
weight, and since W_eff = W + s A @ B,

    d loss / d A = s * dW_eff @ B.T       d loss / d B = s * A.T @ dW_eff

(``adapter_grads``), which is what ``lora_backward`` computes from one layer's x and dy.

An adapter can also change a few rows of the token embedding (``rows``): tokens a task needs that
the pretrained model never saw. Pretraining pushes every never-seen token's row the same way (it is
only ever a wrong answer), so they all end up as one vector: the course model cannot tell ``<`` from
``=`` or ``>`` (``unseen_tokens``), and no change to the blocks can make it write them apart.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from .backend import to_numpy
from .files import atomic_write, read_json
from .model import GPT, tree_flatten, tree_unflatten

# the weight matrices an adapter may target, by their name inside a block
TARGETS = ("attn.c_attn.w", "attn.c_proj.w", "mlp.c_fc.w", "mlp.c_proj.w")


# ---------------------------------------------------------------------- one layer, unmerged
def lora_forward(x, w, b, a, bm, scale: float):
    """x @ w + b + scale (x @ a) @ bm. x: (..., C_in); w: (C_in, C_out); b: (C_out,); a: (C_in, r);
    bm: (r, C_out) -> (y (..., C_out), cache)."""
    xa = x @ a                                  # (..., r): the input squeezed to r numbers
    return x @ w + b + scale * (xa @ bm), (x, w, a, bm, xa, scale)


def lora_backward(dy, cache):
    """dy: (..., C_out) -> (dx (..., C_in), dA (C_in, r), dB (r, C_out)); W and b are frozen."""
    x, w, a, bm, xa, scale = cache
    x2, dy2, xa2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1]), xa.reshape(-1, xa.shape[-1])
    dxa = scale * (dy2 @ bm.T)                  # (N, r)
    dx = dy2 @ w.T + dxa @ a.T
    return dx.reshape(x.shape), x2.T @ dxa, scale * (xa2.T @ dy2)


# ---------------------------------------------------------------------- a whole model's adapter
@dataclass
class Adapter:
    """Low-rank changes to some weight matrices of a GPT.

    targets: weight names (e.g. ``h.3.attn.c_attn.w``); rank r; alpha (the change is scaled by alpha / r);
    params: {``<target>.A``: (C_in, r), ``<target>.B``: (r, C_out)} NumPy or backend arrays, and with
    ``rows`` (k token ids) ``wte.rows``: (k, C), added to those rows of the token embedding.
    """
    targets: list
    rank: int
    alpha: float
    params: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def n_params(self) -> int:
        return sum(int(v.size) for v in self.params.values())

    def delta(self, name: str):
        """The change to weight ``name``: scale A @ B, (C_in, C_out)."""
        return self.scale * (self.params[name + ".A"] @ self.params[name + ".B"])


def target_names(model: GPT, targets=("attn.c_attn.w", "attn.c_proj.w"), layers=None) -> list[str]:
    """Full weight names: every block in ``layers`` (default all) times every short name in ``targets``."""
    bad = [t for t in targets if t not in TARGETS]
    if bad:
        raise ValueError(f"LoRA targets must be among {TARGETS}, got {bad}")
    layers = range(model.cfg.n_layer) if layers is None else layers
    return [f"h.{i}.{t}" for i in layers for t in targets]


def unseen_tokens(model: GPT, threshold: float = 0.99) -> list[int]:
    """Token ids whose embedding points the way token 0's does (cosine > ``threshold``): token 0 is the
    byte 0x00, which no text has, and the rows pretraining never trained all end up that one vector."""
    wte = to_numpy(model.params["wte"]).astype(np.float64)
    unit = wte / np.linalg.norm(wte, axis=1, keepdims=True)
    return [int(i) for i in np.nonzero(unit @ unit[0] > threshold)[0]]


def init_adapter(model: GPT, rank: int = 8, alpha: float = 16.0, targets=("attn.c_attn.w", "attn.c_proj.w"),
                 layers=None, seed: int = 0, rows=()) -> Adapter:
    """A ~ N(0, 1/C_in) and B = 0 for each target (the adapted model starts as ``model``), on its backend;
    ``rows``: token ids whose embedding rows are trained too (their change starts at 0)."""
    if rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    rng = np.random.default_rng(seed)
    flat = tree_flatten(model.params)
    params = {}
    for name in target_names(model, targets, layers):
        c_in, c_out = flat[name].shape
        params[name + ".A"] = model.xp.asarray(rng.standard_normal((c_in, rank)) / np.sqrt(c_in), dtype=model._dt)
        params[name + ".B"] = model.xp.zeros((rank, c_out), dtype=model._dt)
    rows = sorted({int(r) for r in rows})
    if rows:
        if rows[0] < 0 or rows[-1] >= model.cfg.vocab_size:
            raise ValueError(f"rows must be token ids in 0 .. {model.cfg.vocab_size - 1}")
        params["wte.rows"] = model.xp.zeros((len(rows), model.cfg.d_model), dtype=model._dt)
    return Adapter(target_names(model, targets, layers), int(rank), float(alpha), params, rows=rows)


def merged_params(base_flat: dict, adapter: Adapter) -> dict:
    """{name: W + scale A @ B for targets, the base array itself otherwise} (flat; base_flat unchanged)."""
    out = dict(base_flat)
    for name in adapter.targets:
        out[name] = base_flat[name] + adapter.delta(name).astype(base_flat[name].dtype)
    if adapter.rows:
        out["wte"] = base_flat["wte"].copy()
        out["wte"][adapter.rows] += adapter.params["wte.rows"]
    return out


def adapter_grads(dflat: dict, adapter: Adapter) -> dict:
    """{``<target>.A``, ``<target>.B``: gradients} from the gradients of the merged weights (flat)."""
    s, g = adapter.scale, {}
    for name in adapter.targets:
        a, b, dw = adapter.params[name + ".A"], adapter.params[name + ".B"], dflat[name]
        g[name + ".A"] = s * (dw @ b.T)
        g[name + ".B"] = s * (a.T @ dw)
    if adapter.rows:
        g["wte.rows"] = dflat["wte"][adapter.rows]
    return g


def merge(model: GPT, adapter: Adapter) -> GPT:
    """A new GPT whose weights are ``model``'s with the adapter merged in (``model`` is unchanged)."""
    flat = merged_params(tree_flatten(model.params), adapter)
    return GPT(model.cfg, dtype=model.dtype, backend=model.backend,
               params=tree_unflatten({k: to_numpy(v) for k, v in flat.items()}, model.cfg.n_layer))


def weight_change(adapter: Adapter, base_flat: dict | None = None) -> dict:
    """{target: ||scale A @ B||} (Frobenius): how far each adapted matrix moved; with ``base_flat``
    (the model's flat weights) relative to the weight's own norm, ||scale A @ B|| / ||W||. The embedding
    rows, if any, as ``wte.rows`` (relative to those rows' norm)."""
    out = {}
    for n in adapter.targets:
        d = float(np.linalg.norm(to_numpy(adapter.delta(n))))
        out[n] = d if base_flat is None else d / float(np.linalg.norm(to_numpy(base_flat[n])))
    if adapter.rows:
        d = float(np.linalg.norm(to_numpy(adapter.params["wte.rows"])))
        rows = to_numpy(base_flat["wte"])[adapter.rows] if base_flat is not None else None
        out["wte.rows"] = d if rows is None else d / float(np.linalg.norm(rows))
    return out


# ---------------------------------------------------------------------- files
def save_adapter(path, adapter: Adapter) -> Path:
    """``path``/adapter.safetensors (float32) and ``path``/adapter.json (rank, alpha, targets, meta)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(to_numpy(v), dtype=np.float32) for k, v in adapter.params.items()}
    info = {"rank": adapter.rank, "alpha": adapter.alpha, "targets": adapter.targets, "rows": adapter.rows,
            "meta": adapter.meta}
    # each file whole or not at all: an interrupted save leaves the previous adapter's file in place
    atomic_write(path / "adapter.safetensors", lambda tmp: save_file(tensors, tmp))
    text = json.dumps(info, indent=1, sort_keys=True) + "\n"
    atomic_write(path / "adapter.json", lambda tmp: Path(tmp).write_text(text))
    return path


def load_adapter(path, model: GPT | None = None) -> Adapter:
    """An ``Adapter`` from ``save_adapter``'s folder; with ``model``, checked against its shapes and on its backend."""
    path = Path(path)
    info = read_json(path / "adapter.json")
    params = load_file(str(path / "adapter.safetensors"))
    rows = [int(r) for r in info.get("rows", [])]
    want = {f"{t}.{m}" for t in info["targets"] for m in "AB"} | ({"wte.rows"} if rows else set())
    if set(params) != want:
        raise ValueError(f"{path}: adapter tensors {sorted(set(params) ^ want)[:4]} do not match its targets")
    if model is not None:
        flat = tree_flatten(model.params)
        for t in info["targets"]:
            if t not in flat:
                raise ValueError(f"{path}: adapter target {t} is not a weight of the model")
            shape = (params[t + ".A"].shape[0], params[t + ".B"].shape[1])
            if shape != tuple(flat[t].shape):
                raise ValueError(f"{path}: adapter for {t} is {shape}, the model's weight is {tuple(flat[t].shape)}")
        if rows and (max(rows) >= model.cfg.vocab_size or params["wte.rows"].shape != (len(rows), model.cfg.d_model)):
            raise ValueError(f"{path}: the adapter's embedding rows do not fit the model's vocabulary or width")
        params = {k: model.xp.asarray(v, dtype=model._dt) for k, v in params.items()}
    return Adapter(list(info["targets"]), int(info["rank"]), float(info["alpha"]), params, info.get("meta", {}),
                   rows)
