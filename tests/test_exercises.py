"""The exercise notebooks: solutions get full marks, untouched learner copies run and score 0 with
helpful messages, learner copies hold no solutions and agree with the grader's tasks.

Each notebook runs in a real Jupyter kernel through the grader's own command (``grade_notebook``,
what ``python -m engine.grader`` runs): about 10 s per notebook here.
"""
import hashlib
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

from engine.grader import chapter_tasks, get_task
from engine.grader.notebook import grade_notebook

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ROOT / "exercises"
_spec = importlib.util.spec_from_file_location("exercises_build", EXERCISES / "build.py")
build = importlib.util.module_from_spec(_spec)  # exercises/build.py: sources -> learner copies
_spec.loader.exec_module(build)  # (by path: the name "build" is also a PyPI package)

CHAPTERS = ["02_training", "03_tokens", "04_parameters", "05_layers", "06_sparse_attention", "07_generation",
            "08_finetuning"]
BOOK_NAMES = {"02_training", "03_tokens", "04_parameters", "05_layers", "06_sparse_attention", "07_generation",
              "08_finetuning"}


def test_one_notebook_per_chapter_and_enough_tasks():
    assert set(build.chapters()) == set(CHAPTERS) == BOOK_NAMES
    for ch in CHAPTERS:
        assert (EXERCISES / f"{ch}.ipynb").is_file(), f"learner copy of {ch} missing: run python exercises/build.py"
    assert sum(len(chapter_tasks(ch)) for ch in CHAPTERS) >= 25


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_solution_notebook_gets_full_marks(chapter, tmp_path):
    path = tmp_path / f"{chapter}.ipynb"
    nbformat.write(build.master_notebook(chapter), str(path))
    rep = grade_notebook(path, cell_timeout=120)
    assert rep["cell_errors"] == []
    failed = [f"{r['task']} [{r['part']}]: {r['message']}" for r in rep["results"] if r["earned"] < r["points"]]
    assert not failed, "\n".join(failed)
    assert rep["score"] == rep["total"] > 0
    assert [r["task"] for r in rep["results"]] == [t for t in chapter_tasks(chapter) for _ in get_task(t).parts]


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_untouched_learner_copy_runs_and_scores_zero_with_feedback(chapter):
    path = EXERCISES / f"{chapter}.ipynb"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    rep = grade_notebook(path, cell_timeout=120, run_check_cells=True, return_notebook=True)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, "grading changed the learner's notebook"
    assert rep["cell_errors"] == [], "an untouched learner copy must run top to bottom without an error"
    assert rep["score"] == 0 and rep["total"] > 0
    for r in rep["results"]:
        assert re.search(r"`\.\.\.`", r["message"]), f"{r['task']} [{r['part']}]: unhelpful message {r['message']!r}"
    # otter's grader.check cells ran in the notebook and showed the same feedback
    shown = "\n".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "")
                      for c in rep["executed"].cells if c.cell_type == "code" and "grader.check(" in c.source
                      for o in c.outputs)
    for t in chapter_tasks(chapter):
        assert f"{t} results" in shown, f"grader.check({t!r}) printed nothing"
    assert "replace the `...`" in shown or "is still `...`" in shown


SOLUTION_BLOCK = re.compile(r"#\s*BEGIN SOLUTION\s*\n(.*?)#\s*END SOLUTION", re.S)


def _solution_lines(chapter):
    src = (EXERCISES / "source" / f"{chapter}.py").read_text()
    code = [c.source for c in build.master_notebook(chapter).cells if c.cell_type == "code"]
    lines = set()
    for cell in code:
        for block in SOLUTION_BLOCK.findall(cell):
            lines.update(line.strip() for line in block.splitlines())
        lines.update(line.split("# SOLUTION")[0].strip() for line in cell.splitlines() if line.rstrip().endswith("# SOLUTION"))
    shared = {line.strip() for line in SOLUTION_BLOCK.sub("", src).splitlines() if "# SOLUTION" not in line}
    return {line for line in lines if len(line) >= 12 and line not in shared}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_learner_copy_holds_no_solution_code(chapter):
    solution = _solution_lines(chapter)
    assert len(solution) >= 1
    learner = nbformat.read(str(EXERCISES / f"{chapter}.ipynb"), as_version=4)
    text = "\n".join(c.source for c in learner.cells if c.cell_type == "code")  # the prose may name an API
    leaked = [line for line in solution if line in text]
    assert not leaked, f"solution code in the learner copy: {leaked}"
    assert "BEGIN SOLUTION" not in text and "# SOLUTION" not in text


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_learner_copy_agrees_with_the_grader_and_its_source(chapter):
    learner = nbformat.read(str(EXERCISES / f"{chapter}.ipynb"), as_version=4)
    tests = learner.metadata["otter"]["tests"]
    assert sorted(tests) == sorted(chapter_tasks(chapter))
    for name, src in tests.items():
        parts = get_task(name).parts
        assert f"points = {[p.points for p in parts]}" in src
        assert [int(i) for i in re.findall(rf"check_part\('{name}', (\d+), env\)", src)] == list(range(len(parts)))
        assert f'grader.check("{name}")' in "\n".join(c.source for c in learner.cells)
    # the prose and the code without solutions are those of the source (copy rebuilt after edits)
    master = build.master_notebook(chapter)
    md = lambda nb: [c.source for c in nb.cells if c.cell_type == "markdown"]  # noqa: E731
    assert md(learner)[1] == build.HOW_TO_OPEN  # how to open it, then the set-up cell for Colab and Binder
    assert md(learner)[:1] + md(learner)[2:] == md(master), "learner copy is stale: run python exercises/build.py " + chapter
    plain = [c.source for c in master.cells if c.cell_type == "code" and "SOLUTION" not in c.source
             and not c.source.startswith("def test_")]
    learner_code = [c.source for c in learner.cells if c.cell_type == "code"]
    assert all(p in learner_code for p in plain), "learner copy is stale: run python exercises/build.py " + chapter
    assert "python -m engine.grader exercises/" + chapter + ".ipynb" in md(learner)[0]
    assert all(not c.get("outputs") for c in learner.cells if c.cell_type == "code")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_learner_copies_have_numbered_cell_ids(chapter):
    learner = nbformat.read(str(EXERCISES / f"{chapter}.ipynb"), as_version=4)
    assert [c.id for c in learner.cells] == [f"{chapter[:2]}-{i:03d}" for i in range(len(learner.cells))]


def test_rebuilding_a_chapter_rewrites_the_same_bytes(tmp_path):
    # random cell ids would make every rebuild a diff of every cell; numbered ones make it none
    chapter = "04_parameters"
    out = build.build(chapter, out_dir=tmp_path)
    assert out == tmp_path / f"{chapter}.ipynb"
    assert out.read_bytes() == (EXERCISES / f"{chapter}.ipynb").read_bytes(), \
        "learner copy is stale: run python exercises/build.py " + chapter
