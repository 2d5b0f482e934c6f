"""The course installs as a package: the wheel and sdist `python -m build` makes, installed in a fresh
virtual environment outside the repository, run the commands the README shows."""
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
META = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_distribution_name_version_and_changelog():
    assert META["name"] == "how-gpt3-works"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {META['version']} " in changelog, "every release has a changelog entry"
    import engine
    from importlib.metadata import version
    assert version("how-gpt3-works") == META["version"]
    assert Path(engine.__file__).parent == ROOT / "engine"


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: build with this environment's setuptools instead of downloading one
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=900)
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    return wheels[0], sdists[0]


@pytest.mark.slow
def test_wheel_holds_the_model_tokenizer_and_checks_and_no_tests(dist):
    wheel, sdist = dist
    assert wheel.name == f"how_gpt3_works-{META['version']}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("model.safetensors", "config.json", "tokenizer.tiktoken", "MODEL_CARD.md", "manifest.json"):
        assert f"engine/assets/shakespeare/{f}" in names
    checks = {p.name for p in (ROOT / "engine" / "grader" / "checks").glob("*.py")}
    assert checks <= {Path(n).name for n in names if n.startswith("engine/grader/checks/")}
    modules = {p.name for p in (ROOT / "engine" / "widgets" / "js").glob("*.js")}  # the widgets' front end
    assert modules and modules <= {Path(n).name for n in names if n.startswith("engine/widgets/js/")}
    assert not [n for n in names if n.startswith("tests/") or "/tests/" in n or "test_" in Path(n).name]
    assert not [n for n in names if n.startswith(("book/", "exercises/", "bench/"))]
    with tarfile.open(sdist) as tar:
        members = {Path(m).relative_to(Path(m).parts[0]).as_posix() for m in tar.getnames() if "/" in m}
    assert {"pyproject.toml", "README.md", "engine/assets/shakespeare/model.safetensors"} <= members


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repository(dist, tmp_path):
    wheel, _ = dist
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=900)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args):
        r = subprocess.run([py, *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "174,604,259,328" in run("-m", "engine", "info", "gpt3-175b")
    text = run("-m", "engine", "generate", "--prompt", "ROMEO:", "--max-new-tokens", "20", "--seed", "1")
    assert text.startswith("ROMEO:") and len(text) > len("ROMEO:") + 10
    where = run("-c", "import engine; m, enc = engine.load_pretrained(); "
                      "print(engine.__file__); print(m.cfg.n_layer, len(enc.encode('ROMEO:')))")
    path, shape = where.strip().splitlines()
    assert Path(path).is_relative_to(venv), "the installed package, not the repository's folder"
    assert shape.split()[0] == "6"
