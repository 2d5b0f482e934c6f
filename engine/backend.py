"""Array backends: NumPy on the CPU, CuPy on an NVIDIA GPU, through one code path.

The model code never asks "am I on the GPU?". It receives an array module `xp`
(``numpy`` or ``cupy``) and calls ``xp.matmul``, ``xp.exp`` and friends, which
both libraries spell the same way. This file is the only place that knows the
difference.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

BACKENDS = ("numpy", "cupy", "auto")
ENV_VAR = "ENGINE_BACKEND"


def _cupy_usable() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device: fall back quietly
        return False


def get_xp(backend: str | None = None):
    """Return the array module for ``backend`` ("numpy", "cupy" or "auto").

    ``None`` reads the ``ENGINE_BACKEND`` environment variable and defaults to
    "auto": CuPy when it is installed and sees a GPU, NumPy otherwise. CuPy is
    imported only when asked for or available.
    """
    if backend is None:
        backend = os.environ.get(ENV_VAR, "auto")
    if not isinstance(backend, str):  # already a module
        return backend
    backend = backend.lower()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "numpy":
        return np
    if backend == "cupy":
        try:
            import cupy
        except ImportError as e:
            raise ImportError(
                "backend='cupy' needs CuPy: pip install 'engine[gpu]' on a machine with an NVIDIA GPU"
            ) from e
        return cupy
    return get_xp("cupy") if _cupy_usable() else np


def backend_name(xp) -> str:
    """'numpy' or 'cupy' for an array module."""
    return "numpy" if xp is np else xp.__name__.split(".")[0]


def array_module(a):
    """The array module an array belongs to (numpy for anything that is not a CuPy array)."""
    return get_xp("cupy") if type(a).__module__.startswith("cupy") else np


def is_device_array(a) -> bool:
    """True for a CuPy array (its values live on the GPU)."""
    return type(a).__module__.split(".")[0] == "cupy" and hasattr(a, "get")


def to_numpy(a) -> np.ndarray:
    """Bring an array (NumPy or CuPy) to the host as a NumPy array."""
    if hasattr(a, "get") and not isinstance(a, np.ndarray):
        return a.get()
    return np.asarray(a)


def as_strided(xp, a, shape, strides):
    """``as_strided`` for either backend (a view; never written through)."""
    if xp is np:
        return np.lib.stride_tricks.as_strided(a, shape=shape, strides=strides, writeable=False)
    return xp.lib.stride_tricks.as_strided(a, shape=shape, strides=strides)
