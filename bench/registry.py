"""Methods found through the ``hizfo_bench.methods`` entry-point group.

Built-in methods register there exactly like outside plugins, so this is the only
place that turns a method name into code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from bench.method import REQUIRED_ATTRIBUTES, MethodTraits, method_traits

GROUP = "hizfo_bench.methods"


class MethodError(ValueError):
    """An unknown method or a plugin that cannot be used; the message names it."""


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def refresh_methods() -> None:
    """Forget the cached entry points, so methods installed since are found."""
    import importlib

    importlib.invalidate_caches()
    _entry_points.cache_clear()


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
    dist = f" from distribution {ep.dist.name!r}" if ep.dist is not None else ""
    try:
        cls = ep.load()
    except Exception as e:
        raise MethodError(
            f"method plugin {name!r} ({ep.value}{dist}) failed to import: {type(e).__name__}: {e}"
        ) from e
    missing = [a for a in REQUIRED_ATTRIBUTES if not hasattr(cls, a)]
    if missing:
        raise MethodError(
            f"method plugin {name!r} ({ep.value}{dist}) breaks the method contract: "
            f"missing {', '.join(missing)} (see bench/method.py)"
        )
    if not dataclasses.is_dataclass(cls.config_class):
        raise MethodError(
            f"method plugin {name!r} ({ep.value}{dist}) breaks the method contract: "
            "config_class must be a dataclass"
        )
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
