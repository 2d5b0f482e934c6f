"""The course book: its structure, the built site in headless Chromium, and one widget live in Voila.

The chapters' own cells are checked by nbval (see the README's book section):
``pytest --nbval book/`` re-executes every chapter and compares its outputs with the committed ones.

The browser tests need the built site (``make book``); if ``_build/html`` is missing or older than a
chapter they build it first. They drive Debian's Chromium (``/usr/bin/chromium``, or
``$CHROMIUM``) through Playwright; no browser is ever downloaded. The site must work offline: the
widget JavaScript is served from the site itself (``make widgets-js``).
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
# the built site: `make book` writes _build/html; COURSE_SITE names another build (used as it is, never rebuilt)
SITE = Path(os.environ.get("COURSE_SITE", ROOT / "_build" / "html"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CHAPTERS = ["01_introduction", "02_training", "03_tokens", "04_parameters", "05_layers", "06_sparse_attention",
            "07_generation", "08_finetuning", "09_appendix_gpu"]
EXERCISES = {"02_training", "03_tokens", "04_parameters", "05_layers", "06_sparse_attention", "07_generation",
             "08_finetuning"}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _nb(name):
    return json.loads((BOOK / f"{name}.ipynb").read_text())


def _outputs(nb):
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            yield out


# ---------------------------------------------------------------------- structure (fast, no browser)
def test_toc_lists_every_chapter_in_order():
    toc = (ROOT / "_toc.yml").read_text()
    found = re.findall(r"file:\s*book/(\S+)", toc)
    assert found == CHAPTERS
    assert "root: book/index" in toc and "numbered: true" in toc


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_is_executed_and_complete(name):
    nb = _nb(name)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("execution_count") for c in code), "commit chapters executed (with outputs)"
    assert not [o for o in _outputs(nb) if o.get("output_type") == "error"]
    text = "".join("".join(c["source"]) for c in nb["cells"])
    assert "## Summary" in text
    assert any(WIDGET_VIEW in o.get("data", {}) for o in _outputs(nb)), "at least one widget per chapter"
    if name in EXERCISES:
        assert f"[exercises/{name}.ipynb](" in text  # written from _config.yml (tests/test_notebooks_anywhere.py)
    # widget state is saved with the notebook, so the widgets render without a kernel
    assert nb["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state")


def test_repository_url_is_set_once():
    cfg = (ROOT / "_config.yml").read_text()
    urls = re.findall(r"https://github\.com/\S+", cfg)
    assert len(urls) == 1, urls
    # Chapters name it only where `make notebooks` writes it from _config.yml: the set-up cell and the
    # exercise links (both checked against the config in tests/test_notebooks_anywhere.py).
    url = urls[0].rstrip("/")
    for name in CHAPTERS:
        text = "".join("".join(c["source"]) for c in _nb(name)["cells"]
                       if "course-setup" not in c["metadata"].get("tags", []))
        text = re.sub(re.escape(url) + r"/blob/main/exercises/\w+\.ipynb", "", text)
        assert "github.com" not in text


# ---------------------------------------------------------------------- the built site
def _stale():
    if os.environ.get("COURSE_SITE"):
        return False
    index = SITE / "book" / "index.html"
    if not index.exists():
        return True
    built = index.stat().st_mtime
    sources = [*BOOK.glob("*.ipynb"), *BOOK.glob("*.md"), ROOT / "_config.yml", ROOT / "_toc.yml"]
    return any(p.stat().st_mtime > built for p in sources)


@pytest.fixture(scope="module")
def site():
    if _stale():
        jb = Path(sys.executable).with_name("jupyter-book")
        subprocess.run([str(jb), "build", str(ROOT), "-W", "--keep-going"], check=True, cwd=ROOT)
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `make browser-deps` installs Debian's chromium")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, url, **page_options):
    """Load a page; return (page, problems) where problems lists JS errors and failed or external requests.

    page_options: for ``browser.new_page`` (e.g. ``reduced_motion="reduce"``)."""
    page = browser.new_page(**page_options)
    problems = []
    page.on("pageerror", lambda e: problems.append(f"JavaScript error: {e}"))
    page.on("console", lambda m: m.type == "error" and problems.append(f"console error: {m.text}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))
    page.on("request", lambda r: not r.url.startswith(("http://127.0.0.1", "data:", "blob:", "about:"))
            and problems.append(f"external request: {r.url}"))
    page.goto(url, wait_until="load")
    return page, problems


@pytest.mark.browser
@pytest.mark.parametrize("name", ["index"] + CHAPTERS)
def test_page_loads_with_figures_and_widgets(site, browser, name):
    page, problems = _open(browser, f"{site}/book/{name}.html")
    try:
        if name == "index":
            assert page.locator("nav.bd-links a").count() >= len(CHAPTERS)
            page.wait_for_timeout(500)
            assert not problems, problems
            return
        nb = _nb(name)
        n_png = sum("image/png" in o.get("data", {}) for o in _outputs(nb))
        n_widgets = sum(WIDGET_VIEW in o.get("data", {}) for o in _outputs(nb))
        # every figure of the notebook is on the page and decoded by the browser
        imgs = page.locator(".cell_output img")
        assert imgs.count() >= n_png > 0 or n_png == 0
        page.wait_for_function("() => Array.from(document.querySelectorAll('.cell_output img'))"
                               ".every(i => i.complete && i.naturalWidth > 0)", timeout=15000)
        # every widget is rendered from its saved state by the self-hosted html-manager and anywidget
        # (every control of each is driven by tests/test_site_widgets.py, every animation by
        # tests/test_book_animations.py)
        page.wait_for_function(f"() => document.querySelectorAll('.cell_output .course-widget')"
                               f".length >= {n_widgets}", timeout=30000)
        rendered = page.locator(".cell_output .course-widget").all_inner_texts()
        assert len(rendered) >= n_widgets and all(t.strip() for t in rendered), "a widget rendered empty"
        page.wait_for_timeout(300)
        assert not problems, problems
    finally:
        page.close()


@pytest.mark.browser
def test_widget_javascript_is_self_hosted(site):
    html = (SITE / "book" / "03_tokens.html").read_text()
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', html)
    assert any("_static/wm/embed-amd.js" in s for s in scripts), scripts
    assert not [s for s in scripts if s.startswith("http")], "the site must not need a CDN"
    # what the widgets load themselves: anywidget's front end, tiktoken's and onnxruntime's WASM builds
    for f in ("anywidget/index.js", "tiktoken/tiktoken_bg.wasm", "ort/ort.wasm.min.mjs", "ort/ort-wasm-simd-threaded.wasm"):
        assert (SITE / "_static" / "wm" / f).is_file(), f
    assert "https://" not in (SITE / "_static" / "wm" / "setup.js").read_text()


@pytest.mark.browser
def test_what_the_page_runs_stays_small(site):
    # the models the widgets run in the page (float16 weights) and the ranks files: the README's figures
    course = SITE / "_static" / "course"
    models = list(course.glob("models/*/model.onnx"))
    assert models, "no model published for the page"
    assert all(m.stat().st_size < 8e6 for m in models), [(m.parent.name, m.stat().st_size) for m in models]
    assert sum(f.stat().st_size for f in course.rglob("*") if f.is_file()) < 20e6


@pytest.mark.browser
def test_results_table_is_rendered_as_a_table(site):
    # chapter 9 displays its benchmark ratios as Markdown; under plain CommonMark a table stays "| a | b |"
    # text, so the site must render cells' Markdown with tables (nb_render_markdown_format: gfm)
    nb = _nb("09_appendix_gpu")
    shown = [o["data"]["text/markdown"] for o in _outputs(nb) if "text/markdown" in o.get("data", {})]
    if not shown:
        pytest.skip("chapter 9 was executed without bench/results.json: no table to render")
    html = (SITE / "book" / "09_appendix_gpu.html").read_text()
    tables = re.findall(r"<table.*?</table>", html, flags=re.S)
    assert any("onnxruntime" in t and "<th" in t for t in tables), "the results table is not an HTML table"
    assert "| benchmark |" not in html


@pytest.mark.browser
def test_site_declares_its_icon(site):
    # a declared icon: browsers then never ask the server for /favicon.ico (a 404 in every page's log)
    html = (SITE / "book" / "01_introduction.html").read_text()
    icon = re.search(r'<link rel="icon" href="([^"]+)"', html)
    assert icon, "no <link rel='icon'> in the page"
    assert (SITE / "book" / icon.group(1)).resolve().is_file(), icon.group(1)


# ---------------------------------------------------------------------- one widget live, through Voila
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serving(proc, port, log, what, seconds):
    """Wait until ``proc`` accepts connections on ``port``; fail with its log if it exits or takes too long."""
    deadline = time.time() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{what} did not start: {log.read_text()}") from None
            time.sleep(0.5)


@pytest.fixture(scope="module")
def voila_url(tmp_path_factory):
    voila = shutil.which("voila", path=str(Path(sys.executable).parent)) or shutil.which("voila")
    if voila is None:
        pytest.skip("voila is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("voila") / "voila.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([voila, str(ROOT / "tests" / "browser_voila.ipynb"), "--no-browser",
                                 f"--port={port}", "--Voila.ip=127.0.0.1", "--show_tracebacks=True"],
                                stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        _serving(proc, port, log, "voila", 60)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.browser
def test_new_prompt_is_generated_by_the_kernel_in_voila(voila_url, browser):
    # in a live kernel the widget calls back into Python: the page sends the prompt, the engine generates
    import numpy as np

    from engine.pretrained import load_pretrained

    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(voila_url, timeout=90000)
        w = page.locator(".cw-generation")
        w.wait_for(timeout=90000)
        model, enc = load_pretrained()

        def engine(prompt):
            ids = enc.encode(prompt)
            return enc.decode([int(t) for t in np.asarray(model.generate(np.asarray(ids), 8, temperature=0.0))[len(ids):]])

        page.wait_for_function("(s) => document.querySelector('.cw-generation .cw-new')?.textContent === s",
                               arg=engine("ROMEO:"), timeout=60000)
        box = w.locator('[data-control="prompt"]')
        box.fill("KING HENRY:\nOnce more unto the breach")
        box.dispatch_event("change")
        page.wait_for_function("(s) => document.querySelector('.cw-generation .cw-new')?.textContent === s",
                               arg=engine("KING HENRY:\nOnce more unto the breach"), timeout=60000)
        assert not w.locator(".cw-status").inner_text()  # nothing ran in the page: no site, no model there
        assert not errors, errors
    finally:
        page.close()


@pytest.mark.parametrize("name", CHAPTERS)
def test_launch_buttons_open_the_chapters_notebook(site, name):
    # Colab and Binder (in JupyterLab) open this chapter's notebook in the repository of _config.yml,
    # whose set-up cell then installs the course (tests/test_notebooks_anywhere.py)
    page = (SITE / "book" / f"{name}.html").read_text()
    url = re.search(r"^\s+url:\s*https://github\.com/(\S+)", (ROOT / "_config.yml").read_text(), re.M).group(1)
    org_repo = url.rstrip("/")
    assert f"https://colab.research.google.com/github/{org_repo}/blob/main/book/{name}.ipynb" in page
    assert f"https://mybinder.org/v2/gh/{org_repo}/main?urlpath=lab/tree/book/{name}.ipynb" in page


# ---------------------------------------------------------------------- the committed notebooks in JupyterLab
@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a copy of the chapters, trusted as `make lab` and Binder's postBuild trust them,
    with its own data and runtime folders (so the machine's trust database is never touched)."""
    jupyter = Path(sys.executable).with_name("jupyter")
    root = tmp_path_factory.mktemp("lab")
    for name in ("02_training", "05_layers"):
        shutil.copy(BOOK / f"{name}.ipynb", root / f"{name}.ipynb")
    env = dict(os.environ, JUPYTER_DATA_DIR=str(root / ".data"), JUPYTER_RUNTIME_DIR=str(root / ".runtime"))
    subprocess.run([str(jupyter), "trust", *map(str, root.glob("*.ipynb"))], check=True, env=env, capture_output=True)
    port = _free_port()
    log = root / "lab.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(jupyter), "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
                                 "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}",
                                 "--LabApp.news_url=", "--LabServerApp.extra_labextensions_path=[]", "--allow-root"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        _serving(proc, port, log, "jupyter lab", 90)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.browser
