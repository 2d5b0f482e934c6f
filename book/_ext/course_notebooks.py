"""Keep the chapters and exercise notebooks readable and runnable outside the built book.

The book (Jupyter Book) understands MyST roles; JupyterLab, Notebook 7 and Colab do not, and show them
raw. So the notebooks carry only what every client renders, and the book's build turns it back into
MyST as the source is read (``book_ext.py``):

* **Numbers in the prose** are HTML spans, ``<span data-glue="ours_m:.1f">3.5</span>``. Jupyter and Colab
  show the number; the book's build turns the span into ``{glue:text}`ours_m:.1f``` and so prints the value
  that the chapter's code computed in that very build. The number inside the span is the one the
  committed outputs glued; ``--check`` (a test) fails when it is stale, ``sync`` rewrites it.
* **Links to the exercises** are plain Markdown links into the repository set in ``_config.yml``.
* **A set-up cell** opens every notebook: where the course package is not installed (Colab, a bare
  Binder), it installs it from the repository in ``_config.yml``, or from ``HOW_GPT3_WORKS_SOURCE`` (a
  path or URL; how the tests try it), and prints nothing where the package is there. The book removes
  the cell (tag ``remove-cell``). An exercise notebook's cell installs the ``exercises`` extra; its
  grader reads the checks from the installed package, so it needs no file beside the kernel (Colab).

    python book/_ext/course_notebooks.py            # rewrite the notebooks (after `make book-execute`)
    python book/_ext/course_notebooks.py --check    # exit 1 if any notebook is out of date
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# The text `{glue:text}`name:fmt`` prints for a glued text/plain: myst-nb's own rule, so the notebooks
# quote a number exactly as the book prints it.
from myst_nb.core.variables import format_plain_text as format_glued

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "how-gpt3-works"
SETUP_TAG = "course-setup"
ENV_SOURCE = "HOW_GPT3_WORKS_SOURCE"

ROLE = re.compile(r"\{glue:text\}`([^`]+)`")
SPAN = re.compile(r'<span data-glue="([^"]+)">([^<]*)</span>')
EXERCISE_ROLE = re.compile(r"\{exercise\}`([\w.]+)`")
EXERCISE_LINK = re.compile(r"\[exercises/(\w+)\.ipynb\]\([^)\s]*\)")


def repository(root: Path = ROOT) -> tuple[str, str]:
    """``(url, branch)`` of the repository, read from ``_config.yml`` (the one place they are set)."""
    text = (root / "_config.yml").read_text()
    block = re.search(r"^repository:\n((?:[ \t]+.*\n?)+)", text, re.M)
    if not block:
        raise ValueError("_config.yml has no repository: section")
    url = re.search(r"^\s+url:\s*(\S+)", block.group(1), re.M)
    branch = re.search(r"^\s+branch:\s*(\S+)", block.group(1), re.M)
    if not url:
        raise ValueError("_config.yml: repository.url is not set")
    return url.group(1).rstrip("/"), branch.group(1) if branch else "main"


def setup_source(url: str, branch: str, exercise: str | None = None) -> str:
    """The set-up cell's code: install the course where it is missing; silent where it is installed."""
    extra = "exercises" if exercise else "notebooks"
    lines = [
        "#@title Set-up for Colab and Binder: installs the course where it is missing (a no-op here)",
        "import importlib.metadata, os, subprocess, sys",
        "try:",
        f'    importlib.metadata.distribution("{PACKAGE}")',
        "except importlib.metadata.PackageNotFoundError:",
        f'    src = os.environ.get("{ENV_SOURCE}", "git+{url}@{branch}")',
        f'    req = f"{{src}}[{extra}]" if os.path.exists(src) else f"{PACKAGE}[{extra}] @ {{src}}"',
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", req], check=True)',
        "    importlib.invalidate_caches()",
    ]
    return "\n".join(lines)


