"""Make the learner copies of the exercise notebooks from their solution sources.

    python exercises/build.py              # every chapter
    python exercises/build.py 05_layers    # one chapter

Each ``exercises/source/NN_name.py`` is a notebook in Jupytext's percent format, written
in otter-grader's assignment format (``# BEGIN QUESTION`` / ``# BEGIN SOLUTION`` ...). For
every question we add its test cases, one per graded part of the task in
``engine.grader`` (with that part's points), so the notebook and the shell grader can
never disagree. Then ``otter assign`` strips the solutions and writes the learner copy,
which we save as ``exercises/NN_name.ipynb`` (tests in its metadata, no outputs), with a note on
how to open it and the set-up cell that makes it run in Colab and Binder (``book/_ext/course_notebooks.py``).
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "book" / "_ext"))
import course_notebooks as notebooks  # noqa: E402  (the set-up cell and the repository address, shared with the chapters)

HOW_TO_OPEN = (
    "**Opening this notebook.** From a clone of the repository, `make lab` opens JupyterLab in the course's "
    "environment (`exercises/` in its file browser). Or use the Colab and Binder buttons on the chapter's "
    "page in the book: the first code cell below installs the course there. Run the cells from the top."
)
SOURCES = HERE / "source"
INIT_CELL = ('# The grader: grader.check("task") grades one task, grader.check_all() the whole notebook\n'
             "from engine.grader import NotebookGrader\n"
             'grader = NotebookGrader("{chapter}")')
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def chapters() -> list[str]:
    return sorted(p.stem for p in SOURCES.glob("[0-9][0-9]_*.py"))


def master_notebook(chapter: str):
    """The otter master notebook (solutions and tests) of a chapter, as an nbformat notebook."""
    import jupytext
    import nbformat

    from engine.grader import get_task

    nb = jupytext.read(SOURCES / f"{chapter}.py", fmt="py:percent")
    cells = []
    current = None
    for cell in nb.cells:
        src = cell.source.strip()
        if cell.cell_type == "raw" and src.startswith("# BEGIN QUESTION"):
            m = re.search(r"^name:\s*(\S+)", src, re.M)
            if not m:
                raise ValueError(f"{chapter}: a BEGIN QUESTION cell without a name")
            current = get_task(m.group(1))
            points = [p.points for p in current.parts]
            cell.source = re.sub(r"^points:.*\n?", "", src, flags=re.M).rstrip() + f"\npoints: {points}"
        if cell.cell_type == "raw" and src.startswith("# END QUESTION"):
            if current is None:
                raise ValueError(f"{chapter}: END QUESTION without BEGIN QUESTION")
            cells.append(nbformat.v4.new_raw_cell("# BEGIN TESTS"))
            for i, part in enumerate(current.parts):
                cells.append(nbformat.v4.new_code_cell(
                    f"def test_{current.name}_{i}(env):\n"
                    f"    # {part.title} ({part.points:g} point{'s' if part.points != 1 else ''})\n"
                    f"    from engine.grader import check_part\n"
                    f"    check_part({current.name!r}, {i}, env)"))
            cells.append(nbformat.v4.new_raw_cell("# END TESTS"))
            current = None
        cell.metadata = {}
        cells.append(cell)
    nb.cells = cells
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    return nb


def build(chapter: str, out_dir: Path = HERE) -> Path:
    """Write ``<out_dir>/<chapter>.ipynb`` (the learner copy) and return its path.

    Cell ids are numbered (``NN-index``, NN the chapter number) rather than random, so rebuilding an
    unchanged chapter rewrites the same bytes and a diff shows only what changed.
    """
    import nbformat

    nb = master_notebook(chapter)
    with tempfile.TemporaryDirectory() as tmp:
        master = Path(tmp) / f"{chapter}.ipynb"
        nbformat.write(nb, str(master))
        out = Path(tmp) / "dist"
        r = subprocess.run([sys.executable, "-m", "otter", "assign", str(master), str(out)],
                           capture_output=True, text=True, cwd=tmp)
        student = out / "student" / f"{chapter}.ipynb"
        if r.returncode or not student.exists():
            raise RuntimeError(f"otter assign failed for {chapter}:\n{r.stdout}\n{r.stderr}")
        learner = nbformat.read(str(student), as_version=4)
        for cell in learner.cells:
            cell.metadata.pop("jupyter", None)
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        learner.metadata.pop("jupytext", None)
        if learner.cells and "otter.Notebook" in learner.cells[0].source and len(learner.cells) > 1:
            learner.cells.insert(1, learner.cells.pop(0))  # the title first, then otter's set-up cell
        init = next(c for c in learner.cells if "otter.Notebook" in c.source)
        # The grader reads the checks from the installed package, not from this file: a renamed or moved
        # copy, or Colab (where the file is not beside the kernel), grades the same. It shows each part's
        # title, points and feedback; the otter tests stay in the metadata for `otter grade`.
        init.source = INIT_CELL.format(chapter=chapter)
        learner.cells.insert(1, nbformat.v4.new_markdown_cell(HOW_TO_OPEN))
        for i, cell in enumerate(learner.cells):
            cell.id = f"{chapter[:2]}-{i:03d}"
        dest = Path(out_dir) / f"{chapter}.ipynb"
        nbformat.write(learner, str(dest))
    url, branch = notebooks.repository()
    synced = notebooks.sync_notebook(dest, url, branch, exercise=chapter)
    for i, cell in enumerate(synced["cells"]):
        cell["id"] = f"{chapter[:2]}-{i:03d}"
    dest.write_text(notebooks.dump(synced), encoding="utf-8")
    return dest


def main(argv=None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or chapters()
    for name in names:
        print(f"{name}: {build(name).relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
