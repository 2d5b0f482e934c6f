"""kernels.reuse_freed_memory: glibc's malloc keeps the memory of freed arrays (checked in fresh processes)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, json
import numpy as np
import engine
from engine import kernels

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblkhd
a = np.ones(8 << 20, dtype=np.uint8)  # 8 MB: above glibc's starting mmap threshold of 128 KiB
mapped = libc.mallinfo2().hblkhd - before
del a
kept = libc.mallinfo2().fordblks  # free bytes held in the heap after the array is gone
print(json.dumps({"tuned": kernels._MALLOC_TUNED, "mapped": mapped, "kept": kept}))
"""


def _probe(env_value):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["ENGINE_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_arrays_stay_in_the_heap_for_reuse():
    tuned = _probe("")
    assert tuned["tuned"] is True
    assert tuned["mapped"] == 0  # served from the heap, not a fresh mapping
    assert tuned["kept"] >= 8 << 20  # and kept there once freed, ready for the next array
    plain = _probe("system")
    assert plain["tuned"] is None  # never asked
    assert plain["mapped"] >= 8 << 20  # glibc's default: a mapping of its own, returned on free


def test_opting_out_does_nothing():
    from engine import kernels

    assert kernels.reuse_freed_memory("system") is False
    assert kernels.reuse_freed_memory(" System ") is False
