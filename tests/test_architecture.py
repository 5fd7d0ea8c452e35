"""The layout's rules (docs/design.md, "Layering"): every import points down the layer
order, hizfo/ is torch-only, and there are no import cycles.

Imports are read from the source (every ``import`` statement, including those inside
functions), so an upward import or a cycle hidden in a lazy import is caught too. The
self-tests at the bottom run the same detectors on a made-up package tree with a known
cycle and a known upward import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from helpers.imports import import_nodes, top_level_imports

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "baselines", "hizfo")
# Folders of plugin distributions: each subfolder with a pyproject.toml is one, its
# packages the subfolders with an __init__.py.
PLUGIN_FOLDERS = ("plugins", "examples")

# The contracts: the data and interfaces everything else agrees on, importing nothing
# but each other and no torch. "bench.__init__" is the bench package's own __init__ only.
CONTRACTS = (
    "bench.__init__",
    "bench.spec",
    "bench.record",
    "bench.config",
    "bench.method",
    "bench.format",
    "bench.store",
    "bench.registry",
    "bench.tasks.base",  # the task contract (Task, Example, the errors)
    "bench.tasks.registry",  # task names -> classes, as bench.registry for methods
)
RUNTIME = (
    "bench.models",
    "bench.model_configs",
    "bench.data",
    "bench.tasks",  # the task families; the package's __init__ re-exports the contract
    "bench.evaluate",
    "bench.sandbox",
    "bench.measure",
    "bench.resume",
)


def plugin_sources(root: Path = ROOT) -> list[tuple[Path, str]]:
    """(distribution folder, package) of every plugin distribution under plugins/ and
    examples/."""
    found = []
    for folder in PLUGIN_FOLDERS:
        for dist in sorted((root / folder).glob("*/pyproject.toml")):
            for init in sorted(dist.parent.glob("*/__init__.py")):
                found.append((dist.parent, init.parent.name))
    return found


def sources(root: Path = ROOT) -> list[tuple[Path, str]]:
    """(folder that holds the package, package) of everything the rules cover."""
    return [(root, pkg) for pkg in PACKAGES] + plugin_sources(root)


def layers_for(plugin_packages: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Top to bottom, as in docs/design.md. A module belongs to the layer of the longest
    prefix that names it; a module may import its own layer and any layer below it.
    hizfo sits above the contracts only so the order stays one line: it imports nothing
    from bench at all (test_hizfo_imports_nothing_from_bench_baselines_or_plugins)."""
    return (
        ("cli", ("bench.cli",)),
        ("suite", ("bench.suite", "bench.overrides")),
        ("orchestrate", ("bench.orchestrate",)),
        ("train and perf", ("bench.train", "bench.perf")),
        ("report", ("bench.report",)),
        ("analysis", ("bench.analysis",)),
        ("methods", ("baselines", *plugin_packages)),  # built-in, shipped and example plugins
        ("runtime", RUNTIME),
        ("hizfo", ("hizfo",)),
        ("contracts", CONTRACTS),
    )


PLUGIN_PACKAGES = tuple(pkg for _, pkg in plugin_sources())
LAYERS = layers_for(PLUGIN_PACKAGES)


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
    for node in import_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            # The deepest project module the name refers to.
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != this:
                found.add(name)
    return found


def source_files(srcs: list[tuple[Path, str]] | None = None) -> dict[str, tuple[Path, Path]]:
    """{module: (file, the folder its package lies in)} of every file the rules cover."""
    srcs = sources() if srcs is None else srcs
    return {
        _module_name(p, root): (p, root) for root, pkg in srcs for p in (root / pkg).rglob("*.py")
    }


def import_graph(srcs: list[tuple[Path, str]] | None = None) -> dict[str, set[str]]:
    files = source_files(srcs)
    modules = set(files)
    graph = {m: _imports(path, modules, root) for m, (path, root) in files.items()}
    # A package's __init__ is not a dependency of its own submodules' cycles.
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def _names(module: str, prefix: str) -> bool:
    if prefix.endswith(".__init__"):  # the package's own __init__, not its submodules
        return module == prefix.removesuffix(".__init__")
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str, layers=LAYERS) -> int:
    best, best_len = -1, -1
    for index, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if _names(module, prefix) and len(prefix) > best_len:
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


def test_every_source_file_is_covered():
    """Every .py file of bench/, baselines/, hizfo/ and of the plugin distributions under
    plugins/ and examples/ is read (a plugin's module outside a package would be
    skipped silently), and the plugins are there to be read."""
    covered = {path for path, _ in source_files().values()}
    every = {p for d in (*PACKAGES, *PLUGIN_FOLDERS) for p in (ROOT / d).rglob("*.py")}
    assert every - covered == set()
    assert {"hizfo_bench_addax", "zo_signsgd"} <= set(PLUGIN_PACKAGES)


def test_hizfo_imports_nothing_from_bench_baselines_or_plugins():
    graph = import_graph()
    outside = {"bench", "baselines", *PLUGIN_PACKAGES}
    offenders = {
        m: sorted(d for d in deps if d.split(".")[0] in outside)
        for m, deps in graph.items()
        if m.split(".")[0] == "hizfo"
    }
    assert not {m: d for m, d in offenders.items() if d}


def plugin_crossings(graph: dict[str, set[str]], plugin_packages: tuple[str, ...]) -> list[str]:
    """Imports of a plugin package from anywhere but that package: each plugin is its own
    distribution that depends on hizfo-bench alone, and hizfo-bench on none of them."""
    return [
        f"{m} -> {d}"
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if d.split(".")[0] in plugin_packages and d.split(".")[0] != m.split(".")[0]
    ]