@pytest.mark.parametrize("name", ["02_training", "05_layers"])
def test_committed_widgets_render_in_jupyterlab_before_any_cell_runs(lab, browser, name):
    n_widgets = sum(WIDGET_VIEW in o.get("data", {}) for o in _outputs(_nb(name)))
    page = browser.new_page(viewport={"width": 1200, "height": 2400})
    external = []
    page.on("request", lambda r: not r.url.startswith(("http://127.0.0.1", "data:", "blob:", "about:", "ws://127.0.0.1"))
            and external.append(r.url))
    try:
        page.goto(f"{lab}/lab/tree/{name}.ipynb", timeout=90000)
        # JupyterLab renders a notebook's cells lazily as they scroll into view: walk down the notebook
        seen = 0
        for _ in range(60):
            seen = max(seen, page.locator(".course-widget").count())
            if seen >= n_widgets:
                break
            page.mouse.wheel(0, 1500)
            page.wait_for_timeout(500)
        assert seen >= n_widgets > 0, f"{seen} of {n_widgets} widgets rendered from the saved state"
        assert page.locator(".jp-CodeCell .jp-InputArea-prompt:has-text('[*]')").count() == 0  # nothing ran
        assert not [u for u in external if "127.0.0.1" not in u], external
    finally:
        page.close()
