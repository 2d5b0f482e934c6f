"""The registry of graded tasks: ``task(...)`` registers one, its ``part`` decorator adds a graded part.

The chapters' checks (``engine.grader.checks``) register into it when imported; ``core`` grades them.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

REGISTRY: dict[str, "Task"] = {}
CHAPTERS: dict[str, list[str]] = {}  # chapter (notebook stem) -> task names in order


@dataclasses.dataclass
class Part:
    title: str
    points: float
    fn: Callable


@dataclasses.dataclass
class Task:
    name: str
    chapter: str
    title: str
    needs: tuple
    parts: list = dataclasses.field(default_factory=list)

    def part(self, title: str, points: float = 1):
        def deco(fn):
            self.parts.append(Part(title, points, fn))
            return fn
        return deco

    @property
    def points(self) -> float:
        return sum(p.points for p in self.parts)


def task(name: str, chapter: str, title: str, needs) -> Task:
    """Register a task; ``needs`` are the notebook names its parts receive, in order."""
    if name in REGISTRY:
        raise ValueError(f"task {name!r} registered twice")
    t = Task(name, chapter, title, tuple([needs] if isinstance(needs, str) else needs))
    REGISTRY[name] = t
    CHAPTERS.setdefault(chapter, []).append(name)
    return t
