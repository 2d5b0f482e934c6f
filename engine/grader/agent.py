"""The grader's side inside a learner's kernel: call one learner function on data, write the result as data.

``python -m engine.grader`` never runs learner code in its own process. It starts a kernel,
runs ``install()`` there before the first cell, runs the notebook's cells, then for each call a
check makes it writes the inputs to a file (``codec``), runs ``run_call(...)`` in the kernel and
reads the result file back. Nothing written here is trusted by the grader: it decodes the data,
checks it against its own references and keeps the score.

``install`` also gates the engine functions that tasks rebuild (``rebuilds``): each one's code
is swapped for a trampoline, so every reference to it (``from engine.layers import ...`` in a
cell included) goes through the gate. While a task's call runs, calling a function that task
rebuilds raises ``EngineCallRefused`` (a BaseException: ``except Exception`` cannot hide it) and
is recorded; the grader refuses the answer and names the function. Outside graded calls the
engine works as usual (the notebook's own cells and ``grader.check`` use it).
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import types
import warnings

import numpy as np

from . import codec
from .rebuilds import every_entry, forbidden

_ORIG: dict = {}       # "module:name" -> callable with the original code
_STATE = {"active": frozenset(), "violations": []}
SINK_LIMIT = 64 * 1024  # what a learner's function may print while graded (kept in memory, then dropped)


class EngineCallRefused(BaseException):
    pass


class CountingArray(np.ndarray):
    """An array that records how many positions each slice reads (the KV-cache check counts them)."""

    def __getitem__(self, key):
        rec = self.__dict__.get("record")
        if rec is not None and isinstance(key, slice):
            rec.append(len(range(*key.indices(self.shape[0]))))
        return np.asarray(super().__getitem__(key))


def _gate(key, args, kwargs):
    if key in _STATE["active"]:
        _STATE["violations"].append(key)
        raise EngineCallRefused(key)
    return _ORIG[key](*args, **kwargs)


def _targets(entry):
    """(key, owner, attribute name, function) for each function an entry names."""
    mod_name, _, what = entry.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except Exception:
        return []
    if what == "*":
        return [(f"{mod_name}:{k}", mod, k, v) for k, v in list(vars(mod).items())
                if isinstance(v, types.FunctionType) and v.__module__ == mod_name]
    owner, attr = mod, what
    if "." in what:
        cls_name, attr = what.split(".", 1)
        owner = getattr(mod, cls_name, None)
    fn = vars(owner).get(attr) if owner is not None else None
    fn = getattr(fn, "fget", None) or getattr(fn, "__func__", None) or fn
    return [(entry, owner, attr, fn)] if isinstance(fn, types.FunctionType) else []


def _swap(key, fn) -> None:
    if key in _ORIG:
        return
    orig = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    orig.__kwdefaults__ = fn.__kwdefaults__
    _ORIG[key] = orig
    if fn.__closure__:  # a trampoline cannot take over code with free variables: leave it as it is
        return
    ns: dict = {}
    exec(f"def _trampoline(*args, **kwargs):\n    return _engine_grader_gate({key!r}, args, kwargs)\n", ns)
    fn.__globals__["_engine_grader_gate"] = _gate
    fn.__code__ = ns["_trampoline"].__code__


def install() -> None:
    """Put the gate in front of every engine function some task rebuilds (idempotent)."""
    for entry in every_entry():
        for key, _owner, _attr, fn in _targets(entry):
            _swap(key, fn)


def _keys(task):
    out = set()
    for entry in forbidden(task):
        out.update(k for k, *_ in _targets(entry))
    return frozenset(out)


class _Sink(io.TextIOBase):
    def __init__(self):
        self.n = 0

    def writable(self):
        return True

    def write(self, s):
        self.n += len(s)
        return len(s)


def _read(path):
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        return f.read(codec.MAX_BYTES + 1)


def _write(path, obj):
    try:
        data, _ = codec.encode(obj)
    except Exception as e:  # a result too large, or one that breaks while being read
        data, _ = codec.encode({"status": "unsendable", "why": f"{type(e).__name__}: {str(e)[:300]}"})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _describe_error(e):
    try:
        msg = str(e)
    except Exception:
        msg = "(its message could not be read)"
    return {"type": type(e).__name__[:80], "msg": msg[:2000]}


def manifest(ns: dict, names, out_path: str) -> None:
    """For each name: missing, a function (and whether its body is still ``...``), or its value as data."""
    from .core import is_stub
    out = {}
    for n in names:
        if n not in ns:
            out[n] = {"state": "missing"}
        elif callable(ns[n]) and not isinstance(ns[n], type(Ellipsis)):
            out[n] = {"state": "function", "stub": bool(is_stub(ns[n]))}
        else:
            out[n] = {"state": "value", "stub": ns[n] is Ellipsis, "value": ns[n]}
    _write(out_path, out)


def run_call(ns: dict, name: str, task: str, in_path: str, out_path: str) -> None:
    """Call ``ns[name]`` on the inputs in ``in_path``; write status, result and the inputs afterwards."""
    (args, kwargs), counting = codec.decode_counting(_read(in_path), counting_type=CountingArray)
    fn = ns.get(name)
    _STATE["active"], _STATE["violations"] = _keys(task), []
    sink = _Sink()
    out: dict = {}
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings(), \
                np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            result = fn(*args, **kwargs)
        out = {"status": "ok", "result": result}
    except EngineCallRefused:
        pass
    except SystemExit as e:
        code = e.code if e.code is None or isinstance(e.code, (int, str)) else repr(e.code)
        out = {"status": "exit", "code": code}
    except BaseException as e:  # noqa: B036 (a learner's KeyboardInterrupt is an error of theirs too)
        out = {"status": "error", **_describe_error(e)}
    finally:
        violations, _STATE["active"] = list(_STATE["violations"]), frozenset()
    if violations:
        out = {"status": "refused", "calls": violations[:5]}
    out["args"] = [list(args), kwargs]
    out["records"] = counting
    _write(out_path, out)

