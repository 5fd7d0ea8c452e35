"""Real Python and real English from the running interpreter's standard library source.

Two offline data sets are cut from it, both deterministic for a given Python version:
- `stdlib_functions`: short, self-contained top-level functions with docstrings, split into
  prompt (signature + docstring, the HumanEval layout) and target (the body);
- `stdlib_docstrings`: docstrings of functions, classes and methods split into a one-sentence
  summary and the rest of the text.

Parsing the whole stdlib takes about 10 s on a small CPU, and every trial runs in a fresh
worker, so the result is cached as JSON under ~/.cache/hizfo-bench/tasks, keyed by the
interpreter version and the stdlib path.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import json
import os
import re
import sys
import sysconfig
import tempfile
import warnings
from functools import cache
from pathlib import Path
from typing import Any

CORPUS_VERSION = 2
# Test suites and vendored or generated code are not "the standard library's own source" and
# hold many near-duplicate functions.
_SKIP_PARTS = {
    "test",
    "tests",
    "idle_test",
    "site-packages",
    "dist-packages",
    "lib2to3",
    "__phello__",
}
_BUILTINS = set(dir(builtins))
MAX_BODY_LINES = 15
MAX_DOCSTRING_CHARS = 600


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _cache_file() -> Path:
    root = Path(os.environ.get("HIZFO_BENCH_CACHE", Path.home() / ".cache" / "hizfo-bench"))
    key = hashlib.sha1(f"{CORPUS_VERSION}:{sys.version}:{stdlib_dir()}".encode()).hexdigest()[:12]
    return root / "tasks" / f"stdlib-corpus-{key}.json"


def _source_files() -> list[Path]:
    root = stdlib_dir()
    return [
        p for p in sorted(root.rglob("*.py")) if not _SKIP_PARTS & set(p.relative_to(root).parts)
    ]


def _free_names(fn: ast.FunctionDef) -> set[str]:
    """Names the function reads that are neither its own nor builtins: its outside needs."""
    args = fn.args
    bound = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    bound |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    loaded = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) or (
            isinstance(node, ast.ExceptHandler) and node.name
        ):
            bound.add(node.name)
    return loaded - bound - _BUILTINS


def _module_imports(tree: ast.Module) -> dict[str, str]:
    """Top-level import statements by the name they bind, e.g. {"os": "import os"}."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
            for alias in node.names:
                if alias.name == "*":
                    continue
                one = (
                    ast.Import(names=[alias])
                    if isinstance(node, ast.Import)
                    else ast.ImportFrom(module=node.module, names=[alias], level=0)
                )
                out[(alias.asname or alias.name).split(".")[0]] = ast.unparse(one)
    return out


def _function_example(
    fn: ast.FunctionDef, lines: list[str], imports: dict[str, str]
) -> dict[str, str] | None:
    doc = ast.get_docstring(fn, clean=False)
    if fn.decorator_list or doc is None or fn.name.startswith("__"):
        return None
    if len(doc) > MAX_DOCSTRING_CHARS or not doc.strip():
        return None
    doc_end = fn.body[0].end_lineno
    body = lines[doc_end : fn.end_lineno]
    code_lines = [ln for ln in body if ln.strip() and not ln.strip().startswith("#")]
    if not 1 <= len(code_lines) <= MAX_BODY_LINES or len(fn.body) < 2:
        return None
    if not all(ln.startswith("    ") or not ln.strip() for ln in body):
        return None
    # Self-contained: it needs nothing from its module but stdlib imports, which go on top
    # of the prompt as HumanEval's prompts carry theirs.
    free = _free_names(fn)
    if not free <= set(imports):
        return None
    header = "".join(imports[n] + "\n" for n in sorted(free))
    prompt = (header + "\n\n" if header else "") + "\n".join(lines[fn.lineno - 1 : doc_end]) + "\n"
    if "\t" in prompt:
        return None
    return {"name": fn.name, "prompt": prompt, "body": "\n".join(body).rstrip() + "\n"}


def _summary_split(node: ast.AST) -> dict[str, str] | None:
    doc = ast.get_docstring(node)
    if not doc:
        return None
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", doc) if p.strip()]
    if len(paragraphs) < 2:
        return None
    summary, rest = paragraphs[0], " ".join(paragraphs[1:])
    n_summary, n_rest = len(summary.split()), len(rest.split())
    if not (4 <= n_summary <= 30 and summary.endswith(".") and 12 <= n_rest <= 120):
        return None
    if ">>>" in rest or "XXX" in summary:  # doctest transcripts are code, not prose
        return None
    kind = "class" if isinstance(node, ast.ClassDef) else "function"
    return {"name": node.name, "kind": kind, "summary": summary, "text": rest}


def _build(files: list[Path] | None = None) -> dict[str, Any]:
    functions: dict[str, dict[str, str]] = {}  # body -> example: the first one wins
    docstrings: dict[str, dict[str, str]] = {}  # summary -> example
    texts: set[str] = set()
    root = stdlib_dir()
    for path in _source_files() if files is None else files:
        try:
            source = path.read_text(encoding="utf-8")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escape sequences in old modules
                tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a few stdlib files are templates or other Python dialects
        lines = source.splitlines()
        module = str(path.relative_to(root))
        imports = _module_imports(tree)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                ex = _function_example(node, lines, imports)
                if ex is not None and ex["body"] not in functions:
                    functions[ex["body"]] = {**ex, "module": module}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                ex = _summary_split(node)
                # One entry per summary and per text: a split by summary then cannot put the
                # same question (e.g. an overridden method's copied docstring) on both sides.
                if ex is not None and ex["summary"] not in docstrings and ex["text"] not in texts:
                    docstrings[ex["summary"]] = {**ex, "module": module}
                    texts.add(ex["text"])
    return {
        "python": sys.version,
        "functions": list(functions.values()),
        "docstrings": list(docstrings.values()),
    }


@cache
def corpus() -> dict[str, Any]:
    path = _cache_file()
    try:
        data = json.loads(path.read_text())
        if data.get("python") == sys.version:
            return data
    except (OSError, ValueError):
        pass  # missing or damaged cache: rebuild it
    data = _build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump(data, f)
        os.replace(f.name, path)  # atomic: parallel trials may build it at the same time
    except OSError:
        pass  # a read-only home still works, only slower
    return data


def split_by_hash(items: list[dict[str, Any]], key: str, test_size: int, salt: str):
    """Deterministic train/test split on a hash of `key`: equal keys always land together."""

    def h(item: dict[str, Any]) -> str:
        return hashlib.sha1(f"{salt}:{item[key]}".encode()).hexdigest()

    ranked = sorted(items, key=h)
    return ranked[test_size:], ranked[:test_size]
