"""Running a learner's function safely: time limit, output capture, input-mutation check.

Everything a learner can write (an exception, an infinite loop, a wrong shape, printing,
an input changed in place) becomes a ``Fail`` carrying a message for the learner; the
grader itself never crashes and never hangs.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import signal
import threading
import warnings

import numpy as np

from ..params import tree_map
from .remote import CallTimedOut, EngineCallRefused, KernelDied, RemoteFunction, Unavailable

# seconds per call of a learner's function (ENGINE_GRADER_TIMEOUT overrides it, e.g. on a slow machine)
DEFAULT_TIMEOUT = float(os.environ.get("ENGINE_GRADER_TIMEOUT", "10"))


class Fail(AssertionError):
    """A check did not pass; ``str(self)`` is the feedback shown to the learner."""


class _TimeUp(BaseException):  # BaseException: a learner's ``except Exception`` cannot swallow it
    pass


_DEADLINES: list = []  # our nested limits (absolute times), innermost last


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise ``_TimeUp`` in the main thread after ``seconds`` (SIGALRM); limits nest.

    Off the main thread, or when a timer we did not set is running, there is no limit here.
    """
    import time

    ours = bool(_DEADLINES)
    usable = (threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
              and (ours or signal.getitimer(signal.ITIMER_REAL)[0] == 0))
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise _TimeUp()

    now = time.monotonic()
    deadline = now + seconds
    if _DEADLINES:
        deadline = min(deadline, _DEADLINES[-1])
    old = signal.signal(signal.SIGALRM, on_alarm)
    _DEADLINES.append(deadline)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - now, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _DEADLINES.pop()
        if _DEADLINES:  # re-arm the enclosing limit
            signal.setitimer(signal.ITIMER_REAL, max(_DEADLINES[-1] - time.monotonic(), 1e-3))
        signal.signal(signal.SIGALRM, old)


def describe(x) -> str:
    """Short description of an input for feedback: 'array (2, 5, 8) float64', '[3, 1, 4]', ..."""
    if isinstance(x, np.ndarray):
        if x.size <= 8:
            return f"array {np.array2string(x, precision=3, separator=', ')} ({x.dtype})"
        return f"array of shape {tuple(x.shape)} ({x.dtype})"
    if isinstance(x, dict):
        if any(isinstance(v, (dict, list)) for v in x.values()):
            return f"a parameter dict with keys {list(x)}"
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in list(x.items())[:6]) + "}"
    if isinstance(x, (list, tuple)) and len(x) > 10:
        return f"{type(x).__name__} of {len(x)} items starting {list(x[:6])}"
    if hasattr(x, "cfg") and hasattr(x, "params"):
        return "a tiny GPT"
    r = repr(x)
    return r if len(r) <= 80 else r[:77] + "..."