def setup_cell(url: str, branch: str, exercise: str | None = None, cell_id: str | None = None) -> dict:
    cell = {"cell_type": "code", "execution_count": None, "id": cell_id or "course-setup",
            # folded in JupyterLab, Notebook 7 (source_hidden) and Colab (a form showing the #@title)
            "metadata": {"tags": ["remove-cell", SETUP_TAG], "jupyter": {"source_hidden": True}, "cellView": "form"},
            "outputs": [],
            "source": setup_source(url, branch, exercise)}
    return cell


def glued_values(nb: dict) -> dict[str, str]:
    """``{name: text/plain}`` of every ``glue()`` call in a notebook's saved outputs."""
    out = {}
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            meta = o.get("metadata", {}).get("scrapbook")
            if not meta:
                continue
            data = o.get("data", {})
            text = data.get(meta.get("mime_prefix", "") + "text/plain")
            if text is not None:
                out[meta["name"]] = "".join(text) if isinstance(text, list) else text
    return out


def _value(values: dict, spec: str, where: str) -> str:
    name, fmt = spec.rsplit(":", 1) if ":" in spec else (spec, "")
    if name not in values:
        raise KeyError(f"{where}: the prose quotes '{name}', which no cell glues")
    return format_glued(values[name], fmt)


def spans_to_roles(markdown: str) -> str:
    """For the book's build: each number span becomes the glue role that prints the freshly computed value."""
    return SPAN.sub(lambda m: f"{{glue:text}}`{m.group(1)}`", markdown)


def sync_notebook(path: Path, url: str, branch: str, exercise: str | None = None,
                  setup: bool = True) -> dict:
    """The notebook at ``path`` brought up to date (returned, not written)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    values = glued_values(nb)
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        src = "".join(cell["source"])
        new = ROLE.sub(lambda m: f'<span data-glue="{m.group(1)}">{_value(values, m.group(1), path.name)}</span>', src)
        new = SPAN.sub(lambda m: f'<span data-glue="{m.group(1)}">{_value(values, m.group(1), path.name)}</span>', new)
        link = lambda stem: f"[exercises/{stem}.ipynb]({url}/blob/{branch}/exercises/{stem}.ipynb)"
        new = EXERCISE_ROLE.sub(lambda m: link(m.group(1).removesuffix(".ipynb")), new)
        new = EXERCISE_LINK.sub(lambda m: link(m.group(1)), new)
        if new != src:
            cell["source"] = new.splitlines(keepends=True)
    if setup:
        cells = [c for c in nb["cells"] if SETUP_TAG not in c.get("metadata", {}).get("tags", [])]
        old = next((c for c in nb["cells"] if SETUP_TAG in c.get("metadata", {}).get("tags", [])), None)
        cell = setup_cell(url, branch, exercise, cell_id=old.get("id") if old else None)
        if old is not None:  # keep whatever the last execution recorded for it
            cell["execution_count"] = old.get("execution_count")
            cell["metadata"] = {**old.get("metadata", {}), **cell["metadata"]}
        cell["source"] = cell["source"].splitlines(keepends=True)
        first_code = next((i for i, c in enumerate(cells) if c["cell_type"] == "code"), len(cells))
        cells.insert(first_code, cell)
        nb["cells"] = cells
    return nb


def notebooks(root: Path = ROOT) -> list[tuple[Path, str | None]]:
    """Every chapter and exercise notebook, with the exercise's name (None for a chapter)."""
    out = [(p, None) for p in sorted((root / "book").glob("[0-9][0-9]_*.ipynb"))]
    out += [(p, p.stem) for p in sorted((root / "exercises").glob("[0-9][0-9]_*.ipynb"))]
    return out


def dump(nb: dict) -> str:
    """The notebook's JSON text, byte for byte as nbformat writes it."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"  # as nbformat writes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook is out of date")
    args = ap.parse_args(argv)
    url, branch = repository()
    stale = []
    for path, exercise in notebooks():
        before = path.read_text(encoding="utf-8")
        after = dump(sync_notebook(path, url, branch, exercise))
        if json.loads(after) != json.loads(before):
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(after, encoding="utf-8")
    if args.check and stale:
        print("out of date (run `python book/_ext/course_notebooks.py`):", *stale, sep="\n  ")
        return 1
    for p in stale:
        print(f"updated {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
