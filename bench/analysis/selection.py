"""Picking a tuned configuration on dev: pure functions on tuning records.

Only the dev side of a record is read (its last evaluation point); a tuning trial is
never scored on test (it runs with ``phase: tune``), and this module never looks at
``score`` or ``metrics``, so test documents cannot steer a choice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.analysis.targets import METRICS, final_value
from bench.record import TrialRecord


def config_key(config: Mapping[str, Any]) -> str:
    return json.dumps(dict(config), sort_keys=True, default=str)


@dataclass
class Choice:
    """The configuration chosen for one (method, task, model), and the evidence."""

    method: str
    task: str
    model: str
    metric: str
    budget: int  # tuning points tried
    chosen: dict[str, Any]  # the searched settings of the winner
    dev_value: float | None  # its mean final dev value over the tuning seeds
    tried: list[dict[str, Any]] = field(default_factory=list)  # every point: settings, value
    # key -> {side: low|high, value, extensions}: the chosen value is the lowest or highest
    # tried on that dimension, so the best may lie outside the range (tuning.py)
    edges: dict[str, Any] = field(default_factory=dict)
    searched: dict[str, list[Any]] = field(default_factory=dict)  # key -> ranges, in order
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dev_only(record: TrialRecord, metric: str) -> float | None:
    value = final_value(record, metric)
    return value if value is not None and math.isfinite(value) else None


def choose(records: list[TrialRecord], metric: str) -> list[Choice]:
    """The best tuning point per (method, task, model) by its mean final dev `metric` over
    seeds (lower dev_loss, higher dev_score); failed or diverged points rank last."""
    better_low = METRICS[metric] == "lower"
    groups: dict[tuple[str, str, str], dict[str, list[TrialRecord]]] = {}
    for r in records:
        point = r.config.get("tuning_point") or {}
        key = (r.method, r.task, r.model)
        groups.setdefault(key, {}).setdefault(config_key(point), []).append(r)
    out = []
    for (method, task, model), points in sorted(groups.items()):
        tried = []
        for point_key, recs in points.items():
            found = [_dev_only(r, metric) for r in recs if r.ok]
            values = [v for v in found if v is not None]
            mean = sum(values) / len(values) if values and len(values) == len(recs) else None
            tried.append({"settings": json.loads(point_key), "dev_value": mean, "seeds": len(recs)})

        def rank(t: dict[str, Any]) -> float:
            v = t["dev_value"]
            if v is None:
                return math.inf
            return v if better_low else -v

        best = min(tried, key=rank)
        out.append(
            Choice(
                method=method,
                task=task,
                model=model,
                metric=metric,
                budget=len(tried),
                chosen=best["settings"],
                dev_value=best["dev_value"],
                tried=sorted(tried, key=rank),
            )
        )
    return out


def edge_sides(
    candidates: list[Mapping[str, Any]], chosen: Mapping[str, Any], keys: list[str]
) -> dict[str, str]:
    """The numeric `keys` on which `chosen` (full settings) is the lowest ("low") or highest
    ("high") value among the `candidates` (full settings of every point compared with it,
    failed ones included: a failure beyond the choice bounds it). A choice at the edge of
    what was tried says the best value may lie outside the searched range."""
    out = {}
    for key in keys:
        values = [c[key] for c in candidates if isinstance(c.get(key), int | float)]
        value = chosen.get(key)
        if len(set(values)) < 2 or not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if value <= min(values):
            out[key] = "low"
        elif value >= max(values):
            out[key] = "high"
    return out