def test_plugins_are_imported_by_nobody_else():
    found = plugin_crossings(import_graph(), PLUGIN_PACKAGES)
    assert not found, "imports of a plugin from outside it:\n" + "\n".join(found)


# The torch stack: torch and what imports it when imported.
TORCH_STACK = {"torch", "transformers", "peft", "accelerate", "safetensors", "lm_eval", "trl"}


def test_the_contracts_import_no_torch_in_their_source():
    """No contract module imports the torch stack, lazily or not (type-only imports under
    ``if TYPE_CHECKING:`` aside); that they import only each other is the layer order."""
    found = {
        m: sorted(top_level_imports(path) & (TORCH_STACK | {"hizfo", "baselines"}))
        for m, (path, _) in source_files().items()
        if LAYERS[layer_of(m)][0] == "contracts"
    }
    assert not {m: names for m, names in found.items() if names}


def test_importing_the_contracts_loads_no_torch():
    """What the source check cannot see: a third-party package that imports torch.
    Importing every contract module in a fresh interpreter leaves torch unloaded (so does
    listing the method names), which is what lets analysis/, report/ and a process that
    only reads results skip torch's import. (Making a TrialSpec builds its method's
    config, whose class lives with the method: that loads the method, torch included.)"""
    modules = sorted(
        m.removesuffix(".__init__") for m in source_files() if LAYERS[layer_of(m)][0] == "contracts"
    )
    code = "\n".join(
        [
            "import sys",
            *(f"import {m}" for m in modules),
            "bench.registry.available_methods()",
            "loaded = sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:]))",
            "assert not loaded, loaded",
        ]
    )
    banned = sorted(TORCH_STACK | {"hizfo", "baselines"})
    done = subprocess.run(
        [sys.executable, "-c", code, *banned], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert len(modules) >= 10, modules


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
    graph = import_graph([(tmp_path, "app")])
    assert import_cycles(graph) == [["app.low", "app.util", "app.low"]]
    assert upward_imports(graph, layers) == []

    (tmp_path / "app/top.py").write_text("")
    (tmp_path / "app/util.py").write_text("def f():\n    from app.top import y\n")  # upward
    graph = import_graph([(tmp_path, "app")])
    assert import_cycles(graph) == []
    assert upward_imports(graph, layers) == ["app.util (low) -> app.top (top)"]


def test_the_detectors_see_a_plugin_or_example_reaching_up_or_across(tmp_path):
    """The real layers on a made-up checkout: a plugin under plugins/ and an example under
    examples/ that import the method contract, the runtime and hizfo pass; the same
    plugin importing bench.cli, an example importing bench.analysis lazily, and a plugin
    importing another plugin are each found."""
    _fake_tree(
        tmp_path,
        {
            "bench/__init__.py": "",
            "bench/cli/__init__.py": "def main(): ...\n",
            "bench/analysis/__init__.py": "",
            "bench/method.py": "",
            "bench/data.py": "from bench.method import Batch\n",
            "hizfo/__init__.py": "",
            "plugins/p/pyproject.toml": "",
            "plugins/p/p_pkg/__init__.py": "from bench.method import StepStats\nimport hizfo\n",
            "examples/e/pyproject.toml": "",
            "examples/e/e_pkg/__init__.py": "from .impl import M\n",
            "examples/e/e_pkg/impl.py": "from bench.data import batches\n",
        },
    )
    srcs = [(tmp_path, pkg) for pkg in PACKAGES] + plugin_sources(tmp_path)
    assert [pkg for _, pkg in plugin_sources(tmp_path)] == ["p_pkg", "e_pkg"]
    layers = layers_for(("p_pkg", "e_pkg"))
    assert upward_imports(import_graph(srcs), layers) == []
    assert plugin_crossings(import_graph(srcs), ("p_pkg", "e_pkg")) == []

    (tmp_path / "plugins/p/p_pkg/__init__.py").write_text("from bench.cli import main\n")
    (tmp_path / "examples/e/e_pkg/impl.py").write_text(
        "def f():\n    from bench.analysis import stats\n"
    )
    assert upward_imports(import_graph(srcs), layers) == [
        "e_pkg.impl (methods) -> bench.analysis (analysis)",
        "p_pkg (methods) -> bench.cli (cli)",
    ]
    (tmp_path / "plugins/p/p_pkg/__init__.py").write_text("import e_pkg\n")
    assert plugin_crossings(import_graph(srcs), ("p_pkg", "e_pkg")) == ["p_pkg -> e_pkg"]


def test_the_layers_keep_the_contracts_below_the_runtime(tmp_path):
    """A contract importing the runtime (bench.spec -> bench.measure) is upward; the
    runtime importing a contract is down; a bench module in neither list is refused."""
    layers = layers_for(())
    assert upward_imports({"bench.spec": {"bench.measure.sharpness"}}, layers) == [
        "bench.spec (contracts) -> bench.measure.sharpness (runtime)"
    ]
    assert upward_imports({"bench.measure.sharpness": {"bench.spec"}}, layers) == []
    assert upward_imports({"bench.format": {"bench.registry"}}, layers) == []
    assert LAYERS[layer_of("bench")][0] == "contracts"
    assert LAYERS[layer_of("bench.tasks")][0] == "runtime"
    assert LAYERS[layer_of("bench.tasks.registry")][0] == "contracts"
    try:
        layer_of("bench.new_module", layers)
    except AssertionError as e:
        assert "in no layer" in str(e)
    else:
        raise AssertionError("an unplaced module got a layer")
