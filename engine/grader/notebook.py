"""Grade a whole notebook from the shell: learner code in a kernel of its own, checks and score here.

The learner's file is read once and never written; its cells run in a fresh kernel in a private
temporary folder (``kernel``: deadlines, memory and output caps, an unprivileged user when we are
root). Cells that only call ``grader.check`` are skipped (we check everything at the end). A cell
that raises is recorded and execution goes on; one that hangs or kills its kernel is recorded and
the rest run in a fresh kernel. Then every task's checks run in *this* process, calling the
learner's functions in the kernel with data in and data out (``remote``, ``codec``); the results
are checked against the registered tasks and points. ``main`` grades each notebook in a worker
process of its own, after reading every file.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import runner
from .core import REGISTRY, chapter_tasks, check, get_task
from .kernel import KernelSession, unprivileged_user
from .remote import RemoteFunction, Unavailable

_CHECK_CELL = re.compile(r"^\s*(grader\.check(_all)?\([^)]*\)\s*)+$")


def notebook_tasks(nb, path: Path) -> list[str]:
    """Tasks graded for a notebook: the otter tests in its metadata, else those of its chapter (file name)."""
    tests = (nb.metadata.get("otter") or {}).get("tests") or {}
    names = [n for n in tests]
    if names:
        for n in names:
            get_task(n)  # unknown names raise KeyError with the list of known tasks
        order = list(REGISTRY)
        return sorted(names, key=order.index)  # otter stores them alphabetically; grade in chapter order
    stem = path.stem
    for suffix in ("-solution", "_solution", ".solution"):
        stem = stem.removesuffix(suffix)
    return chapter_tasks(stem)


MAX_NOTEBOOK_BYTES = 64 * 2 ** 20


def read_notebook(path) -> bytes:
    """The notebook file's bytes, read once (opened read-only; a FIFO or a device is refused)."""
    import stat

    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"no notebook at {path}") from None
    except OSError as e:
        raise ValueError(f"{path} cannot be read: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if stat.S_ISDIR(st.st_mode):
            raise FileNotFoundError(f"no notebook at {path} (a folder)")
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_NOTEBOOK_BYTES:
            raise ValueError(f"{path} is not a notebook file (not a regular file of at most 64 MB)")
        return f.read(MAX_NOTEBOOK_BYTES + 1)


def _zero(names, why):
    return [{"task": n, "part": p.title, "points": p.points, "earned": 0.0, "message": f"could not grade: {why}"}
            for n in names for p in get_task(n).parts]


def _grade_in(session, names) -> list[dict]:
    """Run every task's checks here, calling the learner's functions in ``session``'s kernel."""
    import dataclasses

    needs = list(dict.fromkeys(n for t in names for n in get_task(t).needs))
    try:
        found = session.manifest(needs)
    except (Unavailable, Exception) as e:  # noqa: B014 (Unavailable is a BaseException)
        return _zero(names, f"the notebook's names could not be read from its kernel ({e})")
    results = []
    for name in names:
        env = {}
        for n in get_task(name).needs:
            m = found.get(n) if isinstance(found, dict) else None
            state = m.get("state") if isinstance(m, dict) else "missing"
            if state == "function":
                env[n] = RemoteFunction(session, n, name, stub=m.get("stub") is True)
            elif state == "value":
                env[n] = m.get("value")
        results += [dataclasses.asdict(r) for r in check(name, env)]
    return results


def validate(results: list[dict], names) -> list[dict]:
    """The results, once checked against the registry: its tasks, its parts, its points, 0 or all of them."""
    want = [(n, p.title, float(p.points)) for n in names for p in get_task(n).parts]
    got = [(r["task"], r["part"], float(r["points"])) for r in results]
    if got != want or any(r["earned"] not in (0, r["points"]) for r in results):
        raise RuntimeError("the grader's results do not match its tasks (a bug in the grader)")
    return results


def grade_notebook(path, cell_timeout: float = 120, tasks=None, run_check_cells: bool = False,
                   return_notebook: bool = False, call_timeout: float | None = None, memory_mb: int | None = None,
                   output_mb: float = 2, data: bytes | None = None) -> dict:
    """Run notebook ``path`` in a kernel of its own and grade it from this process.

    Returns {"notebook", "results": [part dicts], "score", "total", "cell_errors": [..], "isolation"},
    plus "executed" (the executed copy) with ``return_notebook``. The file is read once (or ``data``
    is used) and never written. ``run_check_cells`` keeps the notebook's own ``grader.check`` cells
    (skipped by default: everything is checked at the end). ``call_timeout`` (default
    ENGINE_GRADER_TIMEOUT or 10 s) bounds each call of a learner function, ``cell_timeout`` each
    cell, ``memory_mb`` (default ENGINE_GRADER_MEMORY_MB or 4096) the kernel's address space,
    ``output_mb`` what one cell may print. Raises FileNotFoundError / ValueError for a missing or
    unreadable notebook.
    """
    import nbformat

    path = Path(path)
    data = read_notebook(path) if data is None else data
    try:
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    except Exception as e:
        raise ValueError(f"{path} is not a readable notebook: {str(e)[:300]}") from None
    names = list(tasks) if tasks else notebook_tasks(nb, path)
    for n in names:
        get_task(n)
    call_timeout = float(os.environ.get("ENGINE_GRADER_TIMEOUT", runner.DEFAULT_TIMEOUT)) if call_timeout is None \
        else call_timeout
    memory_mb = int(os.environ.get("ENGINE_GRADER_MEMORY_MB", 4096)) if memory_mb is None else memory_mb
    user, isolation = unprivileged_user()
    # outer: ours (the kernel's connection file), which ``user`` may pass through but not list; inside,
    # under a random name no command line shows, the kernel's private folder, which the kernel gives
    # to its own private group: another kernel of ``user`` can neither find nor open this copy.
    outer = Path(tempfile.mkdtemp(prefix="engine-grader-"))
    folder = outer / secrets.token_hex(8)
    folder.mkdir(mode=0o700)
    if user:
        os.chmod(outer, 0o711)
    session, errors = None, []
    old_timeout, runner.DEFAULT_TIMEOUT = runner.DEFAULT_TIMEOUT, call_timeout
    try:
        fd = os.open(folder / path.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:  # the private copy, for notebooks that look for their own file
            f.write(data)
        session = KernelSession(folder, memory_mb=memory_mb, output_mb=output_mb, user=user, conn_dir=outer)
        try:
            session.start()
        except Unavailable as e:
            results = _zero(names, str(e))
        else:
            for i, cell in enumerate(nb.cells):
                if cell.cell_type != "code" or not cell.source.strip() or \
                        (not run_check_cells and _CHECK_CELL.match(cell.source)):
                    continue
                r = session.run_cell(i, cell.source, cell_timeout)
                cell.outputs = [nbformat.from_dict(o) for o in r["outputs"]]
                errors += _cell_message(i, r, cell_timeout, session)
            results = _grade_in(session, names)
    finally:
        runner.DEFAULT_TIMEOUT = old_timeout
        if session is not None:
            session.close()
        shutil.rmtree(outer, ignore_errors=True)
    results = validate(results, names)
    rep = {"notebook": str(path), "results": results, "score": sum(r["earned"] for r in results),
           "total": sum(r["points"] for r in results), "cell_errors": errors, "isolation": isolation}
    if return_notebook:
        rep["executed"] = nb
    return rep


def _cell_message(i, r, timeout, session) -> list[str]:
    fresh = "; the cells after it ran in a fresh kernel" if not session.broken else f"; {session.broken}"
    if r["status"] == "error":
        return [f"cell {i + 1}: {r['error'][0]}: {r['error'][1]}".strip()]
    if r["status"] == "timeout":
        return [f"cell {i + 1}: did not finish within {timeout:g} s and was stopped{fresh}"]
    if r["status"] == "died":
        return [f"cell {i + 1}: stopped the Python kernel (os._exit, a crash, or more than "
                f"{session.memory_mb} MB of memory){fresh}"]
    if r["status"] == "flood":
        return [f"cell {i + 1}: printed more than {session.output_limit / 2 ** 20:g} MB and was stopped{fresh}"]
    return []


def format_report(rep: dict, verbose: bool = True) -> str:
    """Per-task table with the total, then the feedback of every part that did not pass."""
    rows, by_task = [], {}
    for r in rep["results"]:
        t = by_task.setdefault(r["task"], [0.0, 0.0, []])
        t[0] += r["earned"]
        t[1] += r["points"]
        if r["earned"] < r["points"]:
            t[2].append(r)
    w = max([len(k) for k in by_task] + [4])
    rows.append(f"{rep['notebook']}")
    rows.append(f"  {'task':<{w}}  score  title")
    for name, (e, p, _) in by_task.items():
        try:
            title = get_task(name).title
        except KeyError:
            title = ""
        rows.append(f"  {name:<{w}}  {e:g}/{p:g}{' ' * max(1, 5 - len(f'{e:g}/{p:g}'))}  {title}")
    rows.append(f"  {'total':<{w}}  {rep['score']:g}/{rep['total']:g}")
    if verbose:
        fails = [r for _, (_, _, fs) in by_task.items() for r in fs]
        if fails:
            rows.append("")
            rows.append("  feedback:")
            for r in fails:
                rows.append(f"  - {r['task']} [{r['part']}]: {r['message']}")
        if rep.get("cell_errors"):
            rows.append("")
            rows.append("  cells that raised an error while the notebook ran:")
            rows.extend(f"  - {e}" for e in rep["cell_errors"])
        if "runs as root" in rep.get("isolation", ""):
            rows += ["", f"  note: {rep['isolation']}"]
    return "\n".join(rows)


def _worker(args) -> int:
    """One notebook, its bytes on stdin: grade it, print the report as JSON (``main`` runs one per notebook)."""
    data = sys.stdin.buffer.read(MAX_NOTEBOOK_BYTES + 1)
    if args.isolation:  # the parent's answer to ``unprivileged_user`` (asked once, not once a notebook)
        from . import kernel
        kernel._USER_OK["user"] = tuple(json.loads(args.isolation))
    try:
        rep = grade_notebook(Path(args.worker), cell_timeout=args.cell_timeout, tasks=args.task, data=data)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(json.dumps({"error": str(e.args[0] if e.args else e)}))
        return 0
    print(json.dumps(rep))
    return 0


def _grade_in_worker(path: Path, data: bytes, args) -> dict:
    """Grade in a process of its own whose command line and folder name only this notebook's private copy."""
    cmd = [sys.executable, "-m", "engine.grader", "--worker", path.name, "--cell-timeout", str(args.cell_timeout),
           "--isolation", json.dumps(unprivileged_user())]
    for t in args.task or []:
        cmd += ["--task", t]
    folder = tempfile.mkdtemp(prefix="engine-grader-")
    try:
        r = subprocess.run(cmd, input=data, capture_output=True, cwd=folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    try:
        rep = json.loads(r.stdout.decode().strip().splitlines()[-1])
    except Exception:
        tail = r.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {r.returncode}"]
        raise RuntimeError(f"the grader's worker for {path} failed: {tail[0][:300]}") from None
    if "error" in rep:
        raise ValueError(rep["error"].replace(path.name, str(path), 1))
    rep["notebook"] = str(path)
    validate(rep["results"], list(dict.fromkeys(r["task"] for r in rep["results"])))
    return rep


def main(argv=None) -> int:
    import argparse
    import hashlib

    ap = argparse.ArgumentParser(prog="python -m engine.grader",
                                 description="Grade exercise notebooks: run each in a kernel of its own (the file is "
                                             "only read) and print a per-task table, the total and feedback.")
    ap.add_argument("notebooks", nargs="*", help="exercise notebooks, e.g. exercises/05_layers.ipynb")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    ap.add_argument("--quiet", action="store_true", help="only the table, no feedback")
    ap.add_argument("--cell-timeout", type=float, default=120, help="seconds before a cell is stopped (120)")
    ap.add_argument("--task", action="append", help="grade only this task (repeatable)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--isolation", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args)
    if not args.notebooks:
        ap.error("give at least one notebook")
    reports, status, read = [], 0, []
    for nbp in args.notebooks:  # every file is read before any learner code runs: a later change cannot matter
        try:
            data = read_notebook(nbp)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
            status = 2
            continue
        read.append((Path(nbp), data))
    for path, data in read:
        try:
            rep = _grade_in_worker(path, data, args)
        except (ValueError, KeyError, RuntimeError) as e:
            print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
            status = 2
            continue
        reports.append(rep)
        if not args.json:
            print(format_report(rep, verbose=not args.quiet))
            print()
    for path, data in read:  # say so when a file changed while we graded (we graded what we read first)
        try:
            changed = hashlib.sha256(read_notebook(path)).digest() != hashlib.sha256(data).digest()
        except (FileNotFoundError, ValueError):
            changed = True
        if changed:
            print(f"note: {path} changed on disk while grading; its grade is of the file as it was read at the "
                  "start", file=sys.stderr)
    if args.json:
        print(json.dumps(reports, indent=1))
    elif len(reports) > 1:
        s, t = sum(r["score"] for r in reports), sum(r["total"] for r in reports)
        print(f"all notebooks: {s:g}/{t:g}")
    return status
