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