def same(a, b) -> bool:
    """Exact structural equality of nested dicts/lists/arrays/numbers (used to detect mutation)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=True)))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if hasattr(a, "params") and hasattr(a, "cfg"):  # a GPT
        return same(a.params, b.params)
    try:
        return bool(a == b)
    except Exception:
        return a is b


def clone(x):
    """A deep copy of an input; a GPT is rebuilt with copied parameters (its array module cannot be copied)."""
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, dict):
        return {k: clone(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(clone(v) for v in x)
    if hasattr(x, "cfg") and hasattr(x, "params") and hasattr(x, "dtype"):
        return type(x)(x.cfg, dtype=x.dtype, backend=x.backend, params=tree_map(lambda a: np.array(a), x.params))
    try:
        return copy.deepcopy(x)
    except Exception:
        return x


def call(fn, *args, name: str = "your function", arg_names=None, timeout: float | None = None,
         may_mutate: bool = False, **kwargs):
    """Call a learner's ``fn`` and return what it returned, or raise ``Fail`` with feedback.

    The function gets copies of the inputs (so our references stay intact); unless
    ``may_mutate``, changing an input in place is reported. Anything it prints is swallowed.
    ``fn`` is a local function (the notebook's own ``grader.check``) or a ``RemoteFunction``
    (the shell grader: it runs in the learner's kernel, under a deadline kept from outside).
    """
    timeout = DEFAULT_TIMEOUT if timeout is None else min(timeout, 6 * DEFAULT_TIMEOUT)
    if fn is None or not callable(fn):
        raise Fail(f"`{name}` is not a function (got {describe(fn)}): run the cell that defines it")
    remote = isinstance(fn, RemoteFunction)
    arg_names = list(arg_names or [f"argument {i + 1}" for i in range(len(args))])
    given = (clone(args), clone(kwargs)) if not may_mutate else (args, kwargs)
    keep = (clone(args), clone(kwargs)) if not may_mutate else None
    inputs = ", ".join([f"{n}={describe(a)}" for n, a in zip(arg_names, args)] +
                       [f"{k}={describe(v)}" for k, v in kwargs.items()])
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings(), \
                np.errstate(all="ignore"), (contextlib.nullcontext() if remote else time_limit(timeout)):
            warnings.simplefilter("ignore")  # overflow warnings etc. become feedback, not noise
            out = fn.invoke(given[0], given[1], timeout) if remote else fn(*given[0], **given[1])
    except (_TimeUp, CallTimedOut):
        raise Fail(f"`{name}` did not return within {timeout:g} s ({name}({inputs})): is there a loop that never "
                   "ends (a while loop whose condition never changes)?") from None
    except KernelDied as e:
        raise Fail(f"`{name}` stopped the Python kernel ({name}({inputs})): {e.why} (os._exit, a crash, or more "
                   "memory than the grader allows); the other tasks were graded in a fresh kernel") from None
    except EngineCallRefused as e:
        used = ", ".join(f"`{c.replace(':', '.')}`" for c in e.calls[:2])
        raise Fail(f"`{name}` calls {used} from the engine, the function this task asks you to write yourself: "
                   "the answer is refused. Write it with NumPy (your own earlier functions are fine)") from None
    except Unavailable as e:
        raise Fail(f"could not grade: {e}") from None
    except RecursionError:
        raise Fail(f"{name}({inputs}) recursed without end (RecursionError)") from None
    except Fail:
        raise
    except SystemExit as e:
        raise Fail(f"{name}({inputs}) called exit ({e.code!r}); return a value instead") from None
    except Exception as e:  # the learner's error, reported, not raised
        raise Fail(f"{name}({inputs}) raised {type(e).__name__}: {e}") from None
    if not may_mutate:
        for n, a, b in zip(arg_names + list(kwargs), list(given[0]) + list(given[1].values()),
                           list(keep[0]) + list(keep[1].values())):
            if not same(a, b):
                raise Fail(f"{name}({inputs}) changed its input `{n}` in place; the caller still needs it. "
                           "Work on a copy (e.g. x = x - m, not x -= m).")
    return out


# ---------------------------------------------------------------------- comparing results
def require_result(got, what: str) -> None:
    """Fail with the same hint everywhere when a task still returns None (its `...` untouched)."""
    if got is None:
        raise Fail(f"{what} returned None: replace the `...` with your code and `return` the result")


def as_array(got, what: str, expect_shape=None) -> np.ndarray:
    """The learner's result as a NumPy array, or a ``Fail`` saying why it is not one."""
    require_result(got, what)
    if got is Ellipsis:
        raise Fail(f"{what} returned `...`: replace it with your code")
    if hasattr(got, "get") and not isinstance(got, (dict, np.ndarray)):  # CuPy
        got = got.get()
    try:
        arr = np.asarray(got)
    except Exception as e:
        raise Fail(f"{what} returned {type(got).__name__}, which is not an array ({e})") from None
    if arr.dtype == object:
        raise Fail(f"{what} returned {describe(got)}, which is not an array of numbers")
    if expect_shape is not None and tuple(arr.shape) != tuple(expect_shape):
        raise Fail(f"{what} returned shape {tuple(arr.shape)}, expected {tuple(expect_shape)}")
    return arr


def close(got, want, what: str, rtol: float = 1e-5, atol: float = 1e-6, hint: str = "") -> np.ndarray:
    """Fail unless ``got`` has ``want``'s shape and values (within tolerance); return it as an array."""
    want = np.asarray(want)
    arr = as_array(got, what, want.shape)
    if want.dtype.kind == "b":
        if arr.dtype.kind != "b" and not np.isin(arr, [0, 1]).all():
            raise Fail(f"{what} returned {arr.dtype} values other than True/False")
        bad = np.argwhere(arr.astype(bool) != want)
        if len(bad):
            idx = tuple(int(i) for i in bad[0])
            raise Fail(f"{what}: at index {idx} expected {bool(want[idx])}, got {bool(arr[idx])} "
                       f"({len(bad)} entries wrong)" + (f". {hint}" if hint else ""))
        return arr
    if arr.dtype.kind not in "biuf":
        raise Fail(f"{what} returned dtype {arr.dtype}, expected numbers")
    if want.dtype.kind in "iu":
        bad = np.argwhere(arr != want) if arr.shape else ([()] if arr != want else [])
        if len(bad):
            idx = tuple(int(i) for i in bad[0])
            raise Fail(f"{what}: at index {idx} expected {want[idx]}, got {arr[idx]}" + (f". {hint}" if hint else ""))
        return arr
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all() and np.isfinite(want).all():
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0]) if arr.ndim else ()
        raise Fail(f"{what} returned {arr[idx]} at index {idx} (expected {want[idx]:.6g}): something "
                   "overflowed or divided by zero" + (f". {hint}" if hint else ""))
    err = np.abs(arr - want)
    tol = atol + rtol * np.abs(want)
    if (err > tol).any():
        idx = tuple(int(i) for i in np.unravel_index(np.argmax(err - tol), err.shape)) if arr.ndim else ()
        raise Fail(f"{what}: at index {idx} expected {want[idx]:.6g}, got {arr[idx]:.6g} "
                   f"(largest error {err.max():.3g})" + (f". {hint}" if hint else ""))
    return arr


def number(got, want: float, what: str, rtol: float = 1e-6, hint: str = "") -> float:
    """Fail unless ``got`` is a number within ``rtol`` of ``want``."""
    require_result(got, what)
    try:
        g = float(got)
    except Exception:
        raise Fail(f"{what} returned {describe(got)}, expected a number") from None
    if not math.isfinite(g) or abs(g - want) > rtol * abs(want) + 1e-12:
        if float(want).is_integer() and abs(want) < 1e18 and math.isfinite(g) and g.is_integer():
            w, gs = f"{int(want):,}", f"{int(g):,}"
        else:
            w, gs = f"{want:.6g}", f"{g:.6g}"
        raise Fail(f"{what}: expected {w}, got {gs}" + (f". {hint}" if hint else ""))
    return g
