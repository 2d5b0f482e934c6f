"""The benchmark harness runs end to end at tiny sizes and produces its table (no timing is asserted)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import common
from bench.cpu import BENCHMARKS, Sizes

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_prints_a_row_per_measurement_and_appends(tmp_path):
    out = tmp_path / "RESULTS.md"
    from bench.__main__ import main

    assert main(["--quick", "--repeats", "1", "--threads", "1", "--results", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmark results")
    assert "Machine: CPU" in text and "threads for both sides" in text
    for name in ["forward", "cached generation", "generation without cache", "training step",
                 "banded (window", "banded growth", "peak memory", "prefill", "vs onnxruntime"]:
        assert name in text, name
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 13  # header + every measurement
    assert "error" not in text
    assert "first-step loss engine" in text  # the training twins start from the same weights
    # a second run appends a second section rather than overwriting
    assert main(["--quick", "--only", "banded", "--repeats", "1", "--threads", "1", "--results", str(out)]) == 0
    assert out.read_text().count("## CPU benchmarks") == 2


def test_results_json_keeps_the_latest_row_of_each_benchmark_and_thread_count(tmp_path):
    path = tmp_path / "results.json"
    fast = common.Row("prefill", "1 ms", "2 ms", 0.5, "<= 1.0", True, against="onnxruntime")
    slow = common.Row("decode", "5 tok/s", "10 tok/s", 0.5, ">= 1.0", False, against="onnxruntime")
    common.write_json([fast, slow], "machine A", 1, (0.1, 0.2), path)
    common.write_json([common.Row("prefill", "4 ms", "2 ms", 2.0, "<= 1.0", False)], "machine B", 1, (1, 2), path)
    common.write_json([fast], "machine C", 2, (0, 0), path)
    common.write_json([fast], "machine D", 1, (0, 0), path, variant="other BLAS")
    common.write_json([common.Row("decode", "error", "boom")], "machine E", 1, (0, 0), path)  # errors kept out
    rows = {(e["name"], e["threads"], e["variant"]): e for e in json.loads(path.read_text())["rows"]}
    assert set(rows) == {("prefill", 1, ""), ("decode", 1, ""), ("prefill", 2, ""), ("prefill", 1, "other BLAS")}
    assert rows["prefill", 1, ""]["machine"] == "machine B" and rows["prefill", 1, ""]["ratio"] == 2.0
    assert rows["prefill", 1, ""]["speedup"] == 0.5  # a time ratio (target "<="), inverted
    assert rows["decode", 1, ""]["speedup"] == 0.5 and rows["decode", 1, ""]["load_after"] == 0.2
    assert rows["prefill", 2, ""]["machine"] == "machine C"
    report = common.Row("step", "3 ms", "2 ms", 1.5, "report", None, extra={"engine": 3, "reference": 2, "unit": "ms"})
    assert report.speedup == 1 / 1.5  # a time ratio by its unit, when the target does not say


def test_hf_twin_has_the_engines_weights():
    import torch

    from bench.cpu import hf_twin
    from engine import GPT, GPTConfig

    m = GPT(GPTConfig(n_layer=2, n_head=2, d_model=16, n_ctx=12, vocab_size=31), seed=4)
    ids = np.random.default_rng(0).integers(0, 31, (2, 12))
    with torch.no_grad():
        ref = hf_twin(m)(torch.from_numpy(ids)).logits.numpy()
    assert np.abs(m.forward(ids) - ref).max() < 1e-5


def test_torch_reference_model_matches_the_engine():
    import torch

    from bench.torch_ref import TorchGPT
    from engine import GPT, GPTConfig
    from engine.model import tree_flatten

    m = GPT(GPTConfig(n_layer=2, n_head=2, d_model=16, n_ctx=12, vocab_size=31), seed=5, dtype="float64")
    flat = {k: torch.from_numpy(v.copy()) for k, v in tree_flatten(m.params).items()}
    ids = np.random.default_rng(1).integers(0, 31, (2, 12))
    with torch.no_grad():
        ref = TorchGPT(flat, 2, 2)(torch.from_numpy(ids)).numpy()
    assert np.abs(m.forward(ids) - ref).max() < 1e-12


def test_onnxruntime_reference_runs_the_engines_graph_on_the_same_threads():
    pytest.importorskip("onnxruntime")
    from bench.ort_ref import bench_onnx, ort_session
    from engine import GPT, GPTConfig
    from engine.onnx import empty_past, run

    m = GPT(GPTConfig(n_layer=2, n_head=2, d_model=16, n_ctx=12, vocab_size=31), seed=6)
    threads = common.set_threads(1)
    try:
        sess = ort_session(m)
        assert sess.get_session_options().intra_op_num_threads == 1
        ids = np.random.default_rng(3).integers(0, 31, (1, 12))
        assert np.abs(run(sess, ids, empty_past(m.cfg), m.cfg)[0] - m.forward(ids)).max() < 1e-5
        prefill, decode = bench_onnx(Sizes.quick(), 1)
    finally:
        common.restore_threads(threads)
    assert "1x64 vs onnxruntime" in prefill.name and "8+8" in decode.name
    assert "1 intra-op threads" in prefill.reference
    assert prefill.ratio > 0 and decode.ratio > 0
    assert "identical for 100% of positions" in decode.note  # the same greedy tokens on both sides


def test_memprobe_reports_consistent_numbers():
    arg = json.dumps({"cfg": dict(n_layer=1, n_head=2, d_model=16, n_ctx=32, vocab_size=50), "prompt": 4,
                      "new": 4})
    out = subprocess.run([sys.executable, "-m", "bench.memprobe", arg], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["weights"] == 4 * (50 * 16 + 32 * 16 + 12 * 16 * 16 + 13 * 16 + 2 * 16)  # params of that model
    assert m["kv_cache"] == 2 * 1 * 32 * 16 * 4
    assert m["traced_peak"] >= m["kv_cache"]  # the preallocated cache is inside the traced peak
    assert m["rss_baseline"] > 0
    assert m["rss_growth"] >= 0


def test_memprobe_peak_is_the_childs_own_even_under_a_big_parent():
    """ru_maxrss would report the parent's peak in the child; the probe must not."""
    code = ("import numpy as np, subprocess, sys, json; big = np.ones(300_000_000 // 8); big += 1; "
            "arg = json.dumps({'cfg': dict(n_layer=1, n_head=2, d_model=16, n_ctx=32, vocab_size=50), "
            "'prompt': 4, 'new': 4}); "
            "out = subprocess.run([sys.executable, '-m', 'bench.memprobe', arg], capture_output=True, "
            "text=True, check=True); print(out.stdout.strip().splitlines()[-1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0 <= m["rss_growth"] < 100e6 and m["rss_baseline"] < 250e6  # not the parent's 300 MB


def test_gpu_script_cpu_smoke(tmp_path):
    """bench/gpu.sh --cpu-smoke: the GPU script's code paths on NumPy, writing its report."""
    env = {"PATH": "/usr/bin:/bin", "OUT": str(tmp_path), "PYTHON": sys.executable, "GPU_BENCH_REPEATS": "1",
           "HOME": str(tmp_path)}
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--cpu-smoke"], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=600)
    report = (tmp_path / "gpu-results.md").read_text()
    assert r.returncode == 0, report
    assert "CuPy parity tests" in report and "skipped" in report
    for name in ["matmul", "copy bandwidth", "forward", "TFLOP/s", "cached generation", "one layer",
                 "training step"]:
        assert name in report, name
    assert "error" not in (tmp_path / "gpu-bench.md").read_text()


def test_bad_arguments_are_refused():
    from bench.__main__ import parse

    with pytest.raises(SystemExit):
        parse(["--only", "nonsense"])
    with pytest.raises(SystemExit):
        parse(["--repeats", "0"])


def test_table_marks_missed_targets():
    rows = [common.Row("a", "1 ms", "2 ms", 0.5, "<= 0.95", True), common.Row("b", "3 ms", "1 ms", 3.0, "<= 1.3",
                                                                              False, note="slow")]
    t = common.table(rows)
    assert "| a | 1 ms | 2 ms | 0.500 | <= 0.95 | yes |" in t
    assert "**no**" in t and "- b: slow" in t


def test_sizes_cover_every_benchmark():
    assert set(BENCHMARKS) == {"forward", "generate", "train", "banded", "memory", "onnx"}
    q = Sizes.quick()
    assert q.band_T_small < q.band_T < q.band_T_large and q.gen_new >= 1


def test_machine_probes_compute_what_their_rates_claim():
    fn, flops = common.matmul_probe(8, 4, 2)
    y = fn()
    assert y.shape == (8, 2) and flops == 2 * 8 * 4 * 2
    fn3, flops3 = common.matmul_probe(8, 4, 2, calls=3)  # three products: three times the arithmetic
    np.testing.assert_allclose(fn3(), y, rtol=1e-6)
    assert flops3 == 3 * flops
    probes, nbytes = common.bandwidth_probes(1 << 20)
    assert nbytes == 1 << 20 and set(probes) == {"bw A x", "bw x A"}
    rows = nbytes // (4 * 4096)
    assert probes["bw A x"]().shape == (rows,) and probes["bw x A"]().shape == (4096,)
    assert float(probes["bw A x"]()[0]) == 4096.0  # a matrix of ones: every row sums to its width
    assert common.read_bandwidth(1 << 20, repeats=1) > 0 and common.matmul_rate(8, 4, 2, repeats=1) > 0
