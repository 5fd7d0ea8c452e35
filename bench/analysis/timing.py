"""Is the current run slower? A statistical decision on per-step times (scipy, numpy).

One train time per trial against a fixed factor cries wolf on a shared box (two
unchanged nightly runs differed by 1.3x) and needs the reference to come from the same
machine. Here, as in asv and the PyTorch benchmark CI, each trial contributes many
samples and the baseline is several earlier runs of the same machine:

- clock: like with like, and the clock that load does not move. A trial's curve holds
  two clocks at every log window: ``seconds`` (wall, on the train clock) and
  ``cpu_seconds`` (this process's CPU time over the same windows). Other processes on
  the box stretch the wall clock of a tiny model's 12 ms steps by 3-4x (measured on the
  2-core box with two busy processes beside it) but its CPU time by about 1.1-1.2x
  (cache and context switches), so the CPU clock is compared whenever the current run
  and every baseline run carry it, and the wall clock otherwise (records made before
  cpu_seconds existed; perf records, whose repeats are timed interleaved with their
  reference workload). A trial that waits on a device (a GPU) spends wall time the CPU
  clock does not see, so there the wall clock is compared (``clock="seconds"``).
- samples: (clock_i - clock_{i-1}) / (step_i - step_{i-1}) is the mean step time of each
  window: one run gives one sample per window. The first window also pays one-time costs
  (first allocations, lazy initialisation) and is dropped when three or more remain. A
  perf record (task "perf") gives its timed repeats (``step_seconds``).
- effect: the ratio of a low quantile (default the 20th percentile) of the current
  step times to the baseline's, with a 95% bootstrap interval. Another process on the
  box only ever adds time to a window, never removes it, so the fast windows track the
  machine's unloaded speed (the reason ``timeit`` reports the minimum) while the median
  moves with the load: on the shared 2-core box unchanged runs of a tiny MeZO trial had
  median ratios from 0.4 to 1.2. The bootstrap is hierarchical: it resamples the baseline's runs,
  then windows within them, so the spread between runs made under different load
  widens the interval instead of being mistaken for a change.
- decision: a slowdown when the one-sided Mann-Whitney U test says the current windows
  are slower (p < alpha), the whole interval lies above ``factor``, and the current
  statistic exceeds ``factor`` times the slowest single history run's: significance
  alone would flag a 3% shift measured precisely; the factor is the smallest slowdown
  worth failing a night for; and the current run is one draw of the box's load, which
  the spread of the history's runs measures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.record import TrialRecord

BOOTSTRAP_SAMPLES = 2000


@dataclass
class TimeTolerance:
    """How a slowdown is decided.

    Attributes:
        factor: smallest slowdown flagged: the lower end of the 95% interval of the
            quantile ratio must exceed it. 1.25 on the shared 2-core development box, where
            unchanged runs drift by up to about 1.2x with the load; 1.1 suits a quiet,
            dedicated runner.
        alpha: significance level of the one-sided Mann-Whitney U test.
        quantile: the statistic compared: this quantile of the per-step times (0.5 is
            the median; low values resist load from other processes).
        min_samples: fewer step-time samples than this on either side: no verdict.
        last: baseline runs used (the newest ones of this machine).
    """

    factor: float = 1.25
    alpha: float = 0.01
    quantile: float = 0.2
    min_samples: int = 3
    last: int = 5


CLOCKS = ("cpu_seconds", "seconds")


def _has_clock(record: TrialRecord, clock: str) -> bool:
    curve = record.curve
    return bool(curve) and all(isinstance(p.get(clock), int | float) for p in curve)


def _on_gpu(record: TrialRecord) -> bool:
    return str(record.environment.get("device") or "").startswith("cuda")


def common_clock(records: Sequence[TrialRecord]) -> str:
    """The clock every one of `records` can be compared on: ``cpu_seconds`` when all of
    them carry it and none ran on a GPU, else the wall clock ``seconds``."""
    if records and all(_has_clock(r, "cpu_seconds") and not _on_gpu(r) for r in records):
        return "cpu_seconds"
    return "seconds"


def step_times(record: TrialRecord, clock: str = "seconds") -> list[float]:
    """Per-step seconds of one trial on `clock` (``seconds``: wall; ``cpu_seconds``: the
    process's CPU time): per log window of its curve, or a perf record's timed repeats;
    empty when there is nothing to sample."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    repeats = record.step_seconds
    if isinstance(repeats, list) and repeats:
        return [float(x) for x in repeats if isinstance(x, int | float) and x > 0]
    curve = record.curve
    out: list[float] = []
    prev_step: float = 0
    prev_seconds = 0.0
    for point in curve:
        step, seconds = point.get("step"), point.get(clock)
        if not isinstance(step, int | float) or not isinstance(seconds, int | float):
            return []
        if step > prev_step and seconds >= prev_seconds:
            out.append((seconds - prev_seconds) / (step - prev_step))
        prev_step, prev_seconds = step, seconds
    return out[1:] if len(out) >= 3 else out


def paired_step_times(
    current: TrialRecord, baseline: Sequence[TrialRecord]
) -> tuple[list[float], list[list[float]], str]:
    """The current trial's step times and each baseline run's, all on one clock
    (common_clock): like is compared with like. Returns (current, runs, clock)."""
    clock = common_clock([current, *baseline])
    return step_times(current, clock), [step_times(r, clock) for r in baseline], clock


def _ratio_interval(
    current: Sequence[float], runs: Sequence[Sequence[float]], q: float, level: float = 0.95
) -> tuple[float, float]:
    import numpy as np

    rng = np.random.default_rng(0)  # a fixed seed: the same data, the same verdict
    cur = np.asarray(current, dtype=float)
    base = [np.asarray(r, dtype=float) for r in runs]
    ratios = np.empty(BOOTSTRAP_SAMPLES)
    for b in range(BOOTSTRAP_SAMPLES):
        chosen = rng.integers(0, len(base), len(base))
        pooled = np.concatenate([rng.choice(base[i], len(base[i])) for i in chosen])
        ratios[b] = np.quantile(rng.choice(cur, len(cur)), q) / np.quantile(pooled, q)
    tail = (1 - level) / 2
    lo, hi = np.quantile(ratios, [tail, 1 - tail])
    return float(lo), float(hi)


def _quantile(xs: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.quantile(np.asarray(xs, dtype=float), q))


def compare_times(
    current: Sequence[float], baseline_runs: Sequence[Sequence[float]], tol: TimeTolerance
) -> dict[str, Any]:
    """The verdict on one trial's step times against its baseline runs.

    Returns {"status": "ok" | "regression" | "improved" | "no baseline" | "too few samples",
    "ratio", "interval", "p_slower", "p_faster", "current_stat", "baseline_stat" (the
    chosen quantile of each side), "quantile",
    "samples": [current, baseline], "baseline_runs"}.
    """
    from scipy.stats import mannwhitneyu

    runs = [list(r) for r in baseline_runs if r]
    out: dict[str, Any] = {"baseline_runs": len(runs)}
    if not runs:
        return {**out, "status": "no baseline"}
    pooled = [x for r in runs for x in r]
    out["samples"] = [len(current), len(pooled)]
    if len(current) < tol.min_samples or len(pooled) < tol.min_samples:
        return {**out, "status": "too few samples"}
    cur_med, base_med = _quantile(current, tol.quantile), _quantile(pooled, tol.quantile)
    lo, hi = _ratio_interval(current, runs, tol.quantile)
    p_slower = float(mannwhitneyu(current, pooled, alternative="greater").pvalue)
    p_faster = float(mannwhitneyu(current, pooled, alternative="less").pvalue)
    # One run is one draw of the box's load: beside the interval (which resamples the
    # history's runs), a slowdown must also exceed the slowest history run by the factor.
    slowest = max(_quantile(r, tol.quantile) for r in runs)
    status = "ok"
    if p_slower < tol.alpha and lo > tol.factor and cur_med > tol.factor * slowest:
        status = "regression"
    elif p_faster < tol.alpha and hi < 1 / tol.factor:
        status = "improved"
    return {
        **out,
        "status": status,
        "quantile": tol.quantile,
        "current_stat": cur_med,
        "baseline_stat": base_med,
        "ratio": cur_med / base_med if base_med > 0 else math.inf,
        "interval": [lo, hi],
        "p_slower": p_slower,
        "p_faster": p_faster,
        "slowest_run_stat": slowest,
    }
