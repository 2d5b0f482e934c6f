"""What every benchmark shares: thread control, timing, machine rates, the table and RESULTS.md.

Timings are medians of ``repeats`` runs after one warm-up run. When an engine
function is compared with its reference, the runs alternate (engine, reference,
engine, ...) so that a burst of load from other processes on a shared machine
hits both sides alike; only ratios taken this way are reported as targets.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).with_name("RESULTS.md")
RESULTS_JSON = Path(__file__).with_name("results.json")  # the latest row of each benchmark, per thread count


# ---------------------------------------------------------------------- threads
def set_threads(n: int) -> dict:
    """Give NumPy's BLAS, the engine's element-wise passes and PyTorch the same number of threads.

    Returns what is in effect."""
    from engine import kernels

    info = {"threads": n, "blas": "unknown"}
    kernels.set_num_threads(n)
    info["_restore_engine"] = lambda: kernels.set_num_threads(None)
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        info["_restore_blas"] = threadpool_limits(limits=n).restore_original_limits
        pools = threadpool_info()
        blas = [p for p in pools if p.get("user_api") == "blas"]
        if blas:
            b = blas[0]
            info["blas"] = f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')}), " \
                           f"{b.get('num_threads')} threads"
    except ImportError:  # without threadpoolctl, the environment variables set before import decide
        info["blas"] = "see numpy.show_config(); threads from OMP/OPENBLAS_NUM_THREADS"
    try:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(n)
        info["torch_threads"] = torch.get_num_threads()
        info["_restore_torch"] = lambda: torch.set_num_threads(before)
    except ImportError:
        pass
    return info


def restore_threads(info: dict) -> None:
    """Undo ``set_threads`` (for callers such as tests that go on in the same process)."""
    for key in ("_restore_blas", "_restore_torch", "_restore_engine"):
        if key in info:
            info.pop(key)()


# ---------------------------------------------------------------------- timing
def median_time(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


# A multi-threaded BLAS call leaves its worker threads spinning for a while: after one NumPy sgemm,
# OpenBLAS's worker burnt 110 ms of a core while the caller slept (PyTorch's: 10 ms). Measured
# back to back, that would be charged to whichever side runs next (the engine's forward ran 2% slower
# right after the sgemm probe), so every timed run starts this long after the previous one ended.
SETTLE_S = 0.2


def paired_times(fns: dict, repeats: int = 5, warmup: int = 1, settle: float = SETTLE_S) -> dict:
    """Median time of each function in ``fns`` ({name: fn}), the runs interleaved round-robin, each
    ``settle`` seconds after the previous run ended (untimed), so that no side pays for the threads
    another left spinning."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            time.sleep(settle)
            t = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in ts.items()}


