"""Files that are never left half-written, and files from elsewhere read with care.

A write goes to a private temporary folder (created with ``mkdir``, which never follows or reuses
an existing name) beside the destination, is flushed to disk, and is renamed over the destination
(``os.replace`` is atomic on one file system), so a crash leaves either the old file or the new
one, never a mixture; ``remove_leftovers`` clears what a killed process left behind.

Reads of model folders from elsewhere accept only regular files (never a FIFO, which would hang,
or a device such as ``/dev/zero``, which never ends) of bounded size, and their errors never quote
the file's contents (a symlink may point at a secret).
"""
from __future__ import annotations

import errno as _errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

MiB = 1 << 20
JSON_LIMIT = 64 * MiB  # config.json, state.json (with a long run's history), manifest.json
TEXT_LIMIT = 64 * MiB  # a tokenizer file (GPT-2's 50,257 tokens take under 1 MiB)
TMP_MARK = ".tmp-"     # temporary names: f".{dest.name}.tmp-XXXXXXXX"
# Ours and nothing else: mkdtemp's 8 random characters, and the older mkstemp names (".name.XXXXXXXX.tmp").
_LEFTOVER = re.compile(r"^\..+(\.tmp-[a-z0-9_]{8}|\.[a-z0-9_]{8}\.(tmp|npz))$")


# ---------------------------------------------------------------------- reading
def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _check_stat(path, st: os.stat_result, limit: int | None) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is a {_kind(st.st_mode)}, not a regular file: only plain files are read")
    if limit is not None and st.st_size > limit:
        raise ValueError(f"{path} is {st.st_size:,} bytes, more than the {limit:,} such a file may hold")


def regular_file(path, limit: int | None = None) -> Path:
    """``path`` if it is (or links to) a regular file of at most ``limit`` bytes; else ValueError.

    For files opened by name elsewhere (safetensors): ``os.stat`` never blocks, unlike opening a FIFO.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    _check_stat(path, st, limit)
    return Path(path)


def _open_regular(path, limit: int | None) -> int:
    # O_NONBLOCK: opening a FIFO returns at once (then fstat refuses it) instead of waiting for a writer
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    try:
        _check_stat(path, os.fstat(fd), limit)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path, limit: int) -> bytes:
    """The contents of a regular file of at most ``limit`` bytes (ValueError otherwise)."""
    fd = _open_regular(path, limit)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew since fstat
        raise ValueError(f"{path} holds more than the {limit:,} bytes such a file may hold")
    return data


def read_text(path, limit: int = TEXT_LIMIT) -> str:
    """A bounded regular file as UTF-8 text; the error names the file, never its contents."""
    try:
        return read_bytes(path, limit).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start})") from None


def read_json(path, limit: int = JSON_LIMIT) -> dict:
    """A bounded regular file holding one JSON object (a dict); ValueError naming the file otherwise."""
    try:
        value = json.loads(read_text(path, limit))
    except json.JSONDecodeError as e:  # its message gives a position, not the text
        raise ValueError(f"{path} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object ({{...}})")
    return value


def sha256_file(path) -> str:
    """SHA-256 of a regular file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with os.fdopen(_open_regular(path, None), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def plain_name(name) -> bool:
    """Whether ``name`` (from a manifest) names a file directly inside its folder: no path, no '..'."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and "\0" not in name and not name.startswith("."))


# ---------------------------------------------------------------------- writing
def fsync(path) -> None:
    """Flush a written file to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_tmpdir(dest) -> Path:
    """A new folder ``.{dest.name}.tmp-XXXXXXXX`` beside ``dest``, made with mkdir (mode 0700): a name
    that already exists, a planted symlink included, is never reused."""
    dest = Path(dest)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}{TMP_MARK}", dir=dest.parent))


def os_error(e: BaseException) -> OSError | None:
    """The OSError behind ``e``: itself, or one that safetensors reports as text ("... (os error 28)")."""
    if isinstance(e, OSError):
        return e
    m = re.search(r"os error (\d+)", str(e))
    if m:
        code = int(m.group(1))
        return OSError(code, os.strerror(code))
    return None


def atomic_write(dest, write, suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path: str)`` to fill a temporary file beside ``dest``, then rename it to ``dest``.

    ``suffix``: the temporary name's ending (``np.savez`` wants ".npz"). On any error the temporary
    file is removed and ``dest`` is untouched; a failed write of the disk (full, read-only) is raised
    as an OSError naming ``dest``. Returns ``dest`` as a Path.
    """
    dest = Path(dest)
    tmpdir = private_tmpdir(dest)
    tmp = tmpdir / ("data" + suffix)
    try:
        write(str(tmp))
        fsync(tmp)
        os.replace(tmp, dest)
    except Exception as e:
        err = os_error(e)
        if err is None or err.errno is None:
            raise
        raise OSError(err.errno, f"could not write {dest}: {err.strerror}") from e
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return dest


def remove(path) -> None:
    """Remove a file, a symlink (never what it points to) or a folder tree; nothing if absent."""
    p = Path(path)
    if p.is_symlink() or (p.exists() and not p.is_dir()):
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def remove_leftovers(folder) -> list[str]:
    """Delete the temporary files and folders that a killed save left in ``folder``; returns their names.

    Only names this module makes (``.NAME.tmp-XXXXXXXX``) are touched; a symlink is unlinked, not followed.
    """
    folder = Path(folder)
    gone = []
    for p in sorted(folder.iterdir()) if folder.is_dir() else ():
        if _LEFTOVER.match(p.name):
            remove(p)
            gone.append(p.name)
    return gone


def check_writable(folder) -> None:
    """Raise OSError (one line) unless a file can be created in ``folder``: found before hours of work."""
    folder = Path(folder)
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".probe{TMP_MARK}")
    except OSError as e:
        why = "it is read-only" if e.errno in (_errno.EROFS, _errno.EACCES, _errno.EPERM) else e.strerror
        raise OSError(e.errno, f"cannot write to the output folder {folder}: {why}") from None
    os.close(fd)
    os.remove(probe)
