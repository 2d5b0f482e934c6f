"""The engine's shape: modules import only downward (no cycles, at any depth), and stay short.

Every ``import`` is read with ``ast``, those inside functions included, relative or absolute
(``from . import x``, ``from ..evaluate import y``, ``from engine import z``, ``import engine.model``).
A name imported from a package resolves to the submodule it names, or, for a name the package's
``__init__`` re-exports, to the module it comes from; ``import engine`` itself (the package's
front door, which the command line reaches through) is an edge to ``engine/__init__``.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "engine"

MAX_LINES = 400
# Modules longer than MAX_LINES because they are one idea that reads best in one place.
ONE_IDEA = {
    "engine.attention": "the four attention layouts, each a forward/backward pair, and their dispatch",
    "engine.widgets": "one widget per chapter, sharing their small HTML helpers",
    "engine.grader.checks.ch05_layers": "the seven graded tasks of chapter 5, one decoder block built up part by part",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(name: str, mods: dict) -> bool:
    return mods[name].name == "__init__.py"


def _absolute(node: ast.ImportFrom, here: str, mods: dict) -> str:
    """The module an ``ImportFrom`` reads from, as an absolute dotted name."""
    if not node.level:
        return node.module or ""
    base = here.split(".") if _is_package(here, mods) else here.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _reexports(pkg: str, mods: dict) -> dict[str, str]:
    """{name: module it comes from} for the names a package's ``__init__`` imports."""
    out = {}
    for node in ast.walk(ast.parse(mods[pkg].read_text())):
        if isinstance(node, ast.ImportFrom):
            src = _absolute(node, pkg, mods)
            for a in node.names:
                sub = f"{src}.{a.name}"
                out[a.asname or a.name] = sub if sub in mods else src
    return out


def imports(name: str, mods: dict) -> set[str]:
    """Engine modules that ``name`` imports, anywhere in its body."""
    got = set()
    for node in ast.walk(ast.parse(mods[name].read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "engine":
                    got.add(a.name if a.name in mods else "engine")
        elif isinstance(node, ast.ImportFrom):
            src = _absolute(node, name, mods)
            if not (src == "engine" or src.startswith("engine.")):
                continue
            for a in node.names:
                sub = f"{src}.{a.name}"
                if sub in mods:
                    got.add(sub)
                elif src in mods and _is_package(src, mods) and src != name:
                    got.add(_reexports(src, mods).get(a.name, src))
                else:
                    got.add(src)
    got.discard(name)
    return got


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, mods) for m in mods}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state:
                c = visit(n)
                if c:
                    return c
        path.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            c = visit(m)
            if c:
                return c
    return None


def test_the_graph_sees_every_kind_of_import():
    g = graph()
    assert "engine.decoder" in g["engine.model"]                 # from .decoder import ...
    assert "engine.evaluate" in g["engine.train"]                # from ..evaluate import ... (in a package)
    assert "engine.model" in g["engine.grader.checks.ch02_training"]  # from ...model import ...
    assert "engine" in g["engine.cli"]                           # import engine
    assert "engine.loading" in g["engine"]                       # the package's own imports


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_core_does_not_depend_on_training():
    g = graph()
    core = ["engine.layers", "engine.attention", "engine.losses", "engine.decoder", "engine.model",
            "engine.generate"]
    seen, todo = set(), list(core)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(g[m])
    training = {"engine.train", "engine.distill", "engine.calibrate", "engine.finetune", "engine.evaluate",
                "engine.pretrained", "engine.export", "engine.cli", "engine.widgets", "engine"}
    assert not seen & training, sorted(seen & training)


def test_modules_stay_short():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= set(ONE_IDEA), f"modules over {MAX_LINES} lines: {long}"
