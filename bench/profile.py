"""Where the time goes, per op, on both sides (issue 24): ``python -m bench.profile [--threads N]``.

The engine: timers wrapped around the functions the decoder calls (``kernels.linear``, ``layernorm``,
``gelu``, the attention paths, the embedding), each linear labelled by its weight's shape, and
self time only (a timer inside another is subtracted from it), so the rows add up to the total;
``other`` is what no timer covers (residual adds, reshapes, Python). onnxruntime: its own per-node
profile (``SessionOptions.enable_profiling``), summed by operator type. Both for a prefill of
1 x forward_T tokens and for cached decode steps (one token after a gen_prompt-token prompt).
Prints two tables; nothing is asserted or written.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time

import numpy as np

from engine import GPT, attention, decoder, gemv, kernels, layers

from .common import restore_threads, set_threads


class OpTimer:
    """Self time per label of the wrapped functions (a stack subtracts nested timers)."""

    def __init__(self):
        self.total = collections.Counter()
        self.calls = collections.Counter()
        self._stack: list[list] = []
        self._undo: list = []

    def wrap(self, module, name: str, label=None):
        fn = getattr(module, name)

        def timed(*a, **k):
            key = label(*a) if label else name
            frame = [0.0]  # time spent in nested timers
            self._stack.append(frame)
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                dt = time.perf_counter() - t
                self._stack.pop()
                self.total[key] += dt - frame[0]
                self.calls[key] += 1
                if self._stack:
                    self._stack[-1][0] += dt

        setattr(module, name, timed)
        self._undo.append((module, name, fn))

    def restore(self):
        for module, name, fn in reversed(self._undo):
            setattr(module, name, fn)
        self._undo.clear()


LINEAR_NAMES = {}  # (C_in, C_out) -> name, filled from the config


def _linear_label(x, w, b=None):
    return "linear " + LINEAR_NAMES.get(tuple(w.shape), f"{w.shape[0]}x{w.shape[1]}")


def engine_profile(model, run, steps: int = 1) -> tuple[float, list]:
    """(wall seconds per call, [(label, seconds per call, calls per call)]) of ``run()`` under timers."""
    cfg = model.cfg
    C, F, V = cfg.d_model, cfg.d_ff, cfg.vocab_size
    LINEAR_NAMES.update({(C, 3 * C): "c_attn (q, k, v)", (C, C): "attn c_proj", (C, F): "mlp c_fc",
                         (F, C): "mlp c_proj", (C, V): "unembed (wte.T)"})
    tm = OpTimer()
    tm.wrap(kernels, "linear", _linear_label)
    tm.wrap(kernels, "layernorm", lambda *a: "layernorm")
    tm.wrap(kernels, "gelu", lambda *a: "gelu")
    tm.wrap(layers, "attention_forward", lambda *a: "attention (prefill)")
    tm.wrap(layers, "cached_attention", lambda *a: "attention (cached)")
    tm.wrap(decoder, "embedding_forward", lambda *a: "embedding")
    tm.wrap(attention, "_dense_attention_inference", lambda *a: "attention (prefill)")
    try:
        run()  # warm-up, timers on
        tm.total.clear(), tm.calls.clear()
        t = time.perf_counter()
        for _ in range(steps):
            run()
        wall = (time.perf_counter() - t) / steps
    finally:
        tm.restore()
    rows = [(k, v / steps, tm.calls[k] / steps) for k, v in tm.total.most_common()]
    rows.append(("other (adds, reshapes, Python)", wall - sum(r[1] for r in rows), 0))
    return wall, rows


def ort_profile(model, feeds_fn, steps: int = 1) -> tuple[float, list]:
    """(wall seconds per call, [(op type, seconds per call, nodes per call)]) from onnxruntime's profile."""
    import onnxruntime as ort

    from engine.onnx import to_onnx
    from engine.threads import get_num_threads

    so = ort.SessionOptions()
    so.intra_op_num_threads = get_num_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(to_onnx(model).SerializeToString(), so, providers=["CPUExecutionProvider"])
    calls = feeds_fn()
    for feeds in calls:  # warm-up: its events are dropped below
        sess.run(None, feeds)
    t = time.perf_counter()
    for _ in range(steps):
        for feeds in calls:
            sess.run(None, feeds)
    wall = (time.perf_counter() - t) / steps
    events = json.load(open(sess.end_profiling()))
    runs = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    t0 = runs[len(calls)]  # the first timed run (a model_run event starts where the run starts)
    per_op, nodes = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= t0:
            op = e.get("args", {}).get("op_name", "?")
            per_op[op] += e["dur"] * 1e-6 / steps
            nodes[op] += 1 / steps
    rows = [(k, v, nodes[k]) for k, v in per_op.most_common()]
    rows.append(("other (session, copies)", wall - sum(r[1] for r in rows), 0))
    return wall, rows


