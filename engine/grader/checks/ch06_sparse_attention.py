"""Chapter 6, Sparse attention: the banded and strided masks, and what each pattern costs."""
from __future__ import annotations

import numpy as np

from ...attention import attention_mask
from ..tasks import task
from ..runner import Fail, as_array, call, number

CH = "06_sparse_attention"


def _mask_case(f, name, T, arg, kind, argname):
    what = f"{name}(T={T}, {argname}={arg})"
    want = attention_mask(kind, T, **{argname: arg})
    got = as_array(call(f, T, arg, name=name, arg_names=["T", argname]), what, want.shape)
    if got.dtype.kind != "b" and not np.isin(got, [0, 1]).all():
        raise Fail(f"{what} should hold True/False (or 1/0), got values like {got.flat[0]!r}")
    got = got.astype(bool)
    future = np.argwhere(np.triu(got, 1))
    if len(future):
        i, j = (int(v) for v in future[0])
        raise Fail(f"{what}: position {i} can see position {j}: your mask is not causal (mask[i, j] must be "
                   "False for every j > i)")
    bad = np.argwhere(got != want)
    if len(bad):
        i, j = (int(v) for v in bad[0])
        verb = "should see" if want[i, j] else "should not see"
        extra = {"banded": f" (it sees itself and the {arg - 1} positions before it: i - {argname} < j <= i)",
                 "strided": f" (it sees the last {arg} positions, itself included, and every position a multiple "
                            f"of {arg} back)"}[kind]
        raise Fail(f"{what}: position {i} {verb} position {j}{extra}; {len(bad)} entries wrong")


band = task("banded_mask", CH, "The banded mask", "banded_mask")


@band.part("random sizes")
def _(f):
    for T, w in [(8, 3), (12, 5), (30, 7), (16, 1)]:
        _mask_case(f, "banded_mask", T, w, "banded", "window")


@band.part("edge cases: T = 1, window >= T")
def _(f):
    for T, w in [(1, 1), (1, 4), (6, 6), (5, 9)]:
        _mask_case(f, "banded_mask", T, w, "banded", "window")


stri = task("strided_mask", CH, "The strided mask", "strided_mask")


@stri.part("random sizes")
def _(f):
    for T, s in [(16, 4), (20, 3), (33, 5)]:
        _mask_case(f, "strided_mask", T, s, "strided", "stride")


@stri.part("edge cases: T = 1, stride 1, stride >= T")
def _(f):
    for T, s in [(1, 1), (1, 4), (7, 1), (5, 8)]:
        _mask_case(f, "strided_mask", T, s, "strided", "stride")


# ---------------------------------------------------------------------- counting
dots = task("dot_products", CH, "Counting the dot products", "dot_products")


BIG = ("; T = 1,000,000 is in the checks: count with a formula or a loop over queries, "
       "a (T, T) mask would need a terabyte")


def ref_dot_products(kind, T, window=256, stride=32) -> int:
    """Kept (query, key) pairs of a layout, without building the (T, T) mask."""
    i = np.arange(T, dtype=np.int64)
    if kind == "dense":
        return T * (T + 1) // 2
    if kind == "banded":
        return int(np.minimum(i + 1, window).sum())
    if kind == "strided":  # the last `stride` positions, plus every stride-th one further back
        return int((np.minimum(i + 1, stride) + i // stride).sum())
    raise ValueError(kind)


def _dots_case(f, kind, T, **kw):
    args = ", ".join(f"{k}={v}" for k, v in kw.items())
    what = f"dot_products({kind!r}, T={T}" + (f", {args})" if args else ")")
    want = ref_dot_products(kind, T, **kw)
    try:
        got = call(f, kind, T, name="dot_products", arg_names=["kind", "T"], timeout=20, **kw)
    except Fail as e:
        raise Fail(str(e) + (BIG if T > 10**5 else "")) from None
    hint = ""
    if not isinstance(got, (int, float, np.integer, np.floating)):
        pass
    elif kind == "dense" and got == T * T:
        hint = "that counts the future too: query i only scores the i + 1 keys 0 .. i, so T (T + 1) / 2"
    elif kind == "banded" and got == T * kw["window"]:
        hint = "the first window - 1 queries have fewer than window keys before them"
    number(got, float(want), what, rtol=0, hint=hint + (BIG[2:] if T > 10**5 and not hint else ""))


@dots.part("dense")
def _(f):
    for T in (1, 2, 10, 2048, 10**6):
        _dots_case(f, "dense", T)


@dots.part("banded")
def _(f):
    for T, w in [(1, 4), (10, 3), (2048, 256), (100, 100), (50, 80), (10**6, 256)]:
        _dots_case(f, "banded", T, window=w)


@dots.part("strided")
def _(f):
    for T, s in [(1, 4), (16, 4), (2048, 45), (100, 7), (10**6, 1000)]:
        _dots_case(f, "strided", T, stride=s)
