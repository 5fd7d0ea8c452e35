"""tuning.md: what the tuning of a run tried and chose (from its tuning.json).

Per (method, task, model): the budget (points tried, edge extensions included), the chosen
settings and their dev value, the ranges searched, an edge flag where the chosen value is
the lowest or highest tried on its dimension, then every point tried with its final dev
value, best first (bench/orchestrate/tuning.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _settings(settings: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()
    )


def _value(value: float | None) -> str:
    return "failed" if value is None else f"{value:.4f}"


def tuning_table(run_dir: Path) -> str | None:
    """The Markdown report of tuning.json, or None when the run did not tune."""
    path = Path(run_dir) / "tuning.json"
    if not path.is_file():
        return None
    tuning = json.loads(path.read_text())
    metric = tuning["metric"]
    strategy = tuning.get("strategy", "joint")
    flagged = [c for c in tuning["choices"] if c.get("edges")]
    lines = [
        f"Tuning on dev: {tuning['budget']} quasi-random points per searched dimension "
        f"({strategy}; an independent sequence per method), seeds {tuning['seeds']}, picked "
        f"by the final {metric}; edge extensions: {tuning.get('extend_edges') or 'off'}. "
        "Test was never scored during tuning.",
        "",
    ]
    if flagged:
        lines += [
            f"**{len(flagged)} choice(s) at the edge of what was tried** (marked ⚠ below): "
            "the best value may lie outside the searched range.",
            "",
        ]
    lines += [
        f"| method | task | model | points | chosen | final {metric} | edge | searched |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in tuning["choices"]:
        model = Path(c["model"]).name or c["model"]
        edges = c.get("edges") or {}
        edge = (
            "; ".join(
                f"⚠ {k} {e['side']}"
                + (f" after {e['extensions']} extension(s)" if e.get("extensions") else "")
                for k, e in edges.items()
            )
            or "-"
        )
        searched = c.get("searched") or tuning["spaces"].get(c["method"], {})
        lines.append(
            f"| {c['method']} | {c['task']} | {model} | {c['budget']} | "
            f"{_settings(c['chosen'])} | {_value(c['dev_value'])} | {edge} | "
            f"`{json.dumps(searched)}` |"
        )
    lines += ["", "## Every point tried", ""]
    for c in tuning["choices"]:
        model = Path(c["model"]).name or c["model"]
        lines += [
            f"### {c['method']} on {c['task']} ({model})",
            "",
            f"| stage | round | settings | final {metric} | seeds |",
            "|---|---|---|---|---|",
        ]
        for t in c["tried"]:
            mark = " (chosen)" if t["settings"] == c["chosen"] else ""
            lines.append(
                f"| {t.get('stage') or '-'} | {t.get('round') if t.get('round') is not None else '-'} "
                f"| {_settings(t['settings'])}{mark} | {_value(t['dev_value'])} | {t['seeds']} |"
            )
        for note in c.get("notes") or []:
            lines.append(f"\n{note}")
        lines.append("")
    return "\n".join(lines)
