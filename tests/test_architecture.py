"""The package's floors (docs/architecture.md): every module has a row, imports only what its row
allows, and rows import only rows above them, so no import circle can form; the rooms of the
training, command-line and benchmark packages stay small."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "perceptron1_jax"
DOC = ROOT / "docs" / "architecture.md"
ROW = re.compile(r"^\| `([\w.]+)` \|[^|]*\|([^|]*)\|\s*$")


def module_name_of(dotted: str) -> str:
    """``perceptron1_jax.data.source`` -> ``data.source``; ``perceptron1_jax`` stays itself."""
    return dotted.removeprefix("perceptron1_jax").removeprefix(".") or "perceptron1_jax"


def module_name(path: Path) -> str:
    """``perceptron1_jax/data/source.py`` -> ``data.source``; the package's ``__init__`` -> ``perceptron1_jax``."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return module_name_of(".".join(parts[:-1] if parts[-1] == "__init__" else parts))


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def package_imports(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, at the top or inside a function (``from A
    import b`` counts as ``A.b`` when that is a module, else as ``A``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" if module_name_of(f"{node.module}.{alias.name}") in MODULES
                     else node.module for alias in node.names]
        else:
            continue
        found |= {module_name_of(n) for n in names
                  if n.split(".")[0] == "perceptron1_jax" and module_name_of(n) in MODULES}
    return found - {module_name(path)} if path.is_relative_to(PACKAGE) else found


def doc_rows() -> list[tuple[str, set[str]]]:
    """``(module, may import)`` of every table row of docs/architecture.md, in page order."""
    rows = []
    for line in DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows.append((match.group(1), set(re.findall(r"`([\w.]+)`", match.group(2)))))
    return rows


def test_every_module_has_one_row():
    names = [name for name, _ in doc_rows()]
    assert sorted(set(names)) == sorted(names), "a module has two rows"
    assert sorted(names) == sorted(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_module_imports_only_what_its_row_allows(name):
    allowed = dict(doc_rows())[name]
    assert package_imports(MODULES[name]) <= allowed, (
        f"{name} imports {sorted(package_imports(MODULES[name]) - allowed)} beyond its row in docs/architecture.md")


def test_rows_import_only_rows_above_them():
    above = set()
    for name, allowed in doc_rows():
        assert allowed <= above, f"{name} may import {sorted(allowed - above)}, which are not above it"
        above.add(name)


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A path of imports that comes back to its start, or None (depth-first search)."""
    state = {}

    def visit(name, trail):
        if state.get(name) == "open":
            return [*trail[trail.index(name):], name]
        if state.get(name) == "done":
            return None
        state[name] = "open"
        for dep in sorted(graph.get(name, ())):
            circle = visit(dep, [*trail, name])
            if circle:
                return circle
        state[name] = "done"
        return None

    return next((c for c in (visit(name, []) for name in sorted(graph)) if c), None)


def test_no_import_circle():
    circle = find_circle({name: package_imports(path) for name, path in MODULES.items()})
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_a_circle_and_an_import_inside_a_function_are_found(tmp_path):
    """The checks above can fail: the bptt/parallel circle this page replaced (parallel imported
    bptt at the top, bptt imported parallel inside a function) is found."""
    bptt, parallel = tmp_path / "bptt.py", tmp_path / "parallel.py"
    bptt.write_text("import jax\n\ndef on_mesh():\n    from perceptron1_jax import parallel\n")
    parallel.write_text("from perceptron1_jax.bptt import make_value_and_grad\n")
    graph = {"bptt": package_imports(bptt), "parallel": package_imports(parallel)}
    assert graph == {"bptt": {"parallel"}, "parallel": {"bptt"}}
    assert find_circle(graph) == ["bptt", "parallel", "bptt"]
    assert find_circle({"bptt": {"parallel"}, "parallel": set()}) is None


def function_lengths(path: Path):
    """``(name, lines)`` of every function and method in ``path``, docstring included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


SMALL_ROOMS = ("training", "cli", "bench")  # packages held to 400-line modules and 60-line functions


@pytest.mark.parametrize("path", sorted(p for room in SMALL_ROOMS for p in (PACKAGE / room).glob("*.py")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_rooms_are_small(path):
    assert len(path.read_text().splitlines()) <= 400
    long = {name: lines for name, lines in function_lengths(path) if lines > 60}
    assert not long, f"functions over 60 lines in {path.name}: {long}"
