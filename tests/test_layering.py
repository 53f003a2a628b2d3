"""The import structure: no import cycles, and lower layers never import upper ones.

Layers, lowest first: ``robolearn_core`` (typed configs, the name registry, progress and logging:
imports none of our packages) < ``data`` (episode stores) < ``policies`` (learners) < the app
(``robolearn``, ``sim``, ``hardware``). A module may import its own layer and the ones below it.
Every import counts for layering, lazy ones inside functions too (a lazy import still couples
the packages); cycles are searched over all imports as well, so a cycle cannot hide behind a
function-level import. Static (AST), so it sees every module, imported by a test or not.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("robolearn_core", "data", "policies", "robolearn", "sim", "hardware")
LAYER = {"robolearn_core": 0, "data": 1, "policies": 2, "robolearn": 3, "sim": 3, "hardware": 3}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Our modules that ``name`` imports anywhere in its body (TYPE_CHECKING blocks excepted)."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def owner(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    pkg = pkg[:len(pkg) - child.level + 1]
                    base = ".".join([*pkg, base] if base else pkg)
                # ``from pkg import mod`` imports the module; ``from pkg import name`` the package
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                           for a in child.names]
            for t in targets:
                mod = owner(t)
                # a package is always initialised before its modules: not an edge of its own
                if mod is not None and mod != name and not name.startswith(f"{mod}."):
                    found.add(mod)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known) for name, path in known.items()}


def test_lower_layers_never_import_upper_ones() -> None:
    bad = sorted(f"{mod} imports {dep}" for mod, deps in _graph().items() for dep in deps
                 if LAYER[dep.split(".")[0]] > LAYER[mod.split(".")[0]])
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The analysis itself can fail: a lazy upward import and a two-module cycle are found."""
    (tmp_path / "a.py").write_text("def f():\n    from b import x\n")
    (tmp_path / "b.py").write_text("import a\nx = 1\n")
    (tmp_path / "c.py").write_text("from b import x\n")
    known = {"a": tmp_path / "a.py", "b": tmp_path / "b.py", "c": tmp_path / "c.py"}
    assert _imports("a", known["a"], known) == {"b"}
    assert _imports("b", known["b"], known) == {"a"}
    assert _imports("c", known["c"], known) == {"b"}
