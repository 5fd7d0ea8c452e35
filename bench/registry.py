"""Methods found through the ``hizfo_bench.methods`` entry-point group.

Built-in methods register there exactly like outside plugins, so this is the only
place that turns a method name into code.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from bench.method import REQUIRED_ATTRIBUTES, MethodTraits, method_traits

GROUP = "hizfo_bench.methods"


class EntryPointRegistry:
    """One entry-point group (methods, tasks): its entry points by name, cached until
    `refresh`, and loading one with a one-line error that names the plugin.

    ``entry_points`` is a cached function (``entry_points.cache_clear()`` forgets it);
    the modules that use a registry call it through a module-level name, so a test can
    swap the entry points in one place.
    """

    def __init__(self, group: str, kind: str, error: type[Exception]) -> None:
        self.group, self.kind, self.error = group, kind, error
        self.entry_points = functools.cache(self._scan)

    def _scan(self) -> dict[str, EntryPoint]:
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def refresh(self) -> None:
        """Forget the cached entry points, so plugins installed since are found."""
        importlib.invalidate_caches()
        self.entry_points.cache_clear()

    def origin(self, name: str, ep: EntryPoint) -> str:
        """``'name' (module:Class from distribution 'dist')``: where a plugin comes from."""
        dist = f" from distribution {ep.dist.name!r}" if ep.dist is not None else ""
        return f"{name!r} ({ep.value}{dist})"

    def load(self, name: str, ep: EntryPoint) -> Any:
        """What entry point `ep` (registered as `name`) points at; an import that fails is
        `self.error`, one line."""
        try:
            return ep.load()
        except Exception as e:
            raise self.error(
                f"{self.kind} plugin {self.origin(name, ep)} failed to import: {type(e).__name__}: {e}"
            ) from e


class MethodError(ValueError):
    """An unknown method or a plugin that cannot be used; the message names it."""


_METHODS = EntryPointRegistry(GROUP, "method", MethodError)
_entry_points = _METHODS.entry_points


def refresh_methods() -> None:
    """Forget the cached entry points, so methods installed since are found."""
    _METHODS.refresh()


def available_methods() -> dict[str, str]:
    """Registered method names -> the "module:Class" they point at (nothing imported)."""
    return {name: ep.value for name, ep in sorted(_entry_points().items())}


def split_variant(label: str) -> tuple[str, str | None]:
    """ "hizfo[zo-off]" -> ("hizfo", "zo-off"); "mezo" -> ("mezo", None).

    A variant is a named configuration of a registered method (an ablation, say): it
    runs the same code and appears as its own row in every table.
    """
    if label.endswith("]") and "[" in label:
        base, _, variant = label[:-1].partition("[")
        if base and variant:
            return base, variant
    return label, None


def load_method(name: str) -> type:
    """Import a method class by name (a variant label loads its method) and check it
    honours the method contract."""
    name = split_variant(name)[0]
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "(none: is hizfo-bench installed?)"
        raise MethodError(f"unknown method {name!r}; registered methods: {known}")
    ep = eps[name]
    cls = _METHODS.load(name, ep)
    broken = f"method plugin {_METHODS.origin(name, ep)} breaks the method contract"
    missing = [a for a in REQUIRED_ATTRIBUTES if not hasattr(cls, a)]
    if missing:
        raise MethodError(f"{broken}: missing {', '.join(missing)} (see bench/method.py)")
    if not dataclasses.is_dataclass(cls.config_class):
        raise MethodError(f"{broken}: config_class must be a dataclass")
    return cls


def traits_of(label: str) -> MethodTraits:
    """What a method (or a variant label) declares for the scheduler and the report
    (bench.method.MethodTraits); the defaults for a method that is not installed here,
    so that results of an uninstalled plugin still read."""
    try:
        return method_traits(load_method(label))
    except MethodError:
        return MethodTraits()


def reference_method(labels: Iterable[str]) -> str | None:
    """The label among `labels` whose method declares itself the reference (fo-adamw's
    plain row, not a variant of it), or None."""
    found = sorted(
        label
        for label in set(labels)
        if split_variant(label)[1] is None and traits_of(label).is_reference
    )
    return found[0] if found else None


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """One config field as `hizfo-bench methods NAME` shows it."""

    name: str
    type: str
    default: str
    doc: str


def config_fields(config_class: type) -> list[FieldDoc]:
    """The fields of a config dataclass with their types, defaults and one-line docs.

    The doc of a field is, first found: ``field(metadata={"doc": ...})``; its entry in
    the class docstring's ``Attributes:`` section (Google style, as the method configs
    write it); the comment on its line; the comment lines right above it. The first
    sentence is kept.
    """
    import typing

    hints = typing.get_type_hints(config_class)
    documented = {**_comment_docs(config_class), **_docstring_docs(config_class.__doc__ or "")}
    out = []
    for f in dataclasses.fields(config_class):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        doc = f.metadata.get("doc") or documented.get(f.name, "")
        out.append(FieldDoc(f.name, _type_name(hints.get(f.name, f.type)), default, _first(doc)))
    return out


def _type_name(annotation: object) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _first(text: str) -> str:
    """The first sentence of `text`, on one line."""
    text = " ".join(text.split())
    for i, ch in enumerate(text):
        if ch in ".;" and (i + 1 == len(text) or text[i + 1] == " "):
            return text[: i + 1] if ch == "." else text[:i]
    return text


def _docstring_docs(doc: str) -> dict[str, str]:
    """{field: text} from a Google-style ``Attributes:`` section."""
    import inspect
    import re

    lines = inspect.cleandoc(doc).splitlines()
    out: dict[str, str] = {}
    inside, indent, current = False, None, None
    for line in lines:
        if line.strip() in ("Attributes:", "Args:", "Fields:"):
            inside, indent, current = True, None, None
            continue
        if not inside:
            continue
        if line and not line[0].isspace():  # the next section
            inside = False
            continue
        width = len(line) - len(line.lstrip())
        match = re.match(r"\s*([A-Za-z_]\w*)(?:\s*\([^)]*\))?:\s*(.*)$", line)
        if match and (indent is None or width == indent):
            indent, current = width, match.group(1)
            out[current] = match.group(2)
        elif current and line.strip():
            out[current] += " " + line.strip()
    return out


def _comment_docs(config_class: type) -> dict[str, str]:
    """{field: comment} from the class source: the comment on a field's line, else the
    comment lines right above it."""
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    try:
        source = textwrap.dedent(inspect.getsource(config_class))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out = {}
    body = ast.parse(source).body[0]
    for node in getattr(body, "body", []):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        end = node.end_lineno or node.lineno
        trailing = [comments[n] for n in range(node.lineno, end + 1) if n in comments]
        if trailing:
            out[node.target.id] = " ".join(trailing)
            continue
        above, n = [], node.lineno - 1
        while n >= 1 and n in comments and lines[n - 1].lstrip().startswith("#"):
            above.insert(0, comments[n])
            n -= 1
        if above:
            out[node.target.id] = " ".join(above)
    return out
