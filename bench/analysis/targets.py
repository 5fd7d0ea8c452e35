"""Time-to-target as AlgoPerf scores it: fixed targets, one budget, censored times.

A suite names one target per task (``targets:`` in the suite)::

    targets:
      math-mini: {metric: dev_loss, value: 0.9, budget: 120}   # fixed in advance
      docstring-summary: {metric: dev_loss, method: fo-adamw, seeds: [100, 101, 102]}

- ``value``: a number fixed in advance (e.g. committed from a target-setting run).
- ``method`` + ``seeds``: a target-setting stage. Before the final trials, ``method``
  trains on ``seeds`` (disjoint from the suite's seeds; phase ``target``, never scored
  on test); the target is the median start value minus ``fraction`` (default 0.9) of the
  median improvement to the best dev value, i.e. a value the reference reaches reliably,
  per task and model. The run writes them to ``targets.json`` (commit them as ``value``
  to fix them for later runs).
- ``method`` alone (legacy): the seed mean of that method's final dev values in the same
  run; reports flag such targets as not fixed in advance.

``budget`` (train-clock seconds, the same for every method) bounds the time that counts;
without it a target-setting stage sets ``budget_factor`` (default 2) x the reference's
median time to the target. ``dev_loss`` is reached at or below the target, ``dev_score``
at or above. The clock is the train clock at the evaluation point plus the method's setup
(``setup_seconds``: Hi-ZFO's first importance profiling is work it needs to train). A
trial that did not reach the target within the budget is censored at the time it was
last seen without it (min(budget, its last evaluation point)): "not reached", never a
number in tables.

Speed-up of a method against the reference = reference time / method time per seed, as a
geometric mean with a t-interval over the seeds' log ratios. A trial that did not reach
the target counts as "not reached within the budget" and enters at the budget, whenever
it stopped: a trial that ended before the budget ran out (its steps were done) had its
whole run and did not reach the target, so it can never count as faster than the budget
(entering it at its early stop would make stopping early a speed-up). Without a budget,
a censored time enters at the later of its censoring time and the other trial's time
(at best as fast as the one that reached). So a method that never reaches a target the
reference reached gets at most reference time / budget <= 1: evidence against "less
time". Seeds where neither reached it are left out.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from bench.analysis.stats import Interval, geometric_interval, mean_interval
from bench.record import TrialRecord

METRICS = {"dev_loss": "lower", "dev_score": "higher"}
_TARGET_KEYS = {"metric", "value", "method", "seeds", "fraction", "budget", "budget_factor"}
CLOCK = "train clock + setup"


class TargetError(ValueError):
    """A target spec that cannot work (unknown metric, method not in the suite, ...)."""


@dataclass(frozen=True)
class Target:
    """One task's target: a fixed value, or set by `method` (on `seeds`: a target stage)."""

    task: str
    metric: str
    value: float | None = None
    method: str | None = None
    seeds: tuple[int, ...] = ()
    fraction: float = 0.9
    budget: float | None = None
    budget_factor: float = 2.0

    @property
    def staged(self) -> bool:
        """Set by a target-setting stage before the final trials (fixed in advance)."""
        return self.method is not None and bool(self.seeds)

    def reached(self, value: float | None, target: float) -> bool:
        if value is None:
            return False
        return value <= target if METRICS[self.metric] == "lower" else value >= target

    def describe(self, value: float | None = None) -> str:
        op = "<=" if METRICS[self.metric] == "lower" else ">="
        if value is not None:
            what = f"{value:.4g}"
        elif self.value is not None:
            what = f"{self.value:g}"
        else:
            what = f"final {self.method}"
        return f"{self.metric} {op} {what}"


