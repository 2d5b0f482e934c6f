"""engine.memory.empty: arrays above glibc's mmap threshold are reused once nobody refers to them, and never
while something does (the caller, a view, a cache)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from engine import GPT, GPTConfig, memory
from engine.decoder import gpt_forward
from engine.generate import KVCache

BIG = (memory.MMAP_THRESHOLD // 4 + 1024,)  # float32 elements: just above the threshold


@pytest.fixture(autouse=True)
def fresh_pool(monkeypatch):
    monkeypatch.delenv("ENGINE_MALLOC", raising=False)
    memory._POOL.clear()
    yield
    memory._POOL.clear()


def addr(a) -> int:
    return a.__array_interface__["data"][0]


def test_a_freed_array_is_handed_out_again():
    a = memory.empty(BIG)
    where = addr(a)
    del a
    b = memory.empty(BIG)
    assert addr(b) == where
    assert memory.pooled_bytes() == (b.nbytes, 0)


def test_an_array_still_held_is_never_handed_out():
    a = memory.empty(BIG)
    a[:] = 1.0
    b = memory.empty(BIG)
    assert addr(b) != addr(a)
    b[:] = 2.0
    assert (a == 1.0).all()  # writing b did not touch a


def test_a_view_keeps_its_array_held():
    a = memory.empty(BIG)
    where = addr(a)
    tail = a[-10:]
    del a
    b = memory.empty(BIG)
    assert addr(b) != where
    del tail, b
    assert addr(memory.empty(BIG)) in {where, addr(memory._POOL[0])}


def test_another_shape_of_the_same_size_reuses_it_and_other_dtypes_too():
    a = memory.empty((2, BIG[0] // 2), np.float32)
    where = addr(a)
    del a
    b = memory.empty((BIG[0] // 2, 2), np.int32)
    assert addr(b) == where and b.shape == (BIG[0] // 2, 2) and b.dtype == np.int32


def test_small_arrays_are_plain_numpy():
    a = memory.empty((1000, 1000))  # 4 MB: malloc keeps these itself (reuse_freed_memory)
    assert a.shape == (1000, 1000) and memory._POOL == []


def test_zeros_are_zero_even_in_a_reused_array():
    a = memory.empty(BIG)
    a[:] = 7.0
    del a
    z = memory.zeros(BIG)
    assert len(memory._POOL) == 1 and not z.any()


def test_the_pool_keeps_at_most_pool_bytes_of_unused_arrays(monkeypatch):
    size = BIG[0] * 4
    monkeypatch.setattr(memory, "POOL_BYTES", 3 * size)
    for k in range(1, 8):  # seven different sizes, each freed at once
        memory.empty((BIG[0] + k * 1024,))
    used, free = memory.pooled_bytes()
    assert used == 0 and free <= 3 * size + 8 * 4096 * 4
    assert len(memory._POOL) <= 3
    held = [memory.empty((BIG[0] + k * 1024 * 16,)) for k in range(1, 6)]  # held arrays are never dropped
    used, _ = memory.pooled_bytes()
    assert used == sum(h.nbytes for h in held)


def test_engine_malloc_system_turns_it_off(monkeypatch):
    monkeypatch.setenv("ENGINE_MALLOC", "system")
    memory.empty(BIG)
    assert memory._POOL == []


def test_threads_never_share_an_array():
    seen, errors = [], []

    def work(value):
        for _ in range(20):
            a = memory.empty(BIG)
            a[:] = value
            seen.append(addr(a))
            if not (a == value).all():
                errors.append(value)
            del a

    ts = [threading.Thread(target=work, args=(float(v),)) for v in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and len(set(seen)) <= 4  # reused, and at most one array per thread at a time


def test_logits_a_caller_keeps_are_not_overwritten_by_the_next_forward():
    cfg = GPTConfig(n_layer=1, n_head=2, d_model=16, n_ctx=512, vocab_size=20_000)  # logits 41 MB
    model = GPT(cfg, seed=0, dtype="float32", backend="numpy")
    rng = np.random.default_rng(0)
    a_ids, b_ids = rng.integers(0, cfg.vocab_size, (1, 512)), rng.integers(0, cfg.vocab_size, (1, 512))
    a = gpt_forward(model.params, a_ids, cfg)
    a_copy = a.copy()
    b = gpt_forward(model.params, b_ids, cfg)
    assert addr(a) != addr(b)
    np.testing.assert_array_equal(a, a_copy)
    where = addr(a)
    del a
    again = gpt_forward(model.params, a_ids, cfg)  # a's array is free now: reused, same numbers
    assert addr(again) == where
    np.testing.assert_array_equal(again, a_copy)


def test_a_kv_cache_made_in_a_reused_array_starts_empty():
    cfg = GPTConfig(n_layer=5, n_head=4, d_model=256, n_ctx=1024, vocab_size=64)  # k, v: 42 MB each for 8 rows
    model = GPT(cfg, seed=0, dtype="float32", backend="numpy")
    shape = (cfg.n_layer, 8, cfg.n_head, cfg.n_ctx, cfg.d_head)
    assert np.prod(shape) * 4 > memory.MMAP_THRESHOLD
    c = KVCache(model, 8)
    c.k[:] = 3.0
    c.v[:] = 3.0
    del c
    c = KVCache(model, 8)
    assert len(memory._POOL) == 2 and not c.k.any() and not c.v.any()
