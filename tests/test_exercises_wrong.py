"""Every graded task catches at least one plausible wrong answer with the right, specific message.

The wrong answers live in tests/wrong_answers/ (one module per chapter). Runs in-process: no kernel.
"""
import importlib.util
from pathlib import Path

import pytest

from engine.grader import REGISTRY, check, get_task

HERE = Path(__file__).parent / "wrong_answers"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"wrong_answers_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MODULES = sorted(p.stem for p in HERE.glob("ch*.py"))
CASES = [(m, i, c) for m in MODULES for i, c in enumerate(_load(m).CASES)]


@pytest.mark.parametrize("module,index,case", CASES, ids=[f"{m}-{c[0]}-{i}" for m, i, c in CASES])
def test_wrong_answer_is_caught_with_the_right_message(module, index, case):
    task, env, expected = case
    results = check(task, dict(env))
    t = get_task(task)
    assert sum(r.earned for r in results) < t.points, f"{task}: a wrong answer got full marks"
    messages = [r.message for r in results if not r.passed]
    assert any(expected in m for m in messages), f"{task}: expected {expected!r} in one of {messages}"


def test_every_task_has_a_wrong_answer():
    get_task("layernorm")  # registers every chapter
    covered = {c[0] for _, _, c in CASES}
    assert set(REGISTRY) <= covered, f"tasks without a wrong answer: {sorted(set(REGISTRY) - covered)}"


RIGHT = [(m, i, c) for m in MODULES for i, c in enumerate(getattr(_load(m), "RIGHT", []))]


@pytest.mark.parametrize("module,index,case", RIGHT, ids=[f"{m}-{c[0]}-{i}" for m, i, c in RIGHT])
def test_correct_answer_written_differently_gets_full_marks(module, index, case):
    task, env = case
    results = check(task, dict(env))
    failed = [f"[{r.part}] {r.message}" for r in results if not r.passed]
    assert not failed, f"{task}: a correct answer lost marks: {failed}"