# ---------------------------------------------------------------------- machine rates
def matmul_probe(n: int = 1024, k: int = 768, m: int = 3072, dtype=np.float32, calls: int = 1):
    """(fn, flops): ``calls`` NumPy (BLAS) (n, k) @ (k, m) matrix products in a row, to time next to the
    code it is compared with (``paired_times``), so that both see the same moments of a noisy machine.
    Give ``calls`` enough for about as much arithmetic as that code: one 30 ms product samples a
    moment, and on a shared machine its rate swung 65-91 GFLOP/s (one thread) between runs of a 3 s
    forward pass; as many products as the forward does spans the same stretch of the machine's load."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, k), dtype=dtype)
    b = rng.standard_normal((k, m), dtype=dtype)
    out = np.empty((n, m), dtype=dtype)

    def fn():
        for _ in range(calls):
            np.matmul(a, b, out=out)
        return out

    return fn, 2.0 * n * k * m * calls


def matmul_rate(n: int = 1024, k: int = 768, m: int = 3072, repeats: int = 5, dtype=np.float32) -> float:
    """NumPy (BLAS) matrix-multiply rate in FLOP/s for an (n, k) @ (k, m) product."""
    fn, flops = matmul_probe(n, k, m, dtype)
    return flops / median_time(fn, repeats)


def bandwidth_probes(nbytes: int = 256 << 20):
    """({name: fn}, nbytes): float32 matrix-vector products over ``nbytes`` of matrix, one per orientation.

    That is the very operation one cached generation step is made of (every weight read once),
    run by the same BLAS, on a matrix far larger than the caches. BLAS streams a row-major matrix
    at different rates for y = A x (dot products along rows) and y = x A (rows scaled and
    added); the faster of the two is taken as the limit (``nbytes`` / its time).
    """
    cols = 4096
    rows = max(1, nbytes // (4 * cols))
    a = np.ones((rows, cols), dtype=np.float32)
    x_cols = np.ones(cols, dtype=np.float32)
    x_rows = np.ones(rows, dtype=np.float32)
    return {"bw A x": lambda: a @ x_cols, "bw x A": lambda: x_rows @ a}, a.nbytes


def read_bandwidth(nbytes: int = 256 << 20, repeats: int = 5) -> float:
    """Memory read bandwidth in bytes/s, measured with ``bandwidth_probes``."""
    probes, size = bandwidth_probes(nbytes)
    return size / min(median_time(fn, repeats) for fn in probes.values())


def machine_description(threads: dict) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [f"CPU {cpu}, {os.cpu_count()} logical cores", f"{threads['threads']} threads for both sides",
             f"BLAS {threads['blas']}", f"Python {platform.python_version()}", f"NumPy {np.__version__}"]
    try:
        import torch

        parts.append(f"PyTorch {torch.__version__}")
    except ImportError:
        pass
    try:
        import transformers

        parts.append(f"transformers {transformers.__version__}")
    except ImportError:
        pass
    try:
        import onnxruntime

        parts.append(f"onnxruntime {onnxruntime.__version__}")
    except ImportError:
        pass
    blas_env = [f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.get(k)]
    if blas_env:  # OPENBLAS_CORETYPE picks the BLAS's kernels (Haswell: AVX2, SkylakeX: AVX-512)
        parts.append("environment " + " ".join(blas_env))
    try:
        parts.append(f"load average before the run {os.getloadavg()[0]:.2f}")
    except OSError:
        pass
    return "; ".join(parts)


# ---------------------------------------------------------------------- the table
@dataclass
class Row:
    """One line of the table: what was measured, the two numbers, their ratio and the target."""
    name: str
    engine: str
    reference: str
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)
    against: str = ""  # the reference's family, for the book's plot: "onnxruntime", "transformers", ...

    @property
    def speedup(self) -> float | None:
        """The engine's speed relative to the reference (> 1: the engine is faster or closer to the
        limit), whichever way the ratio is taken: a time ratio (target "<=", or numbers in ms) is inverted."""
        if self.ratio is None or not self.ratio:
            return None
        time_ratio = self.extra.get("unit") == "ms" or self.target.startswith("<=")
        return 1.0 / self.ratio if time_ratio else self.ratio


def fmt_ratio(r) -> str:
    return "" if r is None else f"{r:.3f}"


def table(rows: list[Row]) -> str:
    """A Markdown table of the rows."""
    head = "| benchmark | engine | reference | ratio | target | met |\n|---|---|---|---|---|---|\n"
    lines = []
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.name} | {r.engine} | {r.reference} | {fmt_ratio(r.ratio)} | {r.target} | {met} |")
    notes = [f"- {r.name}: {r.note}" for r in rows if r.note]
    return head + "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "") + "\n"


def append_results(text: str, title: str, machine: str, path: Path = RESULTS) -> None:
    """Append a dated section to RESULTS.md (created with a header if missing)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if not path.exists():
        path.write_text("# Benchmark results\n\nAppended by `python -m bench` (newest last).\n")
    with path.open("a") as f:
        f.write(f"\n## {title}, {stamp}\n\nMachine: {machine}\n\n{text}")


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def write_json(rows: list[Row], machine: str, threads: int, when_load: tuple, path: Path = RESULTS_JSON,
               variant: str = "") -> None:
    """Merge ``rows`` into the machine-readable results (the book's chapter 9 reads them).

    The file keeps the latest row of each (benchmark, thread count, variant): a run of a few
    benchmarks replaces only those. ``when_load``: (load average before, after the run).
    ``variant``: what else sets this run apart ("" for the standard one)."""
    data = json.loads(path.read_text()) if path.exists() else {}
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    new = {(r.name, threads, variant): r for r in rows if r.engine != "error"}
    kept = [e for e in data.get("rows", []) if (e["name"], e["threads"], e.get("variant", "")) not in new]
    for r in new.values():
        kept.append({"name": r.name, "threads": threads, "variant": variant, "against": r.against, "engine": r.engine,
                     "reference": r.reference, "ratio": r.ratio, "speedup": r.speedup, "target": r.target,
                     "met": r.met, "note": r.note, "values": r.extra, "when": stamp, "machine": machine,
                     "load_before": when_load[0], "load_after": when_load[1]})
    kept.sort(key=lambda e: (e.get("variant", ""), e["threads"], e["name"]))
    data = {"about": "Written by python -m bench: the latest result of each benchmark per thread count "
                     "(bench/RESULTS.md has every run). ratio: as in the table; speedup: the engine's speed "
                     "relative to the reference (> 1: faster).", "rows": kept}
    path.write_text(json.dumps(data, indent=1) + "\n")
