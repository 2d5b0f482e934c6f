"""python -m bench [--quick] [--only forward,generate,train,banded,memory,onnx] [--repeats N] [--threads N]

Runs each CPU benchmark next to its reference in this process (same machine, same thread
count for NumPy's BLAS, PyTorch and onnxruntime), prints a table of ratios against the targets of issue 6
and appends it, with a description of the machine, to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from .common import (RESULTS, RESULTS_JSON, Row, append_results, load_average, machine_description,
                     restore_threads, set_threads, table, write_json)


def parse(argv=None):
    from .cpu import BENCHMARKS

    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness, numbers mean nothing")
    ap.add_argument("--only", default=",".join(BENCHMARKS),
                    help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 5; 2 quick)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads for NumPy's BLAS, PyTorch and onnxruntime alike (default: all cores)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to append to")
    ap.add_argument("--json", type=Path, default=RESULTS_JSON,
                    help="machine-readable results to update (full runs only; the book reads it)")
    ap.add_argument("--variant", default="",
                    help="a label for a non-standard run (e.g. another BLAS kernel): kept apart in the JSON")
    ap.add_argument("--no-append", action="store_true", help="print only; touch neither RESULTS.md nor the JSON")
    a = ap.parse_args(argv)
    names = [s.strip() for s in a.only.split(",") if s.strip()]
    bad = [n for n in names if n not in BENCHMARKS]
    if bad:
        ap.error(f"unknown benchmark(s) {bad}; choose from {list(BENCHMARKS)}")
    if a.repeats is not None and a.repeats < 1:
        ap.error("--repeats must be at least 1")
    if a.threads < 1:
        ap.error("--threads must be at least 1")
    a.names = names
    return a


def main(argv=None) -> int:
    a = parse(argv)
    threads = set_threads(a.threads)
    try:
        return _run(a, threads)
    finally:
        restore_threads(threads)


def _run(a, threads) -> int:
    from tqdm import tqdm

    from .cpu import BENCHMARKS, Sizes

    sizes = Sizes.quick() if a.quick else Sizes()
    repeats = a.repeats or (2 if a.quick else 5)
    machine = machine_description(threads)
    load0 = load_average()
    print(machine, flush=True)
    rows: list[Row] = []
    failed = False
    t0 = time.time()
    bar = tqdm(a.names, desc="benchmarks", unit="bench", file=sys.stderr)
    for name in bar:
        bar.set_postfix_str(name)
        try:
            rows.extend(BENCHMARKS[name](sizes, repeats))
        except Exception as e:  # report and go on: one broken reference must not hide the rest
            failed = True
            traceback.print_exc()
            rows.append(Row(name, "error", f"{type(e).__name__}: {e}"[:120]))
    text = table(rows)
    mode = "quick (tiny sizes, harness check only)" if a.quick else "full"
    load1 = load_average()
    text += (f"\n{mode}; medians of {repeats} interleaved runs after a warm-up; {time.time() - t0:.0f} s in all; "
             f"load average {load0} before, {load1} after.\n")
    print(text)
    if not a.no_append:
        title = f"CPU benchmarks ({mode}{', ' + a.variant if a.variant else ''})"
        append_results(text, title, machine, a.results)
        print(f"appended to {a.results}")
        if not a.quick:
            write_json(rows, machine, threads["threads"], (load0, load1), a.json, a.variant)
            print(f"updated {a.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
