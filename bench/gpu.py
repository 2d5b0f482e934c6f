"""GPU benchmarks (CuPy), run by bench/gpu.sh: one short run that writes a Markdown report.

    python -m bench.gpu [--out FILE] [--repeats N]      # on a machine with an NVIDIA GPU and CuPy
    python -m bench.gpu --cpu-smoke                      # the same code on NumPy at tiny sizes

Measured (float16 unless noted; the same card for engine and PyTorch):
  * the card's float16 matrix-multiply rate (CuPy, 8192^3) and copy bandwidth (1 GiB);
  * GPT-3 XL shapes (dense attention), forward of 1 x 2,048 tokens: TFLOP/s as a fraction of
    that rate, and time relative to PyTorch eager (bench/torch_ref.py) with the same weights;
  * cached greedy generation on GPT-3 XL shapes, tokens/s against the bandwidth limit;
  * one decoder layer of GPT-3 175B (12,288 wide, 96 heads) forward on 2,048 tokens, vs PyTorch;
  * a training step (forward, backward, AdamW) of GPT-2 124M shapes, float32, batch 8 x 1,024, vs PyTorch.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from engine import GPT, GPTConfig
from engine.layers import BlockShape, block_forward
from engine.model import gpt_forward, tree_flatten, tree_unflatten

from .common import Row, table


@dataclasses.dataclass
class Setup:
    backend: str  # "cupy" or "numpy"
    dtype: str  # activations and weights for the inference benchmarks
    device: str  # torch device
    big: str | dict  # the model for forward and generation
    T: int
    layer_d: int  # one layer of this width...
    layer_heads: int
    layer_T: int
    train: str | dict
    train_B: int
    train_T: int
    gen_prompt: int
    gen_new: int
    mm_n: int
    bw_bytes: int

    @classmethod
    def gpu(cls):
        return cls("cupy", "float16", "cuda", "gpt3-xl", 2048, 12288, 96, 2048, "gpt2-124m", 8, 1024, 32, 128,
                   8192, 1 << 30)

    @classmethod
    def cpu_smoke(cls):
        tiny = dict(n_layer=2, n_head=4, d_model=64, n_ctx=64, vocab_size=211)
        return cls("numpy", "float32", "cpu", tiny, 64, 128, 4, 64, tiny, 2, 32, 8, 8, 256, 16 << 20)


def _cfg(c) -> GPTConfig:
    cfg = GPTConfig.preset(c) if isinstance(c, str) else GPTConfig(**c)
    return dataclasses.replace(cfg, attention="dense")  # PyTorch's reference is dense


class Ctx:
    """The array module, its synchronisation, and PyTorch on the same device."""

    def __init__(self, s: Setup):
        from engine.backend import get_xp

        self.s = s
        self.xp = get_xp(s.backend)
        import torch

        self.torch = torch
        self.tdtype = getattr(torch, s.dtype)

    def sync(self):
        if self.s.backend == "cupy":
            self.xp.cuda.Device().synchronize()
        if self.s.device == "cuda":
            self.torch.cuda.synchronize()

    def time(self, fn, repeats: int) -> float:
        fn()
        self.sync()
        ts = []
        for _ in range(repeats):
            self.sync()
            t = time.perf_counter()
            fn()
            self.sync()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    def paired(self, fns: dict, repeats: int) -> dict:
        for fn in fns.values():
            fn()
        self.sync()
        ts = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                self.sync()
                t = time.perf_counter()
                fn()
                self.sync()
                ts[k].append(time.perf_counter() - t)
        return {k: statistics.median(v) for k, v in ts.items()}

    def randn(self, shape, std: float, dtype: str, seed: int):
        """Normal(0, std) array on the backend, made there (no host round trip on a GPU)."""
        if self.s.backend == "numpy":
            a = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
        else:
            a = self.xp.random.RandomState(seed).standard_normal(shape, dtype=self.xp.float32)
        a *= np.float32(std)
        return a.astype(dtype, copy=False)

    def params(self, cfg: GPTConfig, dtype: str, only_layer0: bool = False) -> dict:
        """Flat {name: array}: GPT-2's initialisation, built on the backend."""
        flat = {}
        for i, (name, shape) in enumerate(cfg.param_shapes().items()):
            if only_layer0 and not name.startswith("h.0."):
                continue
            if name.endswith(".g"):
                flat[name] = self.xp.ones(shape, dtype=dtype)
            elif name.endswith(".b"):
                flat[name] = self.xp.zeros(shape, dtype=dtype)
            else:
                std = 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith("c_proj.w") else 0.02
                flat[name] = self.randn(shape, std, dtype, seed=i)
        return flat

    def to_torch(self, a, copy: bool = False):
        """Backend array -> torch tensor on the device, sharing memory unless ``copy``."""
        t = self.torch.from_numpy(a) if self.s.backend == "numpy" else self.torch.from_dlpack(a)
        return t.clone() if copy else t

    def describe(self) -> str:
        parts = [f"Python {platform.python_version()}", f"NumPy {np.__version__}",
                 f"PyTorch {self.torch.__version__}"]
        if self.s.backend == "cupy":
            cp = self.xp
            props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            parts = [f"GPU {name}", f"CuPy {cp.__version__}",
                     f"CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}"] + parts
        else:
            parts = ["CPU smoke run (NumPy backend, tiny sizes: the numbers mean nothing)"] + parts
        return "; ".join(parts)


