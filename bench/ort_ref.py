"""onnxruntime as a reference (issue 24): the runtime people deploy GPT-2 with on a CPU.

The graph is the engine's own export (``engine.onnx``: the same weights, the key/value cache as
inputs and outputs), run by onnxruntime's CPU provider with as many intra-op threads as the engine
has (``set_threads``), one inter-op thread, every graph optimisation on. Its threads do not spin
while idle: in interleaved runs a spinning pool would take cores from the engine's turn.

1. prefill, 1 x forward_T tokens: every position's logits on both sides (the graph also returns
   the filled cache, a copy of each layer's keys and values);
2. cached greedy decode, gen_prompt + gen_new tokens: ``model.generate(temperature=0)`` against
   ``engine.onnx.greedy`` (the prompt in one call, then one token per call); the tokens compared.
"""
from __future__ import annotations

import numpy as np

from engine import GPT
from engine.decoder import gpt_forward
from engine.threads import get_num_threads

from .common import Row, paired_times


def ort_session(model: GPT, threads: int | None = None):
    """An onnxruntime session of ``model``'s exported graph, on ``threads`` intra-op threads
    (default: the engine's own count)."""
    import onnxruntime as ort

    from engine.onnx import to_onnx

    blob = to_onnx(model).SerializeToString()  # in memory: GPT-2 124M is 0.5 GB, under protobuf's 2 GB
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or get_num_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])


def bench_onnx(sz, repeats: int) -> list[Row]:
    """Prefill and cached greedy decode against onnxruntime on the engine's exported graph."""
    import onnxruntime as ort

    from engine.onnx import empty_past, greedy, run

    from .cpu import _cfg

    cfg = _cfg(sz.forward_cfg)
    model = GPT(cfg, seed=0, dtype="float32", backend="numpy")
    sess = ort_session(model)
    T, n = sz.forward_T, sz.gen_new
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, T))
    prompt = np.random.default_rng(1).integers(0, cfg.vocab_size, (1, sz.gen_prompt))
    past = empty_past(cfg)

    def engine_prefill():
        return gpt_forward(model.params, ids, cfg)

    def ort_prefill():
        return run(sess, ids, past, cfg)[0]

    def engine_decode():
        return model.generate(prompt, n, temperature=0)

    def ort_decode():
        return greedy(sess, prompt, n, cfg)

    err = float(np.abs(engine_prefill() - ort_prefill()).max())
    tokens_e, tokens_o = engine_decode()[0, -n:], ort_decode()[0, -n:]
    same = float((tokens_e == tokens_o).mean())
    t = paired_times({"engine": engine_prefill, "ort": ort_prefill}, repeats)
    g = paired_times({"engine": engine_decode, "ort": ort_decode}, repeats)
    r = t["engine"] / t["ort"]
    e_tps, o_tps = n / g["engine"], n / g["ort"]
    threads = sess.get_session_options().intra_op_num_threads
    ref = f"onnxruntime {ort.__version__}, {threads} intra-op threads"
    return [
        Row(f"prefill {cfg.name or 'model'} 1x{T} vs onnxruntime", f"{t['engine'] * 1e3:.0f} ms",
            f"{t['ort'] * 1e3:.0f} ms ({ref})", r, "<= 1.0", r <= 1.0,
            note=f"every position's logits on both sides; max |logit difference| {err:.1e}",
            against="onnxruntime", extra={"engine": t["engine"] * 1e3, "reference": t["ort"] * 1e3, "unit": "ms"}),
        Row(f"cached greedy decode {sz.gen_prompt}+{n} vs onnxruntime", f"{e_tps:.1f} tok/s",
            f"{o_tps:.1f} tok/s ({ref})", e_tps / o_tps, ">= 1.0", e_tps / o_tps >= 1.0,
            note=f"engine.onnx.greedy on the exported graph; greedy tokens identical for {same:.0%} of "
                 "positions", against="onnxruntime",
            extra={"engine": e_tps, "reference": o_tps, "unit": "tok/s"}),
    ]
