"""The package's shape: the library never reaches up into the command line, and no two modules
import each other in a loop (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules(src: Path) -> dict[str, Path]:
    out = {}
    for path in (src / "leaf").rglob("*.py"):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The leaf modules ``name`` imports anywhere in its file (``from a import b`` counts as
    ``a.b`` when that is a module, else ``a``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                root = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(root + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


def _graph(src: Path = SRC) -> dict[str, set[str]]:
    mods = _modules(src)
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def test_only_the_cli_imports_the_cli():
    offenders = {
        name: sorted(d for d in deps if d == "leaf.cli" or d.startswith("leaf.commands"))
        for name, deps in _graph().items()
        if name != "leaf.cli" and not name.startswith("leaf.commands")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_cycles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """The cycle test can fail: two modules importing each other are found."""
    pkg = tmp_path / "leaf"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from leaf import b\n")
    (pkg / "b.py").write_text("from leaf.a import f\n")
    graph = _graph(tmp_path)
    assert graph["leaf.a"] == {"leaf.b"} and graph["leaf.b"] == {"leaf.a"}
