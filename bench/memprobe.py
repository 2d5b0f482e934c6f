"""Peak memory of cached generation, measured in a fresh interpreter (run by ``bench.cpu.bench_memory``).

Two methods, both printed as one JSON line:

* peak RSS: the process's peak resident set after generating, minus the same figure taken right
  after the imports (the interpreter + NumPy + engine baseline). Weights are created in place, one
  tensor at a time, so building them adds no temporary copies to the peak. On Linux the peak is
  read from /proc/self/status (VmHWM): ``ru_maxrss`` itself would start at the *parent's* peak,
  which Linux carries across fork + exec into the child, hiding everything below it.
* tracemalloc: NumPy reports its array allocations to tracemalloc, so the traced peak during a
  second generate() call is exactly the extra memory generation allocates (KV cache, activations,
  logits), to which we add the weights' bytes. It counts the whole preallocated KV cache, while
  ru_maxrss counts only the pages actually touched.

Usage: python -m bench.memprobe '{"cfg": "gpt2-124m", "prompt": 32, "new": 128}'
"""
from __future__ import annotations

import json
import math
import resource
import sys
import tracemalloc


def _maxrss() -> int:
    """Peak resident set size of this process, in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux


def main(argv=None) -> dict:
    args = json.loads((argv or sys.argv[1:])[0])
    import numpy as np

    from engine import GPT, GPTConfig
    from engine.model import tree_unflatten

    base = _maxrss()
    cfg = GPTConfig.preset(args["cfg"]) if isinstance(args["cfg"], str) else GPTConfig(**args["cfg"])
    rng = np.random.default_rng(0)
    flat = {}
    for name, shape in cfg.param_shapes().items():
        a = np.empty(shape, np.float32)
        rng.standard_normal(out=a, dtype=np.float32)  # in place: no temporary
        a *= np.float32(0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith("c_proj.w") else 0.02)
        flat[name] = a
    model = GPT(cfg, dtype="float32", backend="numpy", params=tree_unflatten(flat, cfg.n_layer))
    weights = sum(a.nbytes for a in flat.values())
    kv_bytes = cfg.memory_bytes("float32", batch=1)["kv_cache"]  # what KVCache preallocates: n_ctx positions
    prompt = rng.integers(0, cfg.vocab_size, (1, args["prompt"]))
    model.generate(prompt, args["new"], temperature=0)
    rss_growth = _maxrss() - base
    tracemalloc.start()
    model.generate(prompt, args["new"], temperature=0)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out = {"weights": weights, "kv_cache": kv_bytes, "rss_growth": rss_growth, "traced_peak": traced_peak,
           "rss_baseline": base}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
