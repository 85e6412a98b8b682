"""The package's shape: the library never reaches up into the command line, no two modules
import each other in a loop, and each layer imports only the layers below it (imports inside
functions count too)."""

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


def _import_lines(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """``(leaf module, line)`` for every import of another leaf module anywhere in the file of
    ``name`` (``from a import b`` counts as ``a.b`` when that is a module, else ``a``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                root = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(root + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((sub if sub in known else base, node.lineno))
    return sorted((m, line) for m, line in found if m in known and m != name)


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The leaf modules ``name`` imports anywhere in its file."""
    return {m for m, _ in _import_lines(name, path, known)}


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


# -- layers ---------------------------------------------------------------------------------------
# Lower layers never import higher ones: the model-level packages know nothing of the stages,
# the run pipeline or the testbed; the stages know nothing of the pipeline or the testbed (the
# testbed's model names reach them through leaf.models' registry); the testbed, which leaf run
# and the study use, imports neither of them. ``leaf.X`` covers leaf.X and everything under it.
LAYER_RULES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("leaf.detect", "leaf.distill", "leaf.evaluate", "leaf.data"):
        ("leaf.stages", "leaf.pipeline", "leaf.testbed"),
    ("leaf.stages",): ("leaf.testbed", "leaf.pipeline"),
    ("leaf.testbed",): ("leaf.pipeline", "leaf.stages"),
    # the shared base: model loading and parts, intervals, errors
    ("leaf.errors", "leaf.models", "leaf.model_parts", "leaf.intervals", "leaf.terminal"):
        ("leaf.data", "leaf.detect", "leaf.distill", "leaf.evaluate", "leaf.stages",
         "leaf.pipeline", "leaf.report", "leaf.testbed", "leaf.commands", "leaf.cli"),
}

# Known violations awaiting a fix; each entry is (importing file, imported module). Remove an
# entry as soon as its import is gone: the test below fails on an entry that no longer matches
# anything, so the list cannot go stale. Empty: every rule holds.
PENDING_LAYER_EXCEPTIONS: set[tuple[str, str]] = set()


def _under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _layer_violations(src: Path = SRC) -> list[tuple[str, str, int]]:
    """``(file, imported module, line)`` for every import that breaks :data:`LAYER_RULES`."""
    mods = _modules(src)
    out = []
    for name, path in sorted(mods.items()):
        for lower, forbidden in LAYER_RULES.items():
            if not _under(name, lower):
                continue
            for dep, line in _import_lines(name, path, set(mods)):
                if _under(dep, forbidden):
                    out.append((path.relative_to(src.parent).as_posix(), dep, line))
    return out


def test_each_layer_imports_only_the_layers_below_it():
    found = _layer_violations()
    pending = {(f, dep) for f, dep, _ in found} & PENDING_LAYER_EXCEPTIONS
    broken = [f"{f}:{line} imports {dep}" for f, dep, line in found
              if (f, dep) not in PENDING_LAYER_EXCEPTIONS]
    assert broken == [], "layer rule broken:\n" + "\n".join(broken)
    assert pending == PENDING_LAYER_EXCEPTIONS, \
        f"remove these from PENDING_LAYER_EXCEPTIONS, they are fixed: " \
        f"{sorted(PENDING_LAYER_EXCEPTIONS - pending)}"


def test_the_layer_checker_names_file_line_and_import(tmp_path):
    """The layer test can fail: an in-function import of the pipeline from detect is found."""
    src = tmp_path / "src"
    for pkg in ("leaf", "leaf/detect", "leaf/pipeline", "leaf/testbed"):
        (src / pkg).mkdir(parents=True)
        (src / pkg / "__init__.py").write_text("")
    (src / "leaf/pipeline/config.py").write_text("X = 1\n")
    (src / "leaf/testbed/study.py").write_text("import leaf.pipeline.config\n")
    (src / "leaf/detect/spans.py").write_text(
        "def f():\n    from leaf.pipeline import config\n    return config.X\n")
    assert _layer_violations(src) == [
        ("src/leaf/detect/spans.py", "leaf.pipeline.config", 2),
        ("src/leaf/testbed/study.py", "leaf.pipeline.config", 1),
    ]