# ---------------------------------------------------------------------- measurements
def card_rates(c: Ctx, repeats: int) -> tuple[float, float, list[Row]]:
    xp, n = c.xp, c.s.mm_n
    a = c.randn((n, n), 1.0, c.s.dtype, 1)
    b = c.randn((n, n), 1.0, c.s.dtype, 2)
    t = c.time(lambda: xp.matmul(a, b), repeats)
    rate = 2.0 * n ** 3 / t
    del a, b
    src = xp.ones(c.s.bw_bytes // 4, dtype=xp.float32)
    dst = xp.empty_like(src)
    tb = c.time(lambda: dst.__setitem__(Ellipsis, src), repeats)
    bw = 2.0 * src.nbytes / tb  # read + write
    del src, dst
    rows = [Row(f"{c.s.dtype} matmul {n}^3 ({c.s.backend})", f"{rate / 1e12:.2f} TFLOP/s", "", None, "measure", None),
            Row(f"copy bandwidth {c.s.bw_bytes >> 20} MiB", f"{bw / 1e9:.0f} GB/s", "", None, "measure", None)]
    return rate, bw, rows


def forward_and_generate(c: Ctx, repeats: int, rate: float, bw: float) -> list[Row]:
    cfg = _cfg(c.s.big)
    flat = c.params(cfg, c.s.dtype)
    model = GPT(cfg, dtype=c.s.dtype, backend=c.s.backend, params=tree_unflatten(flat, cfg.n_layer))
    del flat
    ref = _torch_model(c, model, copy=False)
    T = c.s.T
    ids_np = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, T))
    ids = c.xp.asarray(ids_np)
    tids = c.torch.from_numpy(ids_np).to(c.s.device)

    def engine():
        return gpt_forward(model.params, ids, cfg)

    def reference():
        with c.torch.no_grad():
            return ref(tids)

    from engine.backend import to_numpy

    e = to_numpy(engine()).astype(np.float32)
    r = reference().float().cpu().numpy()
    rel = float(np.abs(e - r).max() / max(np.abs(r).max(), 1e-30))
    del e, r
    t = c.paired({"engine": engine, "reference": reference}, repeats)
    flops = cfg.flops_per_token(T)["forward"] * T
    achieved = flops / t["engine"]
    rt = t["engine"] / t["reference"]
    rows = [
        Row(f"forward {cfg.name or 'model'} 1x{T} {c.s.dtype}", f"{t['engine'] * 1e3:.1f} ms",
            f"{t['reference'] * 1e3:.1f} ms (PyTorch eager, SDPA)", rt, "<= 1.2", rt <= 1.2,
            note=f"max |logit difference| / max |logit| = {rel:.1e}"),
        Row("forward TFLOP/s vs matmul rate", f"{achieved / 1e12:.2f} TFLOP/s", f"{rate / 1e12:.2f} TFLOP/s",
            achieved / rate, ">= 0.50", achieved / rate >= 0.5),
    ]
    del ref
    prompt = np.random.default_rng(1).integers(0, cfg.vocab_size, (1, c.s.gen_prompt))
    n = c.s.gen_new
    tg = c.time(lambda: model.generate(prompt, n, temperature=0), max(1, repeats // 2))
    tps = n / tg
    nbytes = np.dtype(c.s.dtype).itemsize
    per_token = nbytes * (cfg.n_params() - cfg.n_ctx * cfg.d_model) + \
        nbytes * 2 * cfg.n_layer * cfg.d_model * (c.s.gen_prompt + n / 2)
    limit = bw / per_token
    rows.append(Row(f"cached generation {c.s.gen_prompt}+{n} greedy", f"{tps:.1f} tok/s",
                    f"{limit:.0f} tok/s bandwidth limit ({per_token / 1e9:.2f} GB per token)", tps / limit,
                    "report", None))
    return rows


def _torch_model(c: Ctx, model: GPT, copy: bool, n_layer: int | None = None):
    from .torch_ref import TorchGPT

    flat = {k: c.to_torch(v, copy=copy) for k, v in tree_flatten(model.params).items()}
    m = TorchGPT(flat, n_layer or model.cfg.n_layer, model.cfg.n_head, model.cfg.layer_norm_epsilon)
    return m


def big_layer(c: Ctx, repeats: int, rate: float) -> list[Row]:
    d, H, T = c.s.layer_d, c.s.layer_heads, c.s.layer_T
    cfg = GPTConfig(n_layer=1, n_head=H, d_model=d, n_ctx=T, vocab_size=8, attention="dense")
    flat = c.params(cfg, c.s.dtype, only_layer0=True)
    p = tree_unflatten(flat, 1)["h"][0]
    x = c.randn((1, T, d), 1.0, c.s.dtype, 7)
    from .torch_ref import TorchGPT

    ref = TorchGPT({k: c.to_torch(v) for k, v in flat.items()}, 1, H)
    tx = c.to_torch(x)

    def engine():
        return block_forward(x, p, BlockShape(H, "dense"))

    def reference():
        with c.torch.no_grad():
            return ref.block(tx, 0)

    t = c.paired({"engine": engine, "reference": reference}, repeats)
    flops = T * (2 * 12 * d * d + 4 * d * (T + 1) / 2)
    ach = flops / t["engine"]
    r = t["engine"] / t["reference"]
    return [Row(f"one layer d={d} ({H} heads), 1x{T} {c.s.dtype}", f"{t['engine'] * 1e3:.1f} ms "
                f"({ach / 1e12:.1f} TFLOP/s, {ach / rate:.0%} of matmul)",
                f"{t['reference'] * 1e3:.1f} ms (PyTorch eager)", r, "report", None)]


def train_step(c: Ctx, repeats: int) -> list[Row]:
    import torch.nn.functional as F

    from engine.optim import AdamW

    torch = c.torch
    cfg = _cfg(c.s.train)
    cfg = dataclasses.replace(cfg, n_ctx=max(cfg.n_ctx, c.s.train_T))
    flat = c.params(cfg, "float32")
    model = GPT(cfg, dtype="float32", backend=c.s.backend, params=tree_unflatten(flat, cfg.n_layer))
    del flat
    ref = _torch_model(c, model, copy=True)
    B, T = c.s.train_B, c.s.train_T
    rng = np.random.default_rng(2)
    ids_np = rng.integers(0, cfg.vocab_size, (B, T))
    tg_np = rng.integers(0, cfg.vocab_size, (B, T))
    ids, tg = c.xp.asarray(ids_np), c.xp.asarray(tg_np)
    tids, ttg = (torch.from_numpy(a).to(c.s.device) for a in (ids_np, tg_np))
    opt = AdamW(tree_flatten(model.params), lr=3e-4, weight_decay=0.1, grad_clip=1.0)
    params = list(ref.parameters())
    topt = torch.optim.AdamW([{"params": [q for q in params if q.dim() >= 2], "weight_decay": 0.1},
                              {"params": [q for q in params if q.dim() < 2], "weight_decay": 0.0}],
                             lr=3e-4, betas=(0.9, 0.95), eps=1e-8)

    def engine():
        loss, grads = model.loss_and_grads(ids, tg)
        opt.step(tree_flatten(grads))
        return loss

    def reference():
        topt.zero_grad(set_to_none=True)
        logits = ref(tids)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ttg.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        topt.step()
        return loss

    l_e = engine()
    l_r = float(reference().detach())
    t = c.paired({"engine": engine, "reference": reference}, repeats)
    r = t["engine"] / t["reference"]
    return [Row(f"training step {cfg.name or 'model'} B{B}xT{T} float32", f"{t['engine'] * 1e3:.1f} ms",
                f"{t['reference'] * 1e3:.1f} ms (PyTorch eager + AdamW)", r, "report", None,
                note=f"first-step loss engine {l_e:.5f}, PyTorch {l_r:.5f}")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu", description="GPU benchmarks (see bench/gpu.sh)")
    ap.add_argument("--cpu-smoke", action="store_true", help="NumPy backend, tiny sizes: check the script")
    ap.add_argument("--out", type=Path, default=None, help="Markdown report to write (default: print only)")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    s = Setup.cpu_smoke() if a.cpu_smoke else Setup.gpu()
    c = Ctx(s)
    desc = c.describe()
    print(desc, flush=True)
    rows, failed = [], False
    rate, bw, r0 = card_rates(c, a.repeats)
    rows += r0
    for name, fn in [("forward + generation", lambda: forward_and_generate(c, a.repeats, rate, bw)),
                     ("175B layer", lambda: big_layer(c, a.repeats, rate)),
                     ("training step", lambda: train_step(c, a.repeats))]:
        t0 = time.time()
        try:
            rows += fn()
        except Exception as e:  # keep going: report what broke next to what worked
            failed = True
            traceback.print_exc()
            rows.append(Row(name, "error", f"{type(e).__name__}: {e}"[:160]))
        print(f"{name}: {time.time() - t0:.1f} s", flush=True)
        if s.backend == "cupy":
            c.xp.get_default_memory_pool().free_all_blocks()
    text = f"Machine: {desc}\n\n" + table(rows) + f"\nmedians of {a.repeats} interleaved runs after a warm-up.\n"
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
        print(f"wrote {a.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
