"""Formatting shared by tables, plots, compare and perf: one place for each job."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from typing import Any

# What each memory kind of a record means (bench/measure/memory.py, bench/perf.py).
MEMORY_NOTE = {
    "weights_plus_added": "weights plus the peak memory training added (GPU: allocated; "
    "CPU: resident)",
    "cuda_max_allocated": "peak GPU memory allocated (weights included)",
    "cpu_rss_added": "peak CPU resident memory added by training (weights excluded)",
    "cpu_weights_plus_rss_added": "weights plus peak CPU resident memory added (perf)",
}


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_seconds(s: float | None) -> str:
    """A duration in the unit that reads best: 42.0 s, 3.5 min, 2.1 h."""
    if _missing(s):
        return "-"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def fmt_s(s: float | None, digits: int = 1, width: int = 0) -> str:
    """Seconds with a fixed number of digits (for columns that must line up)."""
    return "-" if _missing(s) else f"{s:{width}.{digits}f} s"


def fmt_memory(n: float | None) -> str:
    """Bytes as MiB below 1 GiB, else GiB."""
    if _missing(n):
        return "-"
    if n < 2**30:
        return f"{n / 2**20:,.0f} MiB"
    return f"{n / 2**30:.1f} GiB"


def fmt_mib(n: float | None, digits: int = 0, width: int = 0, sep: str = "") -> str:
    """Bytes as MiB with a fixed number of digits."""
    return "-" if _missing(n) else f"{n / 2**20:{width}{sep}.{digits}f} MiB"


def fmt_relative(x: float | None) -> str:
    return "-" if _missing(x) else f"{x:.2f}×"


def file_slug(text: str) -> str:
    """A file-name-safe form of a task or model name (keeps dots and dashes)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


def id_slug(text: str) -> str:
    """A lower-case dash-separated form, for ids."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


_TEX_ESCAPES = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\^{}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text.replace("\\", r"\textbackslash{}"))


def method_order(methods: list[str] | set[str]) -> list[str]:
    """Methods in display order: by the display_order each method declares (the paper's
    for the built-ins: zero-shot, FT, the ZO baseline, PEFT, ours), then by name, so a
    method's variants follow it."""
    from bench.registry import split_variant, traits_of

    def key(m: str) -> tuple[int, str, str]:
        base = split_variant(m)[0]
        return (traits_of(base).display_order, base, m)

    return sorted(set(methods), key=key)


def flatten(
    value: Any,
    prefix: str = "",
    *,
    skip: Collection[str] = (),
    keep_empty: bool = False,
    lists: str = "keep",
) -> dict[str, Any]:
    """Nested mappings as one level of dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``
    (a value that is no mapping is ``{prefix: value}``).

    `skip`: top-level keys left out. `keep_empty`: a nested empty mapping stays a value
    (else it gives no key). `lists`: a list or tuple is kept as a value ("keep"), left out
    ("drop") or written as JSON text ("json")."""
    if isinstance(value, dict) and (value or not keep_empty or not prefix):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not prefix and key in skip:
                continue
            name = f"{prefix}.{key}" if prefix else str(key)
            out.update(flatten(item, name, keep_empty=keep_empty, lists=lists))
        return out
    if isinstance(value, list | tuple) and lists != "keep":
        return {prefix: json.dumps(value)} if lists == "json" else {}
    return {prefix: value}
