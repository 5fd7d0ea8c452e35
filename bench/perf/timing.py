"""Interleaved timing and the 95% interval of a ratio of two timed workloads.

A ratio of two workloads is only meaningful if both saw the same machine, and a shared
machine's load changes from one second to the next. So the workloads of a ratio are
timed in rounds, A B A B ... (as asv and torch.utils.benchmark do), and the ratio is
taken per round: r_i = A_i / B_i. Its estimate is the geometric mean of the r_i, with a
95% Student-t interval on log r_i (rounds are independent; a log ratio is symmetric, so
a step 10% slower and one 10% faster weigh the same). A ratio whose interval is wider
than +-INTERVAL_TOLERANCE gets no met/missed verdict (ratios.check_targets).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from scipy import stats

# A ratio's interval must lie within value x (1 -+ this) for a verdict.
INTERVAL_TOLERANCE = 0.05


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call of fn, synchronised on GPU."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def ratio_interval(
    numerators: list[float], denominators: list[float], confidence: float = 0.95
) -> dict[str, Any]:
    """Geometric mean of numerators[i] / denominators[i] and its t-interval on log ratios.

    Returns {value, low, high, half_width (relative: high / value - 1), n}; low, high
    and half_width are None with fewer than two pairs.
    """
    logs = [math.log(a / b) for a, b in zip(numerators, denominators, strict=True) if b > 0]
    n = len(logs)
    if n == 0:
        return {"value": None, "low": None, "high": None, "half_width": None, "n": 0}
    mean = sum(logs) / n
    if n < 2:
        return {"value": math.exp(mean), "low": None, "high": None, "half_width": None, "n": n}
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return {
        "value": math.exp(mean),
        "low": math.exp(mean - half),
        "high": math.exp(mean + half),
        "half_width": math.exp(half) - 1,
        "n": n,
    }


def narrow(interval: Mapping[str, Any], tolerance: float = INTERVAL_TOLERANCE) -> bool:
    """True when the interval is known and within value x (1 +- tolerance)."""
    return interval.get("half_width") is not None and interval["half_width"] <= tolerance


def pairs_narrow(
    pairs: list[tuple[str, str, float]],
) -> Callable[[dict[str, list[float]]], bool]:
    """A `converged` test for interleaved: every (numerator, denominator, factor) pair's
    interval, numerator / (factor x denominator), is narrow."""

    def converged(seconds: dict[str, list[float]]) -> bool:
        return all(
            narrow(ratio_interval(seconds[a], [f * t for t in seconds[b]])) for a, b, f in pairs
        )

    return converged


def interleaved(
    workloads: Mapping[str, Callable[[int], Any]],
    device: torch.device,
    *,
    warmup: int,
    repeats: int,
    max_repeats: int,
    converged: Callable[[dict[str, list[float]]], bool] | None = None,
) -> dict[str, list[float]]:
    """Seconds of each workload per round, the workloads timed one after the other in
    every round (A B A B ...). fn(i) gets the round number (warmup rounds first). After
    `repeats` rounds, rounds are added until `converged(seconds)` holds (every ratio's
    interval narrow, say), up to `max_repeats`; without it, exactly `repeats` rounds."""
    seconds: dict[str, list[float]] = {name: [] for name in workloads}
    for i in range(warmup):
        for fn in workloads.values():
            fn(i)
    limit = max(repeats, max_repeats) if converged is not None else repeats
    for rounds in range(1, limit + 1):
        i = warmup + rounds - 1
        for name, fn in workloads.items():
            seconds[name].append(timed(lambda fn=fn, i=i: fn(i), device))
        if rounds >= repeats and (converged is None or converged(seconds)):
            break
    return seconds


def summary(seconds: list[float]) -> dict[str, Any]:
    """Median, min and every sample of one workload's timed calls."""
    return {
        "median_seconds": statistics.median(seconds),
        "min_seconds": min(seconds),
        "seconds": list(seconds),
    }
