"""Statistics on trial records: standard errors, confidence intervals and power (scipy).

Every interval here is a two-sided 95% interval unless a level is given. The unit of an
interval is what varies independently between repetitions: seeds for anything a trial
produces once (sharpness, time), seeds then documents for test scores (seed_interval).
`hizfo-bench calibrate` (bench/analysis/calibrate.py) measures how often these intervals
exclude no effect when there is none.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.format import flatten
from bench.record import TrialRecord


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval; lo/hi are None with fewer than 2 values."""

    mean: float
    lo: float | None
    hi: float | None
    n: int

    @property
    def half_width(self) -> float | None:
        return None if self.lo is None or self.hi is None else (self.hi - self.lo) / 2

    def contains(self, value: float) -> bool:
        return self.lo is not None and self.hi is not None and self.lo <= value <= self.hi


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval | None:
    """Mean and Student-t interval over independent values (seeds); None when empty."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return None
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return Interval(mean, None, None, n)
    sem = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1) / n)
    if sem == 0:
        return Interval(mean, mean, mean, n)
    half = t_quantile(level, n - 1) * sem
    return Interval(mean, mean - half, mean + half, n)


@functools.lru_cache(maxsize=1024)
def t_quantile(level: float, df: int) -> float:
    """t(1 - (1 - level) / 2, df): the two-sided interval's quantile (cached: the
    calibration asks for the same few thousands of times)."""
    from scipy import stats

    return float(stats.t.ppf(1 - (1 - level) / 2, df))


def primary_stderr(record: TrialRecord) -> float | None:
    """lm-eval's stderr of the trial's primary metric ("exact_match,strict-match" ->
    "exact_match_stderr,strict-match"); the primary metric is the one equal to score."""
    metrics = record.metrics
    score = record.score
    names = [_task_metric(record.task)]
    names += [k for k, v in metrics.items() if "stderr" not in k and v == score]
    for name in names:
        if not name:
            continue
        base, _, filt = name.partition(",")
        value = metrics.get(f"{base}_stderr" + (f",{filt}" if filt else ""))
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    return None


def _task_metric(task: str) -> str | None:
    from bench.tasks import available_tasks

    cls = available_tasks().get(task)
    return cls.metric if cls is not None else None


def paired_bootstrap(
    differences: Sequence[float], level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Interval | None:
    """Mean of per-document differences and its percentile bootstrap interval (documents
    resampled with replacement: the paired bootstrap over the test set). None when empty."""
    import numpy as np
    from scipy import stats

    xs = np.asarray([d for d in differences if d is not None and math.isfinite(d)], dtype=float)
    if len(xs) == 0:
        return None
    mean = float(xs.mean())
    if len(xs) < 2 or np.all(xs == xs[0]):
        return Interval(mean, mean, mean, len(xs))
    res = stats.bootstrap(
        (xs,),
        np.mean,
        confidence_level=level,
        n_resamples=resamples,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return Interval(mean, float(ci.low), float(ci.high), len(xs))


def seed_interval(diffs: Any, level: float = 0.95) -> Interval | None:
    """Two-level interval of a paired difference measured per (seed, document).

    `diffs` is a seeds x documents array of per-document differences (method - reference
    on the same seed and document). The mean is the grand mean; its variance under the
    two-way random-effects model d_sd = mu + a_s + b_d + e_sd (seed effect a, document
    effect b, residual e; Bouthillier et al., MLSys 2021) is
    var = (MS_seed + max(0, MS_doc - MS_res)) / (S D),
    i.e. the spread of the per-seed means (which carries the seed and the residual
    variance) plus the documents' own share when the data show one. The interval is
    mean ± t(1 - a/2, S - 1) sqrt(var): the seed is the unit with the fewest degrees of
    freedom, so its quantile is the honest one with 3 or 5 seeds, where a bootstrap over
    the seeds is too narrow. None with no values; no interval (lo = hi = None) with one
    seed: nothing in one trained model per method measures how much another seed moves
    the difference.
    """
    import numpy as np

    d = np.asarray(diffs, dtype=float)
    if d.ndim != 2 or d.size == 0:
        return None
    n_seed, n_doc = d.shape
    mean = float(d.mean())
    if n_seed < 2:
        return Interval(mean, None, None, n_seed)
    ms = mean_squares(d)
    var = (ms["seed"] + max(0.0, ms["doc"] - ms["res"])) / (n_seed * n_doc)
    if var <= 0:
        return Interval(mean, mean, mean, n_seed)
    half = t_quantile(level, n_seed - 1) * math.sqrt(var)
    return Interval(mean, mean - half, mean + half, n_seed)


def mean_squares(d: Any) -> dict[str, float]:
    """Two-way ANOVA mean squares of a seeds x documents array (no replication): seed,
    document and residual; each 0 where its degrees of freedom are 0."""
    import numpy as np

    d = np.asarray(d, dtype=float)
    n_seed, n_doc = d.shape
    grand = d.mean()
    seed_means, doc_means = d.mean(axis=1), d.mean(axis=0)
    ss_seed = n_doc * float(((seed_means - grand) ** 2).sum())
    ss_doc = n_seed * float(((doc_means - grand) ** 2).sum())
    resid = d - seed_means[:, None] - doc_means[None, :] + grand
    ss_res = float((resid**2).sum())
    df_res = (n_seed - 1) * (n_doc - 1)
    return {
        "seed": ss_seed / (n_seed - 1) if n_seed > 1 else 0.0,
        "doc": ss_doc / (n_doc - 1) if n_doc > 1 else 0.0,
        "res": ss_res / df_res if df_res > 0 else 0.0,
    }


@dataclass(frozen=True)
class Components:
    """Variance components of a per-(seed, document) difference: the seed's (sigma_a^2),
    the document's (sigma_b^2) and the residual (sigma_e^2). For a difference measured
    once per seed (sharpness, log time) only `seed` is set (documents = 1)."""

    seed: float
    doc: float = 0.0
    res: float = 0.0

    def variance(self, seeds: int, documents: int = 1) -> float:
        """Variance of the grand mean over `seeds` seeds and `documents` documents."""
        return self.seed / seeds + self.doc / documents + self.res / (seeds * documents)


def components(diffs: Any) -> Components | None:
    """Method-of-moments variance components of a seeds x documents array; None with
    fewer than 2 seeds (one seed cannot separate the seed's variance from anything)."""
    import numpy as np

    d = np.asarray(diffs, dtype=float)
    if d.ndim != 2 or d.shape[0] < 2:
        return None
    n_seed, n_doc = d.shape
    if n_doc == 1:
        return Components(seed=float(d[:, 0].var(ddof=1)))
    ms = mean_squares(d)
    return Components(
        seed=max(0.0, (ms["seed"] - ms["res"]) / n_doc),
        doc=max(0.0, (ms["doc"] - ms["res"]) / n_seed),
        res=ms["res"],
    )


def power(
    effect: float, comps: Components, seeds: int, documents: int = 1, level: float = 0.95
) -> float:
    """Chance that seed_interval (or a t-interval over seeds) excludes 0 on the side of a
    true difference `effect`, with `seeds` x `documents`: noncentral t with S - 1 degrees
    of freedom and noncentrality effect / sqrt(variance of the mean)."""
    from scipy import stats

    if seeds < 2:
        return 0.0
    var = comps.variance(seeds, documents)
    if var <= 0:
        return 1.0
    df = seeds - 1
    crit = stats.t.ppf(1 - (1 - level) / 2, df)
    return float(stats.nct.sf(crit, df, abs(effect) / math.sqrt(var)))


def seeds_for_power(
    effect: float,
    comps: Components,
    documents: int = 1,
    target: float = 0.8,
    level: float = 0.95,
    max_seeds: int = 200,
) -> int | None:
    """The fewest seeds (>= 2) that give `target` power to detect `effect` at `documents`
    documents; None when not within `max_seeds` (the documents' share of the variance
    then limits it: more documents, not seeds, are needed)."""
    import numpy as np
    from scipy import stats

    if effect == 0 or not math.isfinite(effect):
        return None
    seeds = np.arange(2, max_seeds + 1)
    var = comps.seed / seeds + comps.doc / documents + comps.res / (seeds * documents)
    if np.all(var <= 0):
        return 2
    df = seeds - 1
    crit = stats.t.ppf(1 - (1 - level) / 2, df)
    with np.errstate(divide="ignore"):
        ncp = abs(effect) / np.sqrt(np.maximum(var, 1e-300))
    ok = np.nonzero(stats.nct.sf(crit, df, ncp) >= target)[0]
    return int(seeds[ok[0]]) if len(ok) else None


def geometric_interval(log_values: Sequence[float], level: float = 0.95) -> Interval | None:
    """Geometric mean of ratios given their logs, with the t-interval over the logs
    exponentiated (a speed-up's unit is the seed)."""
    iv = mean_interval(log_values, level)
    if iv is None:
        return None
    return Interval(
        math.exp(iv.mean),
        None if iv.lo is None else math.exp(iv.lo),
        None if iv.hi is None else math.exp(iv.hi),
        iv.n,
    )


# ---- settings: never average two configurations as seeds --------------------------------

_NOT_A_SETTING = {"seed", "phase", "method", "task", "model"}


def split_settings(records: Sequence[TrialRecord]) -> tuple[list[TrialRecord], list[str]]:
    """Trials of one (method, task, model) that ran with different settings are different
    rows, never extra seeds: every setting but the one with the most trials gets the
    method name ``method{key=value, ...}`` (the keys where it differs from that one), and
    a warning says so. Returns copies; records with one setting come back unchanged."""
    import json

    cells: dict[tuple, dict[str, list[TrialRecord]]] = {}
    flats: dict[str, dict[str, Any]] = {}
    for r in records:
        flat = flatten(r.config, skip=_NOT_A_SETTING)
        key = json.dumps(flat, sort_keys=True, default=str)
        flats[key] = flat
        cell = (r.method, r.task, r.model)
        cells.setdefault(cell, {}).setdefault(key, []).append(r)
    out: list[TrialRecord] = []
    warnings: list[str] = []
    for (method, task, model), settings in cells.items():
        if len(settings) == 1:
            out += next(iter(settings.values()))
            continue
        main = max(settings, key=lambda k: len(settings[k]))
        out += settings[main]
        for key, group in settings.items():
            if key == main:
                continue
            a, b = flats[main], flats[key]
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            label = ", ".join(f"{k}={b.get(k)}" for k in diff[:3]) + (
                ", ..." if len(diff) > 3 else ""
            )
            name = f"{method}{{{label}}}"
            out += [dataclasses.replace(r, method=name) for r in group]
            seeds = sorted(r.seed for r in group)
            warnings.append(
                f"{method} on {task} ({model}) ran with {len(settings)} settings: the "
                f"trials of seeds {seeds} differ in {', '.join(diff)} and are shown as "
                f"{name!r}, not averaged with the others"
            )
    return out, warnings