def parse_targets(
    raw: Mapping[str, Any] | None, tasks: Iterable[str], methods: Iterable[str]
) -> dict[str, Target]:
    """Validate a suite's ``targets`` mapping; raises TargetError with one line."""
    tasks, methods = set(tasks), set(methods)
    out: dict[str, Target] = {}
    for task, spec in (raw or {}).items():
        where = f"targets.{task}"
        if task not in tasks:
            raise TargetError(f"{where}: task {task!r} is not in the suite")
        if not isinstance(spec, Mapping):
            raise TargetError(f"{where}: expected a mapping like {{metric: dev_loss, value: 1.0}}")
        unknown = sorted(set(spec) - _TARGET_KEYS)
        if unknown:
            raise TargetError(f"{where}: unknown key(s) {', '.join(unknown)}")
        metric = spec.get("metric", "dev_loss")
        if metric not in METRICS:
            raise TargetError(
                f"{where}: metric must be one of {', '.join(METRICS)}, not {metric!r}"
            )
        value, method = spec.get("value"), spec.get("method")
        if (value is None) == (method is None):
            raise TargetError(f"{where}: give exactly one of 'value' or 'method'")
        if method is not None and method not in methods:
            raise TargetError(
                f"{where}: target method {method!r} is not in the suite "
                f"(methods: {', '.join(sorted(methods))})"
            )
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise TargetError(f"{where}: value must be a number, got {value!r}")
        seeds = spec.get("seeds") or []
        if not isinstance(seeds, list) or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in seeds
        ):
            raise TargetError(f"{where}: seeds must be a list of integers, got {seeds!r}")
        if seeds and method is None:
            raise TargetError(f"{where}: seeds set targets from a method: give 'method'")
        numbers = {}
        for key, lo, hi in (("fraction", 0.0, 1.0), ("budget", 0.0, math.inf)):
            x = spec.get(key)
            if x is not None and (
                isinstance(x, bool) or not isinstance(x, int | float) or not lo < x <= hi
            ):
                raise TargetError(f"{where}: {key} must be a number in ({lo:g}, {hi:g}], got {x!r}")
            numbers[key] = x
        factor = spec.get("budget_factor", 2.0)
        if isinstance(factor, bool) or not isinstance(factor, int | float) or factor < 1:
            raise TargetError(f"{where}: budget_factor must be a number >= 1, got {factor!r}")
        out[task] = Target(
            task,
            metric,
            None if value is None else float(value),
            method,
            tuple(seeds),
            0.9 if numbers["fraction"] is None else float(numbers["fraction"]),
            None if numbers["budget"] is None else float(numbers["budget"]),
            float(factor),
        )
    return out


# ---- the target-setting stage ----------------------------------------------------------


def target_specs(specs: Sequence[Any], targets: Mapping[str, Target]) -> list[Any]:
    """The target-setting trials: for each staged target, its method on each of the
    target's seeds, per model (phase ``target``, evaluation points on dev)."""
    out, seen = [], set()
    for spec in specs:
        t = targets.get(spec.task)
        key = (spec.task, spec.model)
        if t is None or not t.staged or spec.method != t.method or key in seen:
            continue
        seen.add(key)
        dev = spec.dev if spec.dev.eval_every else replace(spec.dev, eval_every=spec.train.steps)
        out += [replace(spec, seed=s, dev=dev, phase="target") for s in t.seeds]
    return out


def _clock(record: TrialRecord, point: Mapping[str, Any]) -> float:
    return float(point["seconds"]) + float(record.setup_seconds or 0.0)


