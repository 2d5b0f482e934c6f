"""Files that are never left half-written: hashing and atomic writes.

A write goes to a temporary file in the same folder, is flushed to disk, and is renamed over
the destination (``os.replace`` is atomic on one file system), so a crash leaves either the old
file or the new one, never a mixture.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def sha256_file(path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync(path) -> None:
    """Flush a written file to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(dest, write, suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path: str)`` to fill a temporary file beside ``dest``, then rename it to ``dest``.

    ``suffix``: the temporary name's ending (``np.savez`` wants ".npz"). On any error the temporary
    file is removed and ``dest`` is untouched. Returns ``dest`` as a Path.
    """
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        fsync(tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest
