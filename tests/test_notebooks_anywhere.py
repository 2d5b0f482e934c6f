"""The chapters and exercises read and run outside the built book: JupyterLab, Notebook 7, Colab, Binder.

Fast checks: no MyST syntax that those clients show raw, numbers in the prose equal to what the code
glued, the set-up cell and links in step with ``_config.yml``, a silent set-up cell where the course is
installed, a Binder environment. The slow
one does what a Colab user does: a fresh environment with only a kernel, every notebook run top to bottom,
the set-up cell installing the course from this clone (``HOW_GPT3_WORKS_SOURCE``).
"""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import course_notebooks as cn  # noqa: E402

NOTEBOOKS = cn.notebooks()
IDS = [str(p.relative_to(ROOT)) for p, _ in NOTEBOOKS]
MYST_ROLE = re.compile(r"\{[a-z][\w:.-]*\}`")
MYST_DIRECTIVE = re.compile(r"^\s*(```+|:::+)\s*\{", re.M)


def _nb(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _markdown(nb):
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


def test_notebooks_are_in_step_with_their_outputs_and_config():
    assert cn.main(["--check"]) == 0, "run `make notebooks` (python book/_ext/course_notebooks.py)"


@pytest.mark.parametrize("path, exercise", NOTEBOOKS, ids=IDS)
def test_prose_has_no_syntax_jupyter_shows_raw(path, exercise):
    for md in _markdown(_nb(path)):
        assert not MYST_ROLE.search(md), f"a MyST role, shown raw in JupyterLab and Colab: {md[:200]}"
        assert not MYST_DIRECTIVE.search(md), f"a MyST directive, shown raw in JupyterLab and Colab: {md[:200]}"
        assert "{{" not in md, "a MyST substitution, shown raw in JupyterLab and Colab"


@pytest.mark.parametrize("path, exercise", NOTEBOOKS, ids=IDS)
def test_first_code_cell_is_the_setup_cell(path, exercise):
    nb = _nb(path)
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    tags = first["metadata"].get("tags", [])
    assert cn.SETUP_TAG in tags and "remove-cell" in tags
    url, branch = cn.repository()
    assert "".join(first["source"]) == cn.setup_source(url, branch, exercise)
    assert not first.get("outputs"), "where the course is installed the set-up cell prints nothing"


def test_every_quoted_number_is_formatted_as_the_book_formats_it():
    from myst_nb.core.variables import format_plain_text

    n = 0
    for path, _ in NOTEBOOKS:
        nb = _nb(path)
        values = cn.glued_values(nb)
        for md in _markdown(nb):
            for spec, shown in cn.SPAN.findall(md):
                name, fmt = spec.rsplit(":", 1) if ":" in spec else (spec, "")
                assert shown == format_plain_text(values[name], fmt) == cn.format_glued(values[name], fmt)
                n += 1
    assert n >= 70  # the chapters quote about 72 computed numbers


def test_a_stale_number_is_caught_and_rewritten(tmp_path):
    nb = {"cells": [
        {"cell_type": "code", "id": "a", "metadata": {}, "execution_count": 1, "source": "glue('x', 0.123456)",
         "outputs": [{"output_type": "display_data", "metadata": {"scrapbook": {"name": "x", "mime_prefix": "p/"}},
                      "data": {"p/text/plain": "0.123456"}}]},
        {"cell_type": "markdown", "id": "b", "metadata": {},
         "source": 'We get <span data-glue="x:.2f">0.99</span> and {glue:text}`x:.3f`; see {exercise}`05_layers`.'},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    p = tmp_path / "01_x.ipynb"
    p.write_text(json.dumps(nb))
    out = cn.sync_notebook(p, "https://example.org/r", "dev")
    md = "".join(out["cells"][2]["source"])
    assert md == ('We get <span data-glue="x:.2f">0.12</span> and <span data-glue="x:.3f">0.123</span>; see '
                  "[exercises/05_layers.ipynb](https://example.org/r/blob/dev/exercises/05_layers.ipynb).")
    assert cn.spans_to_roles(md).startswith("We get {glue:text}`x:.2f` and {glue:text}`x:.3f`")
    assert cn.SETUP_TAG in out["cells"][0]["metadata"]["tags"]
    nb["cells"][1]["source"] = "quotes <span data-glue=\"nope\">1</span>"
    p.write_text(json.dumps(nb))
    with pytest.raises(KeyError, match="nope"):
        cn.sync_notebook(p, "https://example.org/r", "dev")


def test_setup_cell_is_silent_where_the_course_is_installed(tmp_path):
    url, branch = cn.repository()
    for exercise in (None, "05_layers"):  # a chapter and an exercise notebook
        # a source that cannot be installed: the cell must not even try
        env = dict(os.environ, HOW_GPT3_WORKS_SOURCE=str(tmp_path / "nowhere"))
        shutil_cwd = tmp_path / (exercise or "chapter")
        shutil_cwd.mkdir()
        if exercise:
            (shutil_cwd / f"{exercise}.ipynb").write_text("{}")
        r = subprocess.run([sys.executable, "-c", cn.setup_source(url, branch, exercise)], cwd=shutil_cwd,
                           env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "" and r.stderr == ""
        assert not (shutil_cwd / "tests").exists()


def test_exercise_links_open_the_exercise():
    url, branch = cn.repository()
    for path, exercise in NOTEBOOKS:
        if exercise or path.stem not in {p.stem for p, e in NOTEBOOKS if e}:
            continue
        md = "\n".join(_markdown(_nb(path)))
        assert f"[exercises/{path.stem}.ipynb]({url}/blob/{branch}/exercises/{path.stem}.ipynb)" in md


def test_binder_environment_installs_the_course():
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.1[0-9]", runtime)
    post = (ROOT / "binder" / "postBuild").read_text()
    assert re.search(r'pip install .*"\.\[[^]]*notebooks[^]]*\]"', post) or re.search(r"\.\[[^]]*exercises", post)
    assert os.access(ROOT / "binder" / "postBuild", os.X_OK)
    assert "jupyterlab" in (ROOT / "_config.yml").read_text()  # Binder opens the chapter in JupyterLab


# ---------------------------------------------------------------------- a fresh environment, as in Colab
RUNNER = textwrap.dedent("""
    import json, sys, nbformat
    from nbclient import NotebookClient
    path, cwd = sys.argv[1], sys.argv[2]
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": cwd}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/plain", ""))
                   for c in nb.cells for o in c.get("outputs", []))
    print(json.dumps({"errors": len(errors), "text": text}))
""")


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """A virtual environment with only Jupyter's kernel and nbclient: no course, no plotting, no grader."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "ipykernel", "nbclient"], check=True, timeout=900)
    r = subprocess.run([str(py), "-c", "import engine"], capture_output=True)
    assert r.returncode != 0, "the bare environment must not see the course package"
    return py


def _run(py, notebook, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "JUPYTER"))}
    env.update(HOW_GPT3_WORKS_SOURCE=str(ROOT), MPLBACKEND="Agg")
    r = subprocess.run([str(py), "-c", RUNNER, str(notebook), str(cwd)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, f"{notebook.name} failed in the bare environment:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_every_notebook_runs_in_a_bare_environment(bare_python, tmp_path):
    for path, exercise in NOTEBOOKS:  # the first one's set-up cell installs the course from this clone
        res = _run(bare_python, path, path.parent)
        assert res["errors"] == 0, path.name
    # Colab: the exercise notebook's file is not beside the kernel; its grader needs none
    colab = tmp_path / "content"
    colab.mkdir()
    res = _run(bare_python, ROOT / "exercises" / "02_training.ipynb", colab)
    assert res["errors"] == 0
    for task in ("make_windows", "cross_entropy", "sgd_step"):
        assert f"{task} results: 0/" in res["text"], res["text"][:2000]  # graded: nothing solved yet
