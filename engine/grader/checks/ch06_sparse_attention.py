"""Chapter 6, Sparse attention: the banded and strided masks, and what each pattern costs."""
from __future__ import annotations

import numpy as np

from ...attention import attention_mask
from ..tasks import task
from ..runner import Fail, as_array, call, number

CH = "06_sparse_attention"


def _mask_mistakes(kind, arg, argname):
    """(hint, mask of (i, j)) for the masks that typical mistakes give; i, j broadcast to (T, T)."""
    a = argname
    if kind == "banded":
        return [
            (f"that is the mask of i - j <= {a}: position i sees {a} + 1 positions. It sees itself and the "
             f"{a} - 1 before it: i - j < {a}", lambda i, j: (j <= i) & (i - j <= arg)),
            (f"that is the mask of i - j < {a} - 1: position i sees only {a} - 1 positions. It sees itself and "
             f"the {a} - 1 before it: i - j < {a}", lambda i, j: (j <= i) & (i - j < arg - 1)),
            ("position i must see itself (the diagonal): keep j <= i, not j < i", lambda i, j: (j < i) & (i - j < arg)),
        ]
    local, back = (lambda i, j: (j <= i) & (i - j < arg)), (lambda i, j: (j <= i) & ((i - j) % arg == 0))
    return [
        (f"you kept only the positions a multiple of {a} back; it also sees the last {a} positions "
         f"(i - j < {a})", back),
        (f"you kept only the last {a} positions; it also sees every earlier position a multiple of {a} back "
         f"((i - j) % {a} == 0)", local),
        (f"the far positions are those a multiple of {a} *back from i*, (i - j) % {a} == 0, not the positions j "
         f"that are multiples of {a} (j % {a} == 0)", lambda i, j: local(i, j) | ((j <= i) & (j % arg == 0))),
        ("position i must see itself (the diagonal): keep j <= i, not j < i",
         lambda i, j: (j < i) & ((i - j < arg) | ((i - j) % arg == 0))),
    ]


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
        ii, jj = np.arange(T)[:, None], np.arange(T)[None, :]
        found = next((h for h, m in _mask_mistakes(kind, arg, argname)
                      if not np.array_equal(m(ii, jj), want) and np.array_equal(m(ii, jj), got)), "")
        raise Fail(f"{what}: position {i} {verb} position {j}{extra}; {len(bad)} entries wrong"
                   + (f". {found[0].upper()}{found[1:]}" if found else ""))


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


def _dots_mistakes(kind, T, window=256, stride=32):
    """(hint, count) for the counts that typical mistakes give, computed without a (T, T) mask."""
    i = np.arange(T, dtype=np.int64)
    if kind == "dense":
        return [("that counts the future too: query i only scores the i + 1 keys 0 .. i, so T (T + 1) / 2", T * T),
                ("query i also scores its own key: i + 1 keys (0 .. i), so T (T + 1) / 2", T * (T - 1) // 2)]
    if kind == "banded":
        w = window
        return [("the first window - 1 queries have fewer than window keys before them", T * w),
                ("query i scores min(i + 1, window) keys, itself included (you counted one key fewer)",
                 int(np.minimum(i, w).sum())),
                ("query i scores min(i + 1, window) keys: i - window < j <= i, window keys at most, not window + 1",
                 int(np.minimum(i + 1, w + 1).sum()))]
    s = stride
    local, far = np.minimum(i + 1, s), i // s
    return [("the first queries have fewer keys than that: query i scores min(i + 1, stride) local keys plus "
             "i // stride far ones", T * s),
            ("you counted only the last stride positions; add the far ones, a multiple of stride back: i // stride "
             "per query", int(local.sum())),
            ("you counted only the positions a multiple of stride back; add the local ones, the last stride "
             "positions (min(i + 1, stride) per query)", int((far + 1).sum())),
            ("query i itself is counted twice (once in the local part, once as 0 strides back): the far part holds "
             "the i // stride positions at least one stride back", int((local + far + 1).sum())),
            ("the position exactly stride back is counted twice: the local part is the last stride positions, "
             "itself included (i - j < stride, min(i + 1, stride) keys), and j = i - stride is the first far one",
             int((local + far + (i >= s)).sum()))]


def _dots_case(f, kind, T, **kw):
    args = ", ".join(f"{k}={v}" for k, v in kw.items())
    what = f"dot_products({kind!r}, T={T}" + (f", {args})" if args else ")")
    want = ref_dot_products(kind, T, **kw)
    try:
        got = call(f, kind, T, name="dot_products", arg_names=["kind", "T"], timeout=20, **kw)
    except Fail as e:
        raise Fail(str(e) + (BIG if T > 10**5 else "")) from None
    hint = ""
    if isinstance(got, (int, float, np.integer, np.floating)) and got != want:
        hint = next((h for h, n in _dots_mistakes(kind, T, **kw) if n != want and got == n), "")
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