def set_targets(
    records: Sequence[TrialRecord], targets: Mapping[str, Target]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Targets from the target-setting trials: task -> model -> {value, budget, ...}.

    value = median start - fraction x (median start - median best dev value); budget =
    the target's fixed budget, or budget_factor x the median time (train clock + setup)
    the target-setting trials took to reach it (a trial that never did counts as
    infinitely slow)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    groups: dict[tuple[str, str], list[TrialRecord]] = {}
    for r in records:
        t = targets.get(r.task)
        if t is not None and t.staged and r.method == t.method and r.ok and r.eval_curve:
            groups.setdefault((r.task, r.model), []).append(r)
    for (task, model), group in sorted(groups.items()):
        t = targets[task]
        sign = 1.0 if METRICS[t.metric] == "lower" else -1.0
        starts, bests = [], []
        for r in group:
            values = [float(p[t.metric]) for p in r.eval_curve if p.get(t.metric) is not None]
            if values:
                starts.append(values[0])
                bests.append(min(values, key=lambda v: sign * v))
        if not starts:
            continue
        start, best = statistics.median(starts), statistics.median(bests)
        value = start - t.fraction * (start - best)
        times = []
        for r in group:
            ttt = time_to_target(r, t, value)
            times.append(ttt["seconds"] if ttt["reached"] else math.inf)
        median_time = statistics.median(times)
        budget = t.budget
        if budget is None and math.isfinite(median_time):
            budget = t.budget_factor * median_time
        out.setdefault(task, {})[model] = {
            "metric": t.metric,
            "value": value,
            "budget": budget,
            "method": t.method,
            "seeds": sorted(r.seed for r in group),
            "rule": f"median start - {t.fraction:g} x median improvement to the best",
            "start": start,
            "best": best,
            "reference_seconds": None if not math.isfinite(median_time) else median_time,
            "clock": CLOCK,
        }
    return out


# ---- time to target ----------------------------------------------------------------------


def final_value(record: TrialRecord, metric: str) -> float | None:
    """The last evaluation point's value of `metric`, or None."""
    points = record.eval_curve
    return points[-1].get(metric) if points else None


def target_value(
    target: Target,
    records: Sequence[TrialRecord],
    model: str,
    resolved: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> tuple[float | None, float | None]:
    """(value, budget) a trial of `model` is held to: the stage's, the fixed value, or
    (legacy) the seed-mean final dev value of the target method's final trials."""
    if target.staged:
        got = ((resolved or {}).get(target.task) or {}).get(model)
        return (got["value"], got["budget"]) if got else (None, None)
    if target.value is not None:
        return target.value, target.budget
    found = [
        final_value(r, target.metric)
        for r in records
        if r.method == target.method
        and r.task == target.task
        and r.model == model
        and r.ok
        and r.config.get("phase", "final") == "final"
    ]
    finals = [v for v in found if v is not None]
    return (sum(finals) / len(finals) if finals else None), target.budget


def time_to_target(
    record: TrialRecord, target: Target, value: float | None, budget: float | None = None
) -> dict:
    """When `record` first reached `value` within `budget` (see the module docstring)."""
    out: dict[str, Any] = {
        "target": target.describe(value),
        "metric": target.metric,
        "value": value,
        "reference": target.method,
        "fixed_in_advance": target.method is None or target.staged,
        "budget": budget,
        "clock": CLOCK,
        "reached": False,
        "seconds": None,
        "censored_at": None,
        "steps": None,
        "forward": None,
        "backward": None,
    }
    if value is None:
        return out
    points = record.eval_curve
    for point in points:
        clock = _clock(record, point)
        if budget is not None and clock > budget:
            break
        if target.reached(point.get(target.metric), value):
            out.update(
                reached=True,
                seconds=clock,
                steps=point["step"],
                forward=point.get("forward"),
                backward=point.get("backward"),
            )
            return out
    last = _clock(record, points[-1]) if points else None
    if last is not None:
        out["censored_at"] = last if budget is None else min(budget, last)
    return out


def annotate(
    records: list[TrialRecord],
    targets: Mapping[str, Target],
    resolved: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> list[TrialRecord]:
    """Set ``time_to_target`` on every successful record whose task has a target; returns
    the records that changed."""
    changed = []
    for r in records:
        target = targets.get(r.task)
        if target is None or not r.ok or not r.eval_curve:
            continue
        value, budget = target_value(target, records, r.model, resolved)
        ttt = time_to_target(r, target, value, budget)
        if r.time_to_target != ttt:
            r.time_to_target = ttt
            changed.append(r)
    return changed


# ---- speed-ups -------------------------------------------------------------------------


def _time(ttt: Mapping[str, Any], other: Mapping[str, Any]) -> float | None:
    """Seconds to the target; when not reached, the time it enters at: the budget ("not
    reached within the budget", even for a trial that stopped earlier), or without a budget
    the later of its censoring time and `other`'s time."""
    if ttt.get("reached"):
        return ttt.get("seconds")
    if ttt.get("budget"):
        return float(ttt["budget"])
    censored, theirs = (
        ttt.get("censored_at"),
        other.get("seconds") if other.get("reached") else None,
    )
    if censored is None:
        return None
    return max(censored, theirs) if theirs is not None else censored


@dataclass
class PairedTimes:
    """Per-seed log(reference time / method time), a trial that did not reach the target at
    the budget (never at an early stop: module docstring)."""

    logs: list[float]
    both: int = 0  # seeds where both reached the target
    method_censored: int = 0  # the method did not, the reference did
    reference_censored: int = 0  # the reference did not, the method did
    neither: int = 0  # left out: no evidence about speed
    ended_early: int = 0  # censored trials that stopped before the budget ran out

    def describe(self) -> str:
        parts = [f"{len(self.logs)} seeds: {self.both} both reached"]
        if self.method_censored:
            parts.append(f"{self.method_censored} only the reference (method censored)")
        if self.reference_censored:
            parts.append(f"{self.reference_censored} only the method (reference censored)")
        if self.neither:
            parts.append(f"{self.neither} neither (left out)")
        text = ", ".join(parts)
        if self.ended_early:
            text += (
                f"; {self.ended_early} trial(s) that did not reach it stopped before the budget "
                "ran out: counted as not reached within the budget (entered at the budget)"
            )
        return text


def paired_times(
    method_ttt: Mapping[int, Mapping[str, Any]], reference_ttt: Mapping[int, Mapping[str, Any]]
) -> PairedTimes:
    """Pair two methods' time_to_target dicts by seed (seed -> time_to_target)."""
    out = PairedTimes([])
    for seed in sorted(set(method_ttt) & set(reference_ttt)):
        m, r = method_ttt[seed], reference_ttt[seed]
        tm, tr = _time(m, r), _time(r, m)
        for x in (m, r):
            if (
                not x.get("reached")
                and x.get("budget")
                and (x.get("censored_at") or 0) < x["budget"]
            ):
                out.ended_early += 1
        if not m.get("reached") and not r.get("reached"):
            out.neither += 1
            continue
        if not tm or not tr or tm <= 0 or tr <= 0:
            continue
        out.logs.append(math.log(tr / tm))
        if m.get("reached") and r.get("reached"):
            out.both += 1
        elif r.get("reached"):
            out.method_censored += 1
        else:
            out.reference_censored += 1
    return out


@dataclass
class SpeedupRow:
    """Time-to-target of one (method, task, model) and its speed-up against the reference."""

    method: str
    task: str
    model: str
    target: str
    reached: int
    trials: int
    seconds: Interval | None  # over the seeds that reached it
    steps: Interval | None
    speedup: Interval | None  # geometric mean over seeds, censoring as above
    budget: float | None = None
    pairs: PairedTimes | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def speedups(records: Sequence[TrialRecord], reference: str) -> list[SpeedupRow]:
    """One row per (method, task, model) with a time_to_target; speed-up = reference time /
    method time, paired by seed (geometric mean, t-interval over the log ratios)."""
    # Per (method, task, model): each seed's time_to_target, in the records' order.
    groups: dict[tuple[str, str, str], list[tuple[int, dict[str, Any]]]] = {}
    for r in records:
        if r.ok and r.time_to_target:
            groups.setdefault((r.method, r.task, r.model), []).append((r.seed, r.time_to_target))
    rows = []
    for (method, task, model), group in sorted(groups.items()):
        hit = [ttt for _, ttt in group if ttt["reached"]]
        ref = dict(groups.get((reference, task, model), []))
        pairs = paired_times(dict(group), ref)
        rows.append(
            SpeedupRow(
                method=method,
                task=task,
                model=model,
                target=group[0][1]["target"],
                reached=len(hit),
                trials=len(group),
                seconds=mean_interval([ttt["seconds"] for ttt in hit]),
                steps=mean_interval([ttt["steps"] for ttt in hit]),
                speedup=geometric_interval(pairs.logs),
                budget=group[0][1].get("budget"),
                pairs=pairs,
            )
        )
    return rows
