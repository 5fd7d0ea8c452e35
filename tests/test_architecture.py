"""The layout's rules (docs/design.md, "Layering"): every import points down the layer
order, hizfo/ is torch-only, and there are no import cycles.

Imports are read from the source (every ``import`` statement, including those inside
functions), so an upward import or a cycle hidden in a lazy import is caught too. The
self-tests at the bottom run the same detectors on a made-up package tree with a known
cycle and a known upward import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "baselines", "hizfo")

# Top to bottom, as in docs/design.md. A module belongs to the layer of the longest
# prefix that names it; a module may import its own layer and any layer below it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cli", ("bench.cli",)),
    ("suite", ("bench.suite", "bench.overrides")),
    ("orchestrate", ("bench.orchestrate",)),
    ("train and perf", ("bench.train", "bench.perf")),
    ("report", ("bench.report",)),
    ("analysis", ("bench.analysis",)),
    ("methods", ("baselines",)),
    ("core", ("bench",)),  # spec, record, store, config, models, tasks, evaluate, measure...
    ("hizfo", ("hizfo",)),
)


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, modules: set[str], root: Path) -> set[str]:
    """Project modules `path` imports (``from pkg import mod`` counts as pkg.mod)."""
    this = _module_name(path, root)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            # The deepest project module the name refers to.
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != this:
                found.add(name)
    return found


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    files = [p for pkg in packages for p in (root / pkg).rglob("*.py")]
    modules = {_module_name(p, root) for p in files}
    graph = {_module_name(p, root): _imports(p, modules, root) for p in files}
    # A package's __init__ is not a dependency of its own submodules' cycles.
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def layer_of(module: str, layers=LAYERS) -> int:
    best, best_len = -1, -1
    for index, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best < 0:
        raise AssertionError(f"module {module} is in no layer: add it to LAYERS and design.md")
    return best


def upward_imports(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Every import from a lower layer to a higher one, as 'a (layer) -> b (layer)'."""
    found = []
    for module, deps in sorted(graph.items()):
        mine = layer_of(module, layers)
        for dep in sorted(deps):
            theirs = layer_of(dep, layers)
            if theirs < mine:
                found.append(f"{module} ({layers[mine][0]}) -> {dep} ({layers[theirs][0]})")
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_every_import_points_down_the_layers():
    found = upward_imports(import_graph())
    assert not found, "upward imports:\n" + "\n".join(found)


def test_hizfo_imports_nothing_from_bench_or_baselines():
    graph = import_graph()
    offenders = {
        m: sorted(d for d in deps if d.split(".")[0] in ("bench", "baselines"))
        for m, deps in graph.items()
        if m.split(".")[0] == "hizfo"
    }
    assert not {m: d for m, d in offenders.items() if d}


def test_no_import_cycles():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _fake_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_detectors_see_a_cycle_and_an_upward_import(tmp_path):
    """The real detectors on a known tree: a lazy cycle and one upward import are found,
    and the same tree without them is clean (so neither check passes vacuously)."""
    layers = (("top", ("app.top",)), ("low", ("app",)))
    _fake_tree(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/top.py": "from app import low\n",  # down: allowed
            "app/low.py": "import app.util\n",
            "app/util.py": "def f():\n    from app.low import x\n",  # a lazy cycle
        },
    )
    graph = import_graph(tmp_path, ("app",))
    assert import_cycles(graph) == [["app.low", "app.util", "app.low"]]
    assert upward_imports(graph, layers) == []

    (tmp_path / "app/top.py").write_text("")
    (tmp_path / "app/util.py").write_text("def f():\n    from app.top import y\n")  # upward
    graph = import_graph(tmp_path, ("app",))
    assert import_cycles(graph) == []
    assert upward_imports(graph, layers) == ["app.util (low) -> app.top (top)"]
