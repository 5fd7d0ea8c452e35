"""Formatting shared by tables, plots, compare and perf: one place for each job."""

from __future__ import annotations

import math
import re
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
