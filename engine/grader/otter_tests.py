"""The otter-grader test files of a chapter's exercises, made from the tasks registered here.

An exercise notebook carries its tests in its metadata, where ``grader.check`` finds them when the
notebook file sits beside the kernel (Jupyter, Binder). In Colab the kernel cannot see the notebook
file, so the notebook's set-up cell calls ``write_otter_tests`` to put the same tests in ``./tests``,
where otter looks next. ``tests/test_notebooks_anywhere.py`` checks that both are the same.
"""
from __future__ import annotations

from pathlib import Path

from .core import chapter_tasks, get_task


def otter_test_source(name: str) -> str:
    """The text of task ``name``'s otter test file: one exception-based case per graded part."""
    t = get_task(name)
    points = [p.points for p in t.parts]
    out = [f'from otter.test_files import test_case\n\nOK_FORMAT = False\n\nname = "{t.name}"\npoints = {points}\n\n']
    for i in range(len(t.parts)):
        out.append(f"@test_case(points=None, hidden=False)\ndef test_{t.name}_{i}(env):\n"
                   f"    from engine.grader import check_part\n    check_part({t.name!r}, {i}, env)\n\n")
    return "".join(out)


def write_otter_tests(chapter: str, directory="tests") -> list[Path]:
    """Write ``<directory>/<task>.py`` for every task of ``chapter`` (a notebook stem such as
    ``"05_layers"``) and return the paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in chapter_tasks(chapter):
        p = d / f"{name}.py"
        p.write_text(otter_test_source(name), encoding="utf-8")
        paths.append(p)
    return paths
