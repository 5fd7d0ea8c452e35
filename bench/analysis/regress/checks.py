"""The per-figure checks of one matched pair of trials, and their tolerances."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bench.analysis.regress.matching import config_differences, same_platform
from bench.analysis.stats import primary_stderr
from bench.analysis.timing import TimeTolerance, compare_times, paired_step_times, step_times
from bench.format import fmt_mib, fmt_s
from bench.record import TrialRecord
from bench.registry import split_variant, traits_of


def guarded_ratios(label: str) -> list[tuple[str, str]]:
    """The perf ratios guarded on the perf row of method `label` (its plain row, not a
    variant's), as (metric name, "time" or "memory"): what the method declares
    (MethodTraits.guarded_ratios), named ``<label>_<ratio>``."""
    if split_variant(label)[1] is not None:
        return []
    return [(f"{label}_{ratio}", kind) for ratio, kind in traits_of(label).guarded_ratios]


@dataclass
class Tolerances:
    """What counts as a regression (module docstring; docs/reports.md has the why).

    Attributes:
        abs_tol: score drop always tolerated (scores are 0..1).
        k: standard errors of the score difference tolerated.
        time: the statistical decision on per-step times against the history.
        check_time: judge times at all (needs a history of this machine).
        memory_factor: peak_memory_bytes may grow to factor * reference + slack.
        memory_slack_bytes: see memory_factor (a few MiB of CPU RSS are noise).
        check_memory: judge peak memory at all.
        loss_rtol_same_platform: relative change of a training or dev loss tolerated
            when both runs ran on the same platform (machine key, torch version,
            threads): a fixed-seed CPU run repeats bit for bit there.
        loss_factor: across platforms a loss may grow to factor * reference + slack.
        loss_slack: see loss_factor.
        check_loss: judge training and dev losses at all.
        ratio_tol_time: relative growth tolerated for the perf time ratios; repeats of
            `hizfo-bench perf` on the shared 2-core box spread by up to about 8% run to
            run when idle, and by more under load (docs/reports.md).
        ratio_tol_memory: relative growth tolerated for the perf memory ratio (repeats
            agree within 2-3%).
        check_ratios: judge perf ratios at all.
        check_passes: judge forward/backward passes per step (exact) at all.
    """

    abs_tol: float = 0.02
    k: float = 2.0
    time: TimeTolerance = field(default_factory=TimeTolerance)
    check_time: bool = True
    memory_factor: float = 1.1
    memory_slack_bytes: float = 16 * 2**20
    check_memory: bool = True
    loss_rtol_same_platform: float = 1e-4
    loss_factor: float = 1.05
    loss_slack: float = 0.02
    check_loss: bool = True
    ratio_tol_time: float = 0.25
    ratio_tol_memory: float = 0.10
    check_ratios: bool = True
    check_passes: bool = True


# ---- checks --------------------------------------------------------------------------


@dataclass
class Check:
    """One figure of one trial: what it was, what it is, and the verdict with evidence.

    status: "ok", "regression", "improved" (better beyond the tolerance: not a failure),
    "changed" (differs beyond a same-platform tolerance in the harmless direction),
    "no baseline", "too few samples" or "skipped" (not comparable, with the reason).
    """

    figure: str
    status: str
    reference: Any = None
    current: Any = None
    change: str = ""
    evidence: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def sentence(self) -> str:
        text = f"{self.figure}: {self.change}" if self.change else self.figure
        return f"{text} ({self.evidence})" if self.evidence else text


@dataclass
class TrialComparison:
    key: str
    reference_id: str | None
    current_id: str | None
    outcome: str  # ok | regression | missing | new | fixed | still failed
    reasons: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    config_changes: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return self.outcome in ("regression", "missing")

    def check(self, figure: str) -> Check | None:
        return next((c for c in self.checks if c.figure == figure), None)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _rel(ref: float, cur: float) -> str:
    if ref == 0:
        return f"{cur - ref:+.4g}"
    return f"{100 * (cur - ref) / abs(ref):+.2f}%"


def check_score(ref: TrialRecord, cur: TrialRecord, tol: Tolerances) -> Check | None:
    """One seed against one seed: the difference's noise is both trials' lm-eval stderr."""
    r_score, c_score = _num(ref.score), cur.score
    if r_score is None:
        return None
    c_num = _num(c_score)
    if c_num is None or not math.isfinite(c_num):
        return Check("score", "regression", r_score, c_score, f"no score now ({c_score})")
    se_r, se_c = primary_stderr(ref), primary_stderr(cur)
    se = math.sqrt((se_r or 0.0) ** 2 + (se_c or 0.0) ** 2)
    threshold = max(tol.abs_tol, tol.k * se)
    drop = r_score - c_num
    source = "lm-eval stderr of both trials" if se_r is not None else "no stderr recorded"
    details = {"drop": drop, "threshold": threshold, "stderr": se, "stderr_source": source}
    status = "regression" if drop > threshold else "improved" if -drop > threshold else "ok"
    if same_platform(ref, cur) and status == "ok" and abs(drop) > 1e-9:
        # A fixed-seed run with greedy decoding scores the same on one platform.
        status = "regression" if drop > 0 else "changed"
        threshold = 0.0
    return Check(
        "score",
        status,
        r_score,
        c_num,
        f"{r_score:.3f} -> {c_num:.3f} (drop {drop:.3f})",
        f"tolerance max({tol.abs_tol:g}, {tol.k:g} x {se:.3f} stderr of the difference) "
        f"= {threshold:.3f}; {source}"
        if threshold
        else "same platform: a fixed-seed run repeats its score",
        details,
    )


def check_group_scores(
    key: str, refs: list[TrialRecord], curs: list[TrialRecord], tol: Tolerances
) -> Check | None:
    """Mean over seeds against mean over seeds: the noise is both means' standard error."""
    from bench.analysis.stats import mean_interval

    def scores(records: list[TrialRecord]) -> list[float]:
        return [s for r in records if r.ok and (s := _num(r.score)) is not None]

    a, b = scores(refs), scores(curs)
    if len(a) < 2 or len(b) < 2:
        return None
    ia, ib = mean_interval(a), mean_interval(b)
    assert ia is not None and ib is not None  # two or more scores each
    sem_a = math.sqrt(sum((x - ia.mean) ** 2 for x in a) / (len(a) - 1) / len(a))
    sem_b = math.sqrt(sum((x - ib.mean) ** 2 for x in b) / (len(b) - 1) / len(b))
    se = math.sqrt(sem_a**2 + sem_b**2)
    threshold = max(tol.abs_tol, tol.k * se)
    drop = ia.mean - ib.mean
    status = "regression" if drop > threshold else "improved" if -drop > threshold else "ok"
    return Check(
        "mean score",
        status,
        ia.mean,
        ib.mean,
        f"{ia.mean:.3f} -> {ib.mean:.3f} over {len(a)} / {len(b)} seeds (drop {drop:.3f})",
        f"tolerance max({tol.abs_tol:g}, {tol.k:g} x {se:.3f} SEM of the difference) "
        f"= {threshold:.3f}",
        {"drop": drop, "threshold": threshold, "sem": [sem_a, sem_b]},
    )


def check_passes(ref: TrialRecord, cur: TrialRecord) -> list[Check]:
    """Forward and backward passes per step: exact, machine-independent counts."""
    out: list[Check] = []
    r_steps, c_steps = ref.steps or 0, cur.steps or 0
    if not r_steps or not c_steps:
        return out
    for kind in ("forward", "backward"):
        r = _num((ref.passes or {}).get(kind))
        c = _num((cur.passes or {}).get(kind))
        if r is None or c is None:
            continue
        r_per, c_per = r / r_steps, c / c_steps
        status = "ok" if c_per == r_per else "regression" if c_per > r_per else "improved"
        out.append(
            Check(
                f"{kind} passes per step",
                status,
                r_per,
                c_per,
                f"{r_per:g} -> {c_per:g}" if status != "ok" else "",
                "exact count" if status != "ok" else "",
            )
        )
    return out


def _loss_check(
    figure: str, r: float, c: float, same: bool, tol: Tolerances, where: str = ""
) -> Check:
    if same:
        allowed = tol.loss_rtol_same_platform * max(abs(r), 1e-12)
        bound = f"same platform: |change| <= {tol.loss_rtol_same_platform:g} relative"
        up, down = c - r > allowed, r - c > allowed
        status = "regression" if up else "changed" if down else "ok"
    else:
        limit = tol.loss_factor * r + tol.loss_slack
        bound = (
            f"across platforms: <= {tol.loss_factor:g} x reference + {tol.loss_slack:g} "
            f"= {limit:.4f}"
        )
        status = "regression" if c > limit else "ok"
    change = f"{r:.4f} -> {c:.4f} ({_rel(r, c)}){where}"
    return Check(figure, status, r, c, change, bound, {"same_platform": same})


def check_losses(ref: TrialRecord, cur: TrialRecord, tol: Tolerances, same: bool) -> list[Check]:
    """Final training loss and every matching dev-curve point of a fixed-seed run."""
    out: list[Check] = []
    r_loss, c_loss = final_loss(ref), final_loss(cur)
    if r_loss is not None and c_loss is None:
        out.append(Check("final training loss", "regression", r_loss, None, "no curve now"))
    elif r_loss is not None and c_loss is not None:
        out.append(_loss_check("final training loss", r_loss, c_loss, same, tol))
    r_dev, c_dev = dev_curve(ref), dev_curve(cur)
    if r_dev and not c_dev:
        out.append(Check("dev loss", "regression", None, None, "no dev curve now"))
    common = sorted(set(r_dev) & set(c_dev))
    if common:
        worst: Check | None = None
        for step in common:
            check = _loss_check("dev loss", r_dev[step], c_dev[step], same, tol, f" at step {step}")
            if worst is None or _severity(check) > _severity(worst):
                worst = check
        if worst is not None:
            out.append(worst)
    return out


def _severity(check: Check) -> tuple[int, float]:
    rank = {"regression": 3, "changed": 2, "improved": 1}.get(check.status, 0)
    r, c = check.reference or 0.0, check.current or 0.0
    return rank, abs(c - r)


def check_ratios(ref: TrialRecord, cur: TrialRecord, tol: Tolerances) -> list[Check]:
    """The perf ratios this record is about (guarded_ratios), on the same device type."""
    out: list[Check] = []
    if ref.task != "perf":
        return out
    r_dev = ref.environment.get("device")
    c_dev = cur.environment.get("device")
    for name, kind in guarded_ratios(ref.method):
        r = _num(ref.metrics.get(name))
        c = _num(cur.metrics.get(name))
        if r is None:
            continue
        if c is None:
            out.append(Check(name, "regression", r, None, "not measured now"))
            continue
        if r_dev != c_dev:
            out.append(Check(name, "skipped", r, c, "", f"measured on {r_dev} vs {c_dev}"))
            continue
        if kind == "ops":  # exact counts: only between the same torch, then no tolerance
            versions = [(x.environment.get("packages") or {}).get("torch") for x in (ref, cur)]
            if versions[0] != versions[1]:
                out.append(
                    Check(name, "skipped", r, c, "", f"torch {versions[0]} vs {versions[1]}")
                )
                continue
        rtol = {"time": tol.ratio_tol_time, "ops": 0.0}.get(kind, tol.ratio_tol_memory)
        status = "regression" if c > r * (1 + rtol) else "improved" if c < r * (1 - rtol) else "ok"
        out.append(
            Check(
                name,
                status,
                r,
                c,
                f"{r:.3f} -> {c:.3f} ({_rel(r, c)})",
                f"tolerance {100 * rtol:g}% relative, measured in one process",
            )
        )
    return out


def check_memory(ref: TrialRecord, cur: TrialRecord, tol: Tolerances) -> Check | None:
    r, c = _num(ref.peak_memory_bytes), _num(cur.peak_memory_bytes)
    if r is None or c is None:
        return None
    kinds = ((ref.memory or {}).get("kind"), (cur.memory or {}).get("kind"))
    if kinds[0] != kinds[1]:
        return Check(
            "peak memory", "skipped", r, c, "", f"measured differently ({kinds[0]} vs {kinds[1]})"
        )
    limit = tol.memory_factor * r + tol.memory_slack_bytes
    status = "regression" if c > limit else "ok"
    ratio = f", x{c / r:.2f}" if r > tol.memory_slack_bytes else ""
    return Check(
        "peak memory",
        status,
        r,
        c,
        f"{fmt_mib(r)} -> {fmt_mib(c)}{ratio}",
        f"limit {tol.memory_factor:g} x reference + {fmt_mib(tol.memory_slack_bytes)}",
    )


def check_time(cur: TrialRecord, baseline: list[TrialRecord] | None, tol: Tolerances) -> Check:
    """Per-step times of this trial against the same trial in this machine's history."""
    if not baseline:
        return Check("step time", "no baseline", evidence="no earlier run of this machine")
    samples, runs, clock = paired_step_times(cur, baseline)  # one clock for all: like with like
    v = {**compare_times(samples, runs, tol.time), "clock": clock}
    if v["status"] in ("no baseline", "too few samples"):
        n = v.get("samples", [len(samples), 0])
        return Check("step time", v["status"], evidence=f"{n[0]} vs {n[1]} step-time samples")
    lo, hi = v["interval"]
    return Check(
        "step time",
        v["status"],
        v["baseline_stat"],
        v["current_stat"],
        f"p{100 * v['quantile']:.0f} {fmt_s(v['baseline_stat'], 4)} -> "
        f"{fmt_s(v['current_stat'], 4)} per step ({'CPU' if clock == 'cpu_seconds' else 'wall'}), "
        f"x{v['ratio']:.2f}",
        f"95% CI x{lo:.2f}-x{hi:.2f}, Mann-Whitney p={v['p_slower']:.2g} (slower); "
        f"{v['samples'][0]} vs {v['samples'][1]} windows, {v['baseline_runs']} history run(s); "
        f"slowest history run p{100 * v['quantile']:.0f} {fmt_s(v['slowest_run_stat'], 4)}; "
        f"flagged when p < {tol.time.alpha:g}, the CI lies above x{tol.time.factor:g} and "
        f"the step exceeds x{tol.time.factor:g} the slowest history run",
        v,
    )


def compare_trial(
    key: str,
    ref: TrialRecord,
    cur: TrialRecord,
    tol: Tolerances,
    baseline: list[TrialRecord] | None = None,
) -> TrialComparison:
    c = TrialComparison(key, ref.trial_id, cur.trial_id, "ok")
    if ref.trial_id != cur.trial_id:
        c.config_changes = config_differences(ref, cur)
    ref_ok, cur_ok = ref.ok, cur.ok
    if not ref_ok:
        c.outcome = "fixed" if cur_ok else "still failed"
        if not cur_ok:
            c.reasons.append(f"failed in both: {_first_line(cur.error)}")
        return c
    if not cur_ok:
        c.outcome = "regression"
        c.reasons.append(f"failed now: {_first_line(cur.error)}")
        return c

    same = same_platform(ref, cur)
    checks: list[Check | None] = [check_score(ref, cur, tol)]
    if tol.check_passes:
        checks += check_passes(ref, cur)
    if tol.check_loss:
        checks += check_losses(ref, cur, tol, same)
    if tol.check_ratios:
        checks += check_ratios(ref, cur, tol)
    if tol.check_memory:
        checks.append(check_memory(ref, cur, tol))
    if tol.check_time and (cur.steps or step_times(cur)):
        checks.append(check_time(cur, baseline, tol))
    c.checks = [x for x in checks if x is not None]
    c.reasons = [x.sentence() for x in c.checks if x.status == "regression"]
    if c.reasons:
        c.outcome = "regression"
    return c


def final_loss(record: TrialRecord) -> float | None:
    """The last point of the loss curve; None without one, NaN/inf count as +inf."""
    curve = record.curve
    if not curve:
        return None
    loss = curve[-1].get("loss")
    return float(loss) if isinstance(loss, int | float) and math.isfinite(loss) else math.inf


def dev_curve(record: TrialRecord) -> dict[int, float]:
    """step -> dev loss of the record's ``eval_curve`` (points with ``dev_loss``); a
    non-finite dev loss counts as +inf."""
    out = {}
    for point in record.eval_curve:
        if not isinstance(point, dict) or "dev_loss" not in point:
            continue
        loss = _num(point.get("dev_loss"))
        out[int(point.get("step", 0))] = (
            loss if loss is not None and math.isfinite(loss) else math.inf
        )
    return out


def _first_line(text: Any) -> str:
    return str(text or "no error recorded").strip().splitlines()[0][:160]