def show(title: str, wall: float, rows: list, per: str) -> str:
    lines = [f"{title}: {wall * 1e3:.1f} ms {per}", f"  {'op':34s} {'ms':>9s} {'share':>6s} {'calls':>6s}"]
    for k, v, n in rows:
        lines.append(f"  {k:34s} {v * 1e3:9.2f} {v / wall:6.1%} {n:6.0f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from engine.onnx import empty_past

    from .cpu import Sizes, _cfg

    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps", type=int, default=3, help="timed calls per profile")
    ap.add_argument("--skip-ort", action="store_true")
    a = ap.parse_args(argv)
    threads = set_threads(a.threads)
    try:
        sz = Sizes()
        cfg = _cfg(sz.forward_cfg)
        model = GPT(cfg, seed=0, dtype="float32", backend="numpy")
        T, P, n = sz.forward_T, sz.gen_prompt, 32
        ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, T))
        print(f"{a.threads} threads; load average {os.getloadavg()[0]:.2f}")
        wall, rows = engine_profile(model, lambda: decoder.gpt_forward(model.params, ids, cfg), a.steps)
        print(show(f"engine prefill 1x{T}", wall, rows, "per call"))
        prompt = ids[:, :P]
        from engine.generate import KVCache, decode_params, forward_cached, step_matrices

        steps = decode_params(model.params)  # the layout generate() gives its steps (made once, not timed)
        gemv.tune_one_row(step_matrices(steps))  # and, on one thread, the kernels it measures for them

        def decode():  # n cached steps after a prompt; the prompt's own pass is timed too, but is small
            cache = KVCache(model, 1)
            forward_cached(model, prompt, cache)
            for i in range(n):
                forward_cached(model, ids[:, P + i:P + i + 1], cache, steps)

        wall, rows = engine_profile(model, decode, a.steps)
        print(show(f"engine decode ({P}-token prompt + {n} cached steps)", wall / n,
                   [(k, v / n, c / n) for k, v, c in rows], "per token"))
        if not a.skip_ort:
            past = empty_past(cfg)
            wall, rows = ort_profile(model, lambda: [{"input_ids": ids, **past}], a.steps)
            print(show(f"onnxruntime prefill 1x{T}", wall, rows, "per call"))

            def decode_feeds():  # the same calls as greedy(): the prompt, then one token per call
                import onnxruntime as ort  # noqa: F401

                from engine.onnx import run
                from .ort_ref import ort_session
                sess = ort_session(model)
                feeds, p = [{"input_ids": prompt, **past}], past
                _, p = run(sess, prompt, p, cfg)
                for i in range(n):
                    step = ids[:, P + i:P + i + 1]
                    feeds.append({"input_ids": step, **p})
                    _, p = run(sess, step, p, cfg)
                return feeds

            wall, rows = ort_profile(model, decode_feeds, a.steps)
            print(show(f"onnxruntime decode ({P}-token prompt + {n} cached steps)", wall / n,
                       [(k, v / n, c / n) for k, v, c in rows], "per token"))
    finally:
        restore_threads(threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
