"""How fast each library streams GPT-2's weights in a one-row product (issue 24): ``python -m bench.gemv``.

A cached generation step multiplies one row by every weight matrix, so its speed is set by the rate
at which a matrix-vector kernel reads those matrices from memory. This probe measures that rate, in
GB/s of matrix read, for each GPT-2 124M weight shape and the kernels below on the same machine, threads
and moment (runs interleaved, medians):

- ``numpy``: NumPy's BLAS (OpenBLAS in the wheels) on the matrices as the engine's ``generate``
  holds them (``generate.decode_params``: c_proj from a transposed copy, wte as stored);
- ``vecmat``: ``gemv.vecmat``, NumPy's own loop without the BLAS, on the same matrices;
- ``engine``: ``kernels.linear`` on the same matrices: on one thread whichever of the two
  ``gemv.tune_one_row`` measured faster for the shape (it runs first), on two the BLAS;
- ``torch``: PyTorch's ``matmul`` on the same arrays (shared memory, the same layout);
- ``onnxruntime``: a graph of ``MatMul`` nodes with the matrices as initializers (the way the
  exported decoder holds them: its CPU provider may prepack them into its own layout).

Each shape is measured over 12 matrices of it (a layer's worth each, together far larger than the
caches), the unembedding over wte itself. Nothing is asserted or written; the table is printed.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from .common import restore_threads, set_threads

# GPT-2 124M: (C_in, C_out) of x @ w per layer, and the unembedding x @ wte.T
SHAPES = {"attn c_attn": (768, 2304), "attn c_proj": (768, 768), "mlp c_fc": (768, 3072),
          "mlp c_proj": (3072, 768), "unembedding wte.T": (768, 50257)}
COPIES = 12


def _matrices(name, shape, rng):
    """The matrices of one shape, each (C_in, C_out), laid out as the engine's decode holds them."""
    from engine.gemv import gemv_layout

    if name.startswith("unembedding"):
        wte = rng.standard_normal(shape[::-1], dtype=np.float32)  # (V, C), as the model stores it
        return [wte.T]
    return [gemv_layout(rng.standard_normal(shape, dtype=np.float32)) for _ in range(COPIES)]


def _ort_session(ws, threads):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    c_in = ws[0].shape[0]
    nodes, inits, outs = [], [], []
    for i, w in enumerate(ws):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w), f"w{i}"))
        nodes.append(helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"]))
        outs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, w.shape[1]]))
    graph = helper.make_graph(nodes, "gemv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in])],
                              outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def rates(threads: int, repeats: int = 9, seed: int = 0) -> dict:
    """{shape name: {kernel: GB/s}} of one-row products, the kernels interleaved."""
    from engine.gemv import tune_one_row, vecmat
    from engine.kernels import linear

    info = set_threads(threads)
    try:
        rng = np.random.default_rng(seed)
        out = {}
        for name, shape in SHAPES.items():
            ws = _matrices(name, shape, rng)
            x = rng.standard_normal((1, shape[0]), dtype=np.float32)
            tune_one_row(ws)
            fns = {"numpy": lambda: [x @ w for w in ws], "vecmat": lambda: [vecmat(x, w) for w in ws],
                   "engine": lambda: [linear(x, w) for w in ws]}
            try:
                import torch

                tx, tws = torch.from_numpy(x), [torch.from_numpy(w) if w.flags.c_contiguous
                                                 else torch.from_numpy(w.T).T for w in ws]
                fns["torch"] = lambda: [torch.matmul(tx, tw) for tw in tws]
            except ImportError:
                pass
            try:
                sess = _ort_session(ws, threads)
                fns["onnxruntime"] = lambda: sess.run(None, {"x": x})
            except ImportError:
                pass
            ref = ws[0] if len(ws) == 1 else None
            if ref is not None:  # the kernels compute the same product
                np.testing.assert_allclose(fns["engine"]()[0], x @ ref, rtol=1e-3, atol=1e-3)
                if "torch" in fns:
                    np.testing.assert_allclose(fns["torch"]()[0].numpy(), x @ ref, rtol=1e-3, atol=1e-3)
            times = {k: [] for k in fns}
            for fn in fns.values():
                fn()
            for _ in range(repeats):
                for k, fn in fns.items():
                    t = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t)
            nbytes = sum(w.nbytes for w in ws)
            out[name] = {k: nbytes / statistics.median(v) / 1e9 for k, v in times.items()}
            del fns, ws
    finally:
        restore_threads(info)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args(argv)
    for n in args.threads:
        r = rates(n, args.repeats)
        kernels = list(next(iter(r.values())))
        print(f"\none-row products, GB/s of matrix read, {n} thread(s), medians of {args.repeats} interleaved passes")
        print("| w (C_in, C_out) | " + " | ".join(kernels) + " |")
        print("|---|" + "---|" * len(kernels))
        for name, row in r.items():
            print(f"| {name} {SHAPES[name]} | " + " | ".join(f"{row[k]:.1f}" for k in kernels) + " |")
        # a whole step's products at these rates, per token (12 layers; wte once)
        per_token = {k: sum(4 * SHAPES[s][0] * SHAPES[s][1] * (1 if s.startswith("unembedding") else 12)
                            / (row[k] * 1e9) for s, row in r.items()) * 1e3 for k in kernels}
        print("one token's 49 products at these rates: " + ", ".join(f"{k} {v:.1f} ms" for k, v in per_token.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
