"""Small Sphinx additions for the course book.

* Widget JavaScript served from the site itself when ``book/_wm/wm`` holds it (``make widgets-js``
  installs it from npm), so widgets render from saved state with no CDN; otherwise myst-nb's CDN
  default is kept; MathJax likewise. ``setup.js`` tells require.js where the widget modules live (so that their fonts
  come from ``_static/wm`` too) and bridges the widgets' MathJax 2 call to MathJax 3.
* The numbers the chapters' prose quotes are HTML spans in the notebooks, so that JupyterLab, Notebook 7
  and Colab show them (``course_notebooks.py``); as a chapter is read, each span becomes the ``{glue:text}``
  role it stands for, so the book prints the value computed in this very build.
* The files the widgets need to compute in the page (tokenizer ranks, the models as ONNX graphs): the
  chapters' kernels publish them into ``COURSE_SITE_DIR`` as they run (``engine/widgets/site.py``), and
  the build copies that folder to ``_static/course/``.
* Each inline script is emitted once per page (sphinx-thebe's configuration script can be registered
  twice, which is a JavaScript error: ``const`` declared twice).
"""
import json
import os
import shutil
from pathlib import Path

from course_notebooks import spans_to_roles

WM = Path(__file__).resolve().parent.parent / "_wm"
WIDGET_JS = ("wm/require.js", "wm/setup.js", "wm/embed-amd.js")
MATHJAX = "wm/mathjax/tex-mml-chtml.js"


def _local_widget_js(app, config):
    if all((WM / f).is_file() for f in WIDGET_JS):
        config.html_static_path = [*config.html_static_path, str(WM)]
        config.nb_ipywidgets_js = {f: {} for f in WIDGET_JS}
    if (WM / MATHJAX).is_file():
        config.mathjax_path = MATHJAX  # relative to _static


def _site_files(app, config):
    # set before any chapter runs: the kernels inherit it and publish what their widgets need there
    folder = Path(app.outdir).parent / ".course_site"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["COURSE_SITE_DIR"] = str(folder)


def _copy_site_files(app, exception):
    if exception is None and app.builder.format == "html":
        shutil.copytree(os.environ["COURSE_SITE_DIR"], Path(app.outdir) / "_static" / "course", dirs_exist_ok=True)


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    seen, out = set(), []
    for js in context.get("script_files", []):
        # filename ('' and None both mean inline), and attributes (an inline script's body included)
        key = (getattr(js, "filename", str(js)) or "", repr(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            out.append(js)
    context["script_files"] = out


def _glue_roles(app, docname, source):
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    nb = json.loads(source[0])
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = spans_to_roles("".join(cell["source"]))
    source[0] = json.dumps(nb)


def setup(app):
    app.connect("config-inited", _local_widget_js)
    app.connect("config-inited", _site_files)
    app.connect("build-finished", _copy_site_files)
    app.connect("html-page-context", _dedupe_scripts, priority=900)  # after the others add theirs
    app.connect("source-read", _glue_roles)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
