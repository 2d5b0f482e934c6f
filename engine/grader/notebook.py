"""Grade a whole notebook from the shell: execute a copy, then run every task's checks in its kernel.

The learner's file is only read: we execute an in-memory copy in a temporary folder
(cells that only call ``grader.check`` are skipped, since we check everything at the
end anyway). A cell that raises is recorded and execution goes on; a cell that runs
too long is interrupted. Then one extra cell grades the notebook's namespace.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .core import REGISTRY, chapter_tasks, get_task

MARKER = "@@ENGINE_GRADER_RESULTS@@"
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


def _cell_errors(nb) -> list[str]:
    out = []
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                out.append(f"cell {i + 1}: {o.get('ename')}: {o.get('evalue')}".strip())
    return out


def grade_notebook(path, cell_timeout: float = 120, tasks=None, kernel_name: str | None = None,
                   run_check_cells: bool = False, return_notebook: bool = False,
                   grade_timeout: float | None = None) -> dict:
    """Execute a copy of notebook ``path`` and grade it.

    Returns {"notebook", "results": [part dicts], "score", "total", "cell_errors": [..]}, plus
    "executed" (the executed copy) with ``return_notebook``. ``run_check_cells`` keeps the
    notebook's own ``grader.check`` cells (skipped by default: everything is checked at the end).
    Raises FileNotFoundError / ValueError for a missing or unreadable notebook.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as e:
        raise ValueError(f"{path} is not a readable notebook: {e}") from None
    names = list(tasks) if tasks else notebook_tasks(nb, path)
    if not run_check_cells:
        nb.cells = [c for c in nb.cells if not (c.cell_type == "code" and _CHECK_CELL.match(c.source or ""))]
    code = ("import builtins as _b, json as _j, engine.grader as _g\n"  # immune to a learner's `print = ...`
            f"_b.print({MARKER!r} + _j.dumps(_g.grade_env(globals(), {names!r})))")
    nb.cells.append(nbformat.v4.new_code_cell(code))
    grade_index = len(nb.cells) - 1
    # every part has its own time limits; this only stops a kernel that no longer answers
    if grade_timeout is None:
        grade_timeout = 60 + 60 * sum(len(get_task(n).parts) for n in names)
    tmp = Path(tempfile.mkdtemp(prefix="engine-grader-"))
    try:
        nbformat.write(nb, str(tmp / path.name))  # some notebooks (otter's) look for their own file
        client = NotebookClient(
            nb, timeout=cell_timeout, kernel_name=kernel_name or "python3", allow_errors=True,
            interrupt_on_timeout=True, resources={"metadata": {"path": str(tmp)}},
            # a kernel stuck in C code ignores the interrupt: give up on the cell instead of waiting forever
            error_on_timeout={"ename": "TimeoutError", "evalue": "the cell ran too long and was interrupted",
                              "traceback": []},
            timeout_func=lambda cell: grade_timeout if cell is nb.cells[grade_index] else cell_timeout)
        try:
            client.execute(stderr=subprocess.DEVNULL)  # the kernel's own log lines, not the learner's output
        except Exception as e:  # the kernel died (e.g. os._exit in a cell) or never started
            died = f"the notebook's kernel stopped ({type(e).__name__}: {str(e).strip()[:200]})"
        else:
            died = None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = None
    text = "".join(o.get("text", "") for o in nb.cells[grade_index].get("outputs", []) if o.get("output_type") == "stream")
    if MARKER in text:
        results = json.loads(text.split(MARKER, 1)[1].strip().splitlines()[0])
    errors = _cell_errors(nb)
    if died:
        errors.append(died)
    own = [e for e in errors if e.startswith(f"cell {grade_index + 1}:")]
    errors = [e for e in errors if e not in own]
    if results is None:  # the kernel died or the grading cell failed: every part scores 0
        why = (own or errors or ["the notebook's kernel stopped before grading"])[-1]
        results = [{"task": n, "part": p.title, "points": p.points, "earned": 0.0,
                    "message": f"could not grade: {why}"} for n in names for p in get_task(n).parts]
    rep = {"notebook": str(path), "results": results, "score": sum(r["earned"] for r in results),
           "total": sum(r["points"] for r in results), "cell_errors": errors}
    if return_notebook:
        nb.cells = nb.cells[:grade_index]
        rep["executed"] = nb
    return rep


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
    return "\n".join(rows)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m engine.grader",
                                 description="Grade exercise notebooks: execute a copy of each (the file is not "
                                             "changed) and print a per-task table, the total and feedback.")
    ap.add_argument("notebooks", nargs="+", help="exercise notebooks, e.g. exercises/05_layers.ipynb")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    ap.add_argument("--quiet", action="store_true", help="only the table, no feedback")
    ap.add_argument("--cell-timeout", type=float, default=120, help="seconds before a cell is interrupted (120)")
    ap.add_argument("--task", action="append", help="grade only this task (repeatable)")
    args = ap.parse_args(argv)
    reports, status = [], 0
    for nbp in args.notebooks:
        try:
            rep = grade_notebook(nbp, cell_timeout=args.cell_timeout, tasks=args.task)
        except (FileNotFoundError, ValueError, KeyError) as e:
            print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
            status = 2
            continue
        reports.append(rep)
        if not args.json:
            print(format_report(rep, verbose=not args.quiet))
            print()
    if args.json:
        print(json.dumps(reports, indent=1))
    elif len(reports) > 1:
        s, t = sum(r["score"] for r in reports), sum(r["total"] for r in reports)
        print(f"all notebooks: {s:g}/{t:g}")
    return status
