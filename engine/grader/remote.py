"""A learner's function as the grader's checks see it: a handle that runs it in the learner's kernel.

``runner.call`` recognises a ``RemoteFunction`` and calls ``invoke`` with the call's deadline;
what comes back is data (``codec``), checked by the grader. The outcomes that are not a value
are exceptions here: the learner's own (same type name and message, as a ``RemoteError``),
``SystemExit``, ``RecursionError``, ``CallTimedOut``, ``KernelDied``, ``EngineCallRefused``.
"""
from __future__ import annotations

import re

import numpy as np


class RemoteError(Exception):
    """Base of the exceptions re-raised for a learner's: ``type(e).__name__`` is the learner's type name."""


_TYPES: dict = {}


def remote_exception(type_name: str, message: str) -> BaseException:
    if type_name == "RecursionError":
        return RecursionError(message)
    name = type_name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,79}", type_name or "") else "Exception"
    cls = _TYPES.get(name) or _TYPES.setdefault(name, type(name, (RemoteError,), {}))
    return cls(message)


class CallTimedOut(BaseException):
    """The call ran past its deadline: the kernel was killed and a fresh one started."""


class KernelDied(BaseException):
    """The kernel process ended during the call (os._exit, a crash, the memory cap)."""

    def __init__(self, why: str = ""):
        super().__init__(why)
        self.why = why


class EngineCallRefused(BaseException):
    """The answer called an engine function that its task rebuilds; ``calls`` names them."""

    def __init__(self, calls):
        super().__init__(", ".join(calls))
        self.calls = list(calls)


class Unavailable(BaseException):
    """Grading could not go on in a kernel (it would not start, or restarted too many times)."""


class RemoteFunction:
    """``session.call(name, task, args, kwargs, timeout)`` runs notebook function ``name`` in the kernel."""

    def __init__(self, session, name: str, task: str, stub: bool = False):
        self.session, self.name, self.task, self.stub = session, name, task, stub

    def __repr__(self):
        return f"<function {self.name} in the notebook>"

    def __call__(self, *args, **kwargs):  # a check that calls it without runner.call: the session's deadline
        return self.invoke(args, kwargs, getattr(self.session, "call_timeout", 10.0))

    def invoke(self, args, kwargs, timeout: float):
        """Run the learner's function on ``args``/``kwargs``; mutate them as the learner's code did; return its result."""
        out = self.session.call(self.name, self.task, args, kwargs, timeout)
        status = out.get("status")
        after = out.get("args")
        if isinstance(after, list) and len(after) == 2:
            for a, b in zip(args, after[0] if isinstance(after[0], list) else []):
                write_back(a, b)
            if isinstance(after[1], dict):
                for k, v in kwargs.items():
                    write_back(v, after[1].get(k))
        if status == "ok":
            return out.get("result")
        if status == "refused":
            raise EngineCallRefused([str(c) for c in out.get("calls", [])][:5] or ["an engine function"])
        if status == "exit":
            raise SystemExit(out.get("code"))
        if status == "error":
            raise remote_exception(str(out.get("type", "Exception")), str(out.get("msg", "")))
        if status == "unsendable":
            raise remote_exception("ValueError", f"its result could not be sent to the grader: {out.get('why', '')}")
        raise remote_exception("RuntimeError", "the kernel answered with something the grader does not know")


def write_back(orig, new, depth: int = 0) -> None:
    """Make ``orig`` hold what ``new`` holds, in place where it can (the learner's in-place changes)."""
    if depth > 60 or new is None and orig is not None:
        return
    if isinstance(orig, np.ndarray):
        if isinstance(new, np.ndarray) and new.shape == orig.shape and new.dtype == orig.dtype and \
                orig.flags.writeable and not np.array_equal(orig, new, equal_nan=orig.dtype.kind in "fc"):
            orig[...] = new
        return
    if isinstance(orig, dict) and isinstance(new, dict):
        for k in [k for k in orig if k not in new]:
            del orig[k]
        for k, v in new.items():
            if k in orig and _same_kind(orig[k], v):
                write_back(orig[k], v, depth + 1)
            else:
                orig[k] = v
        return
    if isinstance(orig, list) and isinstance(new, list):
        if len(orig) == len(new):
            for i, (a, b) in enumerate(zip(orig, new)):
                if _same_kind(a, b):
                    write_back(a, b, depth + 1)
                else:
                    orig[i] = b
        else:
            orig[:] = new
        return
    if isinstance(orig, tuple) and isinstance(new, (tuple, list)):
        for a, b in zip(orig, new):
            write_back(a, b, depth + 1)
        return
    if hasattr(orig, "params") and hasattr(orig, "cfg") and hasattr(new, "params"):  # a GPT
        write_back(orig.params, new.params, depth + 1)


def _same_kind(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and a.dtype == b.dtype
    return isinstance(a, (dict, list, tuple)) and type(a) is type(b) or \
        (hasattr(a, "params") and hasattr(b, "params"))
