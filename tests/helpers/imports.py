"""Reading a source file's imports without running it (tests/test_architecture.py,
tests/test_dependencies.py)."""

from __future__ import annotations

import ast
from pathlib import Path


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def import_nodes(tree: ast.AST, runtime_only: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, lazy ones included; with `runtime_only`, not those under
    ``if TYPE_CHECKING:`` (its ``else:`` still counts)."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if runtime_only and _type_checking_only(node):
            todo.extend(getattr(node, "orelse", []))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return found


def top_level_imports(path: Path) -> set[str]:
    """Top-level names `path` imports at run time (absolute imports; not those under
    ``if TYPE_CHECKING:``), lazy ones included."""
    names = set()
    for node in import_nodes(ast.parse(path.read_text()), runtime_only=True):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names
