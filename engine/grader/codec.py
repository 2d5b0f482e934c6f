"""Data, not code, between the grader and a learner's kernel: a JSON tree plus raw array bytes.

Only plain values cross: None, bools, numbers, strings, bytes, ``...``, lists, tuples, dicts,
NumPy arrays and scalars of number/bool/string dtypes, a ``GPTConfig`` and a NumPy ``GPT``.
Anything else a learner returns becomes an ``Opaque`` (its type name and a short repr), which
the checks see as "not an array of numbers". Decoding never runs code (no pickle) and refuses
a payload over ``MAX_BYTES``, deeper than ``MAX_DEPTH`` or with more than ``MAX_NODES`` nodes.

Layout of a payload: 8 bytes (length of the JSON header, little endian), the header
``{"tree": ..., "arrays": [[dtype, shape, offset, nbytes], ...]}``, then the arrays' bytes.
"""
from __future__ import annotations

import base64
import json
import math
import struct

import numpy as np

from ..backend import is_device_array

MAX_BYTES = 64 * 2 ** 20  # a whole payload
MAX_DEPTH = 64
MAX_NODES = 200_000
_KINDS = "biufcUS"  # no object, void or datetime arrays


class CodecError(ValueError):
    """A payload that is not one this module wrote, or one over the limits."""


class Opaque:
    """Stands for a value that cannot cross as data (a generator, a custom class, ...)."""

    def __init__(self, type_name: str, text: str):
        self.type_name, self.text = type_name, text

    def __repr__(self):
        return self.text

    def __eq__(self, other):
        return isinstance(other, Opaque) and (self.type_name, self.text) == (other.type_name, other.text)

    __hash__ = None


def _short_repr(x) -> str:
    try:
        r = repr(x)
    except Exception:
        r = f"<{type(x).__name__}>"
    return r if len(r) <= 200 else r[:197] + "..."


class _Encoder:
    def __init__(self):
        self.arrays: list[np.ndarray] = []
        self.counting: list = []  # arrays with a `record` list (the ch07 cache check counts positions)

    def array(self, a: np.ndarray) -> int:
        self.arrays.append(np.ascontiguousarray(a))
        return len(self.arrays) - 1

    def enc(self, x, depth=0):
        if depth > MAX_DEPTH:
            raise CodecError("nested too deeply")
        if x is None or isinstance(x, (bool, str)):
            return x
        if isinstance(x, int):
            return {"t": "int", "v": str(int(x))} if abs(x) > 2 ** 53 else int(x)
        if isinstance(x, float):
            return float(x) if math.isfinite(x) else {"t": "float", "v": repr(float(x))}
        if x is Ellipsis:
            return {"t": "..."}
        if isinstance(x, (bytes, bytearray)):
            return {"t": "bytes", "v": base64.b64encode(bytes(x)).decode()}
        if isinstance(x, complex):
            return {"t": "complex", "v": [x.real, x.imag]}
        if is_device_array(x):  # a GPU array: its values
            x = x.get()
        if isinstance(x, np.generic) and x.dtype.kind in _KINDS:
            return {"t": "scalar", "i": self.array(np.asarray(x))}
        if isinstance(x, np.ndarray):
            if x.dtype.kind not in _KINDS:  # an object array stays "not an array of numbers", as it is locally
                return {"t": "opaque", "type": "ndarray", "v": f"array of shape {x.shape} and dtype {x.dtype}"}
            node = {"t": "nd", "i": self.array(x)}
            rec = getattr(x, "__dict__", {}).get("record") if type(x) is not np.ndarray else None
            if isinstance(rec, list):
                node["count"] = len(self.counting)
                self.counting.append(rec)
            return node
        if isinstance(x, dict):
            return {"t": "dict", "k": [self.enc(k, depth + 1) for k in x],
                    "v": [self.enc(v, depth + 1) for v in x.values()]}
        if isinstance(x, tuple):
            return {"t": "tuple", "v": [self.enc(v, depth + 1) for v in x]}
        if isinstance(x, list):
            return [self.enc(v, depth + 1) for v in x]
        from ..config import GPTConfig
        from ..model import GPT
        if isinstance(x, GPTConfig):
            return {"t": "cfg", "v": self.enc(x.to_dict(), depth + 1)}
        if isinstance(x, GPT):
            params = x.params if x.backend == "numpy" else _to_numpy(x.params)
            return {"t": "gpt", "cfg": self.enc(x.cfg.to_dict(), depth + 1), "dtype": str(x.dtype),
                    "params": self.enc(params, depth + 1)}
        if isinstance(x, Opaque):
            return {"t": "opaque", "type": x.type_name, "v": x.text}
        return {"t": "opaque", "type": type(x).__name__, "v": _short_repr(x)}


def _to_numpy(tree):
    from ..params import tree_map
    return tree_map(lambda a: a.get() if hasattr(a, "get") else np.asarray(a), tree)


def encode(obj) -> tuple[bytes, list]:
    """``obj`` as bytes, and the ``record`` lists of its counting arrays (in order)."""
    e = _Encoder()
    tree = e.enc(obj)
    table, offset = [], 0
    for a in e.arrays:
        table.append([a.dtype.str, list(a.shape), offset, a.nbytes])
        offset += a.nbytes
    head = json.dumps({"tree": tree, "arrays": table}, allow_nan=False).encode()
    out = b"".join([struct.pack("<Q", len(head)), head] + [a.tobytes() for a in e.arrays])
    if len(out) > MAX_BYTES:
        raise CodecError(f"{len(out) / 2 ** 20:.0f} MB of data, over the {MAX_BYTES // 2 ** 20} MB limit")
    return out, e.counting


