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


def _yaml_number(v: Any) -> str:
    """`v` to three significant digits as YAML reads a float (``3.0e-05``, not ``3e-05``)."""
    if not isinstance(v, float):
        return str(v)
    text = f"{v:.3g}"
    mantissa, _, exponent = text.partition("e")
    if "." not in mantissa and exponent:
        mantissa += ".0"
    return f"{mantissa}e{exponent}" if exponent else text


def _suite_snippet(choices: list[dict[str, Any]]) -> list[str]:
    """The chosen values as a suite's `by_task` entries, to fix them in a suite file."""
    by_method: dict[str, dict[str, dict[str, Any]]] = {}
    for c in choices:
        by_method.setdefault(c["method"], {}).setdefault(c["task"], {})[c["model"]] = c["chosen"]
    lines = [
        "To fix these choices in a suite (`by_task`, docs/suites.md), merge into its `methods`:",
        "",
        "```yaml",
        "methods:",
    ]
    for method, tasks in by_method.items():
        lines += [f"  {method}:", "    by_task:"]
        for task, models in tasks.items():
            values = list(models.values())
            if any(v != values[0] for v in values[1:]):
                lines.append(f"      # {task}: the models chose differently; one model per suite")
            settings = ", ".join(f"{k}: {_yaml_number(v)}" for k, v in values[0].items())
            lines.append(f"      {task}: {{{settings}}}")
    return [*lines, "```"]


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
    lines += ["", *_suite_snippet(tuning["choices"]), "", "## Every point tried", ""]
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
