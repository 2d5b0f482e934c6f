"""Graded exercises: checks that compare a learner's functions with the engine's own.

In a notebook (otter-grader's format): ``grader.check("layernorm")`` runs that task's
test cases, which call ``check_part`` here. From the shell, one command grades a whole
notebook without modifying it::

    python -m engine.grader exercises/05_layers.ipynb

In Python: ``engine.grader.check("layernorm", globals())`` returns a list of part results. An exercise
notebook's ``grader`` is ``engine.grader.NotebookGrader("05_layers")``.
"""
from .core import (CHAPTERS, REGISTRY, NotebookGrader, PartResult, Task, chapter_tasks, check, check_part, get_task,
                   grade_env)
from .runner import Fail, call

__all__ = ["CHAPTERS", "REGISTRY", "Fail", "NotebookGrader", "PartResult", "Task", "call", "chapter_tasks", "check",
           "check_part", "get_task", "grade_env", "show"]


def show(name: str, env: dict) -> None:
    """Print one task's parts and feedback (for use without otter)."""
    for r in check(name, env):
        mark = "ok  " if r.passed else "FAIL"
        print(f"{mark} {r.task} / {r.part}: {r.earned:g}/{r.points:g}" + ("" if r.passed else f"\n     {r.message}"))