class _Decoder:
    def __init__(self, data: bytes, counting_type=None):
        if len(data) > MAX_BYTES:
            raise CodecError("payload over the size limit")
        if len(data) < 8:
            raise CodecError("truncated payload")
        (n,) = struct.unpack("<Q", data[:8])
        if n > len(data) - 8:
            raise CodecError("truncated header")
        try:
            head = json.loads(data[8:8 + n])
        except Exception as e:
            raise CodecError(f"bad header ({type(e).__name__})") from None
        if not isinstance(head, dict) or not isinstance(head.get("arrays"), list):
            raise CodecError("bad header")
        self.body, self.head, self.nodes = memoryview(data)[8 + n:], head, 0
        self.counting_type, self.counting = counting_type, []

    def array(self, i) -> np.ndarray:
        try:
            dt, shape, off, nb = self.head["arrays"][i]
            dtype = np.dtype(str(dt))
            shape = tuple(int(s) for s in shape)
        except Exception:
            raise CodecError("bad array entry") from None
        if dtype.kind not in _KINDS or dtype.hasobject or any(s < 0 for s in shape):
            raise CodecError(f"array dtype {dtype} is not allowed")
        count = math.prod(shape)
        if not (isinstance(off, int) and isinstance(nb, int) and 0 <= off and nb == count * dtype.itemsize
                and off + nb <= len(self.body)):
            raise CodecError("array bytes out of range")
        return np.frombuffer(self.body[off:off + nb], dtype=dtype, count=count).reshape(shape).copy()

    def dec(self, x, depth=0):
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise CodecError("payload nested too deeply or too large")
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, list):
            return [self.dec(v, depth + 1) for v in x]
        if not isinstance(x, dict):
            raise CodecError("bad node")
        t = x.get("t")
        if t == "int":
            return int(str(x["v"])[:400])
        if t == "float":
            return float({"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(x["v"], "nan"))
        if t == "...":
            return Ellipsis
        if t == "bytes":
            return base64.b64decode(str(x["v"]))
        if t == "complex":
            return complex(float(x["v"][0]), float(x["v"][1]))
        if t == "scalar":
            return self.array(x["i"])[()]
        if t == "nd":
            a = self.array(x["i"])
            if "count" in x and self.counting_type is not None:
                a = a.view(self.counting_type)
                a.record = []
                self.counting.append(a.record)
            return a
        if t == "tuple":
            return tuple(self.dec(v, depth + 1) for v in x["v"])
        if t == "dict":
            keys = [self.dec(k, depth + 1) for k in x["k"]]
            vals = [self.dec(v, depth + 1) for v in x["v"]]
            try:
                return dict(zip(keys, vals, strict=True))
            except TypeError:  # an unhashable key (a list): not something a task returns
                raise CodecError("a dict key that is not hashable") from None
        if t == "opaque":
            return Opaque(str(x.get("type", "object"))[:100], str(x.get("v", ""))[:200])
        if t in ("cfg", "gpt"):
            from ..config import GPTConfig
            cfg = self.dec(x["v"] if t == "cfg" else x["cfg"], depth + 1)
            if not isinstance(cfg, dict):
                raise CodecError("bad config")
            try:
                cfg = GPTConfig.from_dict(cfg)
                if t == "cfg":
                    return cfg
                from ..model import GPT
                params = self.dec(x["params"], depth + 1)
                model = GPT(cfg, dtype=str(x.get("dtype", "float64")), backend="numpy", params=params)
            except CodecError:
                raise
            except Exception as e:
                return Opaque("GPT", f"<a GPT that could not be rebuilt: {type(e).__name__}>")
            _restore_views(model.params, params)
            return model
        raise CodecError(f"unknown node type {t!r}")


def _restore_views(tree, given):
    """GPT() copies its parameters; put back the counting views the payload asked for."""
    if isinstance(tree, dict) and isinstance(given, dict):
        for k in tree:
            if isinstance(given.get(k), np.ndarray) and type(given[k]) is not np.ndarray:
                tree[k] = given[k]
            else:
                _restore_views(tree[k], given.get(k))
    elif isinstance(tree, list) and isinstance(given, list):
        for a, b in zip(tree, given):
            _restore_views(a, b)


def decode(data: bytes, counting_type=None):
    """The object ``encode`` wrote; raises ``CodecError`` for anything else.

    With ``counting_type`` (an ndarray subclass), arrays encoded with a ``record`` list come back
    as views of that type with a fresh ``record`` list; ``decode_counting`` also returns those lists.
    """
    return decode_counting(data, counting_type)[0]


def decode_counting(data: bytes, counting_type=None):
    d = _Decoder(bytes(data), counting_type)
    try:
        obj = d.dec(d.head.get("tree"))
    except CodecError:
        raise
    except RecursionError:
        raise CodecError("payload nested too deeply") from None
    except Exception as e:
        raise CodecError(f"bad payload ({type(e).__name__})") from None
    return obj, d.counting
