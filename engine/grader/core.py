"""Tasks, their parts, and grading a notebook's namespace.

A ``Task`` is one graded exercise: the names it reads from the learner's notebook
(``needs``) and independent ``parts``, each worth some points (partial credit). A
part is a function of the learner's objects that returns normally when it passes and
raises ``Fail("what went wrong, with a hint")`` when it does not.
"""
from __future__ import annotations

import dataclasses
import traceback
import warnings

import numpy as np

from . import checks  # noqa: F401  (importing it registers every chapter's tasks)
from .runner import Fail, _TimeUp, time_limit
from .tasks import CHAPTERS, REGISTRY, Part, Task, task  # noqa: F401  (re-exported)

PART_TIMEOUT = 60.0  # a whole part, on top of each learner call's own limit


@dataclasses.dataclass
class PartResult:
    task: str
    part: str
    points: float
    earned: float
    message: str

    @property
    def passed(self) -> bool:
        return self.earned == self.points


def get_task(name: str) -> Task:
    if name not in REGISTRY:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def _empty(): ...


def is_stub(obj) -> bool:
    """True for ``...`` itself and for a function whose body is only ``...`` (or ``pass``, a docstring)."""
    if obj is Ellipsis:
        return True
    code = getattr(obj, "__code__", None)
    return code is not None and code.co_code == _empty.__code__.co_code and not code.co_names


def run_part(t: Task, index: int, env: dict) -> PartResult:
    """Grade one part against the notebook namespace ``env``; never raises."""
    p = t.parts[index]
    missing = [n for n in t.needs if n not in env]
    if missing:
        return PartResult(t.name, p.title, p.points, 0.0,
                          f"`{missing[0]}` is not defined: run the cell that defines it (task {t.name})")
    stubs = [n for n in t.needs if is_stub(env[n])]
    if stubs:
        what = "is still `...`: set it" if env[stubs[0]] is Ellipsis else "is still empty: replace the `...` in its body"
        return PartResult(t.name, p.title, p.points, 0.0, f"`{stubs[0]}` {what} (task {t.name}: {t.title})")
    try:
        with time_limit(PART_TIMEOUT), np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # our hint probes may overflow on purpose
            p.fn(*[env[n] for n in t.needs])
        return PartResult(t.name, p.title, p.points, p.points, "passed")
    except Fail as e:
        return PartResult(t.name, p.title, p.points, 0.0, str(e))
    except _TimeUp:
        return PartResult(t.name, p.title, p.points, 0.0, f"the check took more than {PART_TIMEOUT:g} s: "
                          "your code is far too slow or never finishes")
    except Exception as e:  # a learner object that breaks the check itself (e.g. a weird return type)
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return PartResult(t.name, p.title, p.points, 0.0,
                          f"checking your answer failed with {type(e).__name__}: {e} (at {tb.name}); "
                          "check the type and shape of what you return")


def check(name: str, env: dict, part: int | None = None) -> list[PartResult]:
    """Grade task ``name`` (all parts, or one) against a notebook namespace (e.g. ``globals()``)."""
    t = get_task(name)
    idx = range(len(t.parts)) if part is None else [part]
    return [run_part(t, i, env) for i in idx]


def check_part(name: str, index: int, env: dict) -> None:
    """For otter test cases: pass silently, or raise AssertionError with the feedback."""
    r = check(name, env, index)[0]
    if not r.passed:
        raise AssertionError(f"[{r.part}] {r.message}")


def chapter_tasks(chapter: str) -> list[str]:
    if chapter not in CHAPTERS:
        raise KeyError(f"unknown chapter {chapter!r}; chapters: {', '.join(CHAPTERS)}")
    return list(CHAPTERS[chapter])


def grade_env(env: dict, tasks) -> list[dict]:
    """Grade several tasks; JSON-ready list of part results."""
    return [dataclasses.asdict(r) for name in tasks for r in check(name, env)]
