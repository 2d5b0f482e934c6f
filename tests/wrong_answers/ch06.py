"""Wrong answers for chapter 6, Sparse attention."""
import numpy as np


def banded_symmetric(T, window):  # forgets causality
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    return np.abs(i - j) < window


def banded_off_by_one(T, window):  # sees window + 1 positions
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    return (j <= i) & (i - j <= window)


def strided_no_local(T, stride):
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    return (j <= i) & ((i - j) % stride == 0)


def dots_full_square(kind, T, window=256, stride=32):
    return {"dense": T * T, "banded": T * window, "strided": T * stride}[kind]


def dots_with_mask(kind, T, window=256, stride=32):  # right for small T, a terabyte at T = 10**6
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    m = j <= i
    if kind == "banded":
        m &= i - j < window
    if kind == "strided":
        m &= (i - j < stride) | ((i - j) % stride == 0)
    return int(m.sum())


CASES = [
    ("banded_mask", {"banded_mask": banded_symmetric}, "position 0 can see position 1: your mask is not causal"),
    ("banded_mask", {"banded_mask": banded_off_by_one}, "should not see"),
    ("strided_mask", {"strided_mask": strided_no_local}, "should see"),
    ("dot_products", {"dot_products": dots_full_square}, "counts the future too"),
    ("dot_products", {"dot_products": dots_with_mask}, "a terabyte"),
]


# ---- correct answers written differently: full marks
def banded_int_loops(T, window):  # nested lists of 0/1
    return [[1 if i - window < j <= i else 0 for j in range(T)] for i in range(T)]


def strided_tril(T, stride):
    d = np.subtract.outer(np.arange(T), np.arange(T))
    return np.tril((d < stride) | (d % stride == 0))


def dots_python(kind, T, window=256, stride=32):  # plain Python sums over queries, floats allowed
    if kind == "dense":
        return T * (T + 1) / 2
    if kind == "banded":
        return sum(min(i + 1, window) for i in range(T))
    return sum(min(i + 1, stride) + i // stride for i in range(T))


RIGHT = [
    ("banded_mask", {"banded_mask": banded_int_loops}),
    ("strided_mask", {"strided_mask": strided_tril}),
    ("dot_products", {"dot_products": dots_python}),
]


# ---- diagnoses: each recomputes the mask or count under one mistake and names it
def _ij(T):
    return np.arange(T)[:, None], np.arange(T)[None, :]


def banded_too_narrow(T, window):  # window - 1 positions
    i, j = _ij(T)
    return (j <= i) & (i - j < window - 1)


def banded_no_diagonal(T, window):
    i, j = _ij(T)
    return (j < i) & (i - j < window)


def strided_only_local(T, stride):
    i, j = _ij(T)
    return (j <= i) & (i - j < stride)


def strided_absolute(T, stride):  # multiples of stride as positions, not as distances back
    i, j = _ij(T)
    return (j <= i) & ((i - j < stride) | (j % stride == 0))


def strided_no_diagonal(T, stride):
    i, j = _ij(T)
    return (j < i) & ((i - j < stride) | ((i - j) % stride == 0))


def dots_dense_no_self(kind, T, window=256, stride=32):
    return T * (T - 1) // 2 if kind == "dense" else dots_python(kind, T, window, stride)


def dots_banded_window_plus_one(kind, T, window=256, stride=32):
    return dots_python(kind, T, window + 1, stride) if kind == "banded" else dots_python(kind, T, window, stride)


def dots_strided_local_only(kind, T, window=256, stride=32):
    i = np.arange(T, dtype=np.int64)
    return int(np.minimum(i + 1, stride).sum()) if kind == "strided" else dots_python(kind, T, window, stride)


def dots_strided_self_twice(kind, T, window=256, stride=32):  # the far part from 0 strides back
    i = np.arange(T, dtype=np.int64)
    if kind == "strided":
        return int((np.minimum(i + 1, stride) + i // stride + 1).sum())
    return dots_python(kind, T, window, stride)


def dots_strided_far_only(kind, T, window=256, stride=32):
    i = np.arange(T, dtype=np.int64)
    return int((i // stride + 1).sum()) if kind == "strided" else dots_python(kind, T, window, stride)


CASES += [
    ("banded_mask", {"banded_mask": banded_off_by_one}, "That is the mask of i - j <= window: position i sees window + 1"),
    ("banded_mask", {"banded_mask": banded_too_narrow}, "That is the mask of i - j < window - 1"),
    ("banded_mask", {"banded_mask": banded_no_diagonal}, "Position i must see itself (the diagonal)"),
    ("strided_mask", {"strided_mask": strided_no_local}, "You kept only the positions a multiple of stride back"),
    ("strided_mask", {"strided_mask": strided_only_local}, "You kept only the last stride positions"),
    ("strided_mask", {"strided_mask": strided_absolute}, "not the positions j that are multiples of stride"),
    ("strided_mask", {"strided_mask": strided_no_diagonal}, "Position i must see itself (the diagonal)"),
    ("dot_products", {"dot_products": dots_dense_no_self}, "query i also scores its own key"),
    ("dot_products", {"dot_products": dots_banded_window_plus_one}, "window keys at most, not window + 1"),
    ("dot_products", {"dot_products": dots_strided_local_only}, "you counted only the last stride positions"),
    ("dot_products", {"dot_products": dots_strided_far_only}, "you counted only the positions a multiple of stride"),
    ("dot_products", {"dot_products": dots_strided_self_twice}, "query i itself is counted twice"),
]


# ---- more correct answers written differently: full marks
def banded_tril_difference(T, window):  # np.tril minus the part more than window - 1 back
    ones = np.ones((T, T), dtype=int)
    return np.tril(ones) - np.tril(ones, -window)


def strided_loops(T, stride):  # lists of booleans, built per query
    return [[j <= i and (i - j < stride or (i - j) % stride == 0) for j in range(T)] for i in range(T)]


def dots_closed_form(kind, T, window=256, stride=32):  # formulas, numpy integers
    T = np.int64(T)
    if kind == "dense":
        return T * (T + 1) // 2
    if kind == "banded":
        w = min(window, T)
        return w * (w + 1) // 2 + (T - w) * window
    s = min(stride, T)
    q = np.arange(T, dtype=np.int64) // stride
    return s * (s + 1) // 2 + (T - s) * stride + q.sum()


RIGHT += [
    ("banded_mask", {"banded_mask": banded_tril_difference}),
    ("strided_mask", {"strided_mask": strided_loops}),
    ("dot_products", {"dot_products": dots_closed_form}),
]
