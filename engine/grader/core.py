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
from .remote import RemoteFunction
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
    if isinstance(obj, RemoteFunction):  # the shell grader: the kernel looked at the function's code
        return obj.stub
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


# ---------------------------------------------------------------------- in the notebook
def _points(x: float) -> str:
    return f"{x:g} point{'' if x == 1 else 's'}"


class TaskReport:
    """What ``grader.check("task")`` shows in a notebook: each part's title, points and feedback, no internals."""

    def __init__(self, name: str, results: list):
        self.name, self.results = name, results

    @property
    def score(self) -> float:
        return sum(r.earned for r in self.results)

    @property
    def total(self) -> float:
        return sum(r.points for r in self.results)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def __repr__(self) -> str:
        title = get_task(self.name).title
        lines = [f"{self.name} results: {self.score:g}/{self.total:g} ({title})"]
        msgs = {r.message for r in self.results if not r.passed}
        if len(self.results) > 1 and not any(r.passed for r in self.results) and len(msgs) == 1:
            parts = "; ".join(f"{r.part} ({_points(r.points)})" for r in self.results)
            return "\n".join(lines + [f"  ❌ every part: {parts}", f"     {msgs.pop()}"])
        for r in self.results:
            if r.passed:
                lines.append(f"  ✅ {r.part} ({_points(r.points)})")
            else:
                lines.append(f"  ❌ {r.part} (0 of {_points(r.points)}): {r.message}")
        return "\n".join(lines)


class ChapterReport:
    """What ``grader.check_all()`` shows: the notebook's total and a per-task table, then what still fails."""

    def __init__(self, reports: list):
        self.reports = reports

    @property
    def score(self) -> float:
        return sum(r.score for r in self.reports)

    @property
    def total(self) -> float:
        return sum(r.total for r in self.reports)

    def __repr__(self) -> str:
        w = max([len(r.name) for r in self.reports] + [5])
        lines = [f"total: {self.score:g}/{self.total:g}", "", f"  {'task':<{w}}  score   title"]
        for r in self.reports:
            s = f"{r.score:g}/{r.total:g}"
            lines.append(f"  {r.name:<{w}}  {s:<6}  {get_task(r.name).title}")
        fails, seen = [], set()
        for rep in self.reports:
            for x in rep.results:
                if not x.passed and (rep.name, x.message) not in seen:  # a stub's message once per task
                    seen.add((rep.name, x.message))
                    fails.append(f"  ❌ {rep.name} / {x.part} (0 of {_points(x.points)}): {x.message}")
        if fails:
            lines += ["", "still to do:"] + fails
        return "\n".join(lines)


class NotebookGrader:
    """The ``grader`` object of an exercise notebook; needs no file (a renamed or moved copy grades the same).

    ``grader.check("layernorm")`` grades one task against the notebook's namespace; ``grader.check_all()``
    grades every task of the chapter and shows the total.
    """

    def __init__(self, chapter: str):
        chapter_tasks(chapter)  # an unknown chapter raises KeyError here, not at the first check
        self.chapter = chapter

    @staticmethod
    def _env(env):
        if env is not None:
            return env
        import inspect

        frame = inspect.currentframe().f_back.f_back  # the notebook cell that called check / check_all
        return frame.f_globals

    def check(self, name: str, env: dict | None = None) -> TaskReport:
        return TaskReport(name, check(name, self._env(env)))

    def check_all(self, env: dict | None = None) -> ChapterReport:
        env = self._env(env)
        return ChapterReport([TaskReport(n, check(n, env)) for n in chapter_tasks(self.chapter)])

    def __repr__(self) -> str:
        return f"grader for {self.chapter}: grader.check('task') grades one task, grader.check_all() all of them"
