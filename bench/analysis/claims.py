"""The Hi-ZFO paper's three claims, tested on a run by pre-registered, symmetric rules.

The rules are written down in docs/claims.md before any data; `hizfo-bench calibrate`
(bench/analysis/calibrate.py) runs this same code on simulated runs with known truth and
measures how often each verdict is wrong. In short:

1. accuracy: Hi-ZFO's test score minus the reference's (fo-adamw), per task, by the
   two-level interval over seeds and documents (stats.seed_interval: the seed is the
   unit, t with S - 1 degrees of freedom).
2. time: the time-to-target speed-up (reference time / Hi-ZFO time, train clock + setup,
   geometric mean over seeds, a trial that did not reach the target at the budget: bench/analysis/targets.py); a run
   without targets compares train-clock time for the same steps.
3. stochasticity: Hi-ZFO against its ``zo-off`` twin. First the ZO dose, one primary
   statistic declared before data: the dev-loss difference at the last evaluation point,
   paired by seed (95% t-interval, with the gate's power for the declared dose). If its
   interval contains 0, the claim is "not testable at this configuration"; a ZO rate
   below ZO_LR_OFF is "ZO part off at this rate", left out of the overall verdict.
   Otherwise two parts, each with its own verdict: flatness (random-direction sharpness,
   seed-paired t-interval) and score (as claim 1); combined symmetrically. Every
   ``hizfo[zo-lr...]`` variant of the run is a point of the dose-response, judged the
   same way, beside the verdict.

Every interval is two-sided 95%, so under no effect each of "supported" and
"contradicted" has at most a 2.5% chance per task. A task is:
- supported / contradicted: the interval lies entirely on the claimed / the other side;
- inconclusive: it contains no effect;
- no verdict (one seed): with one seed nothing measures the seed-to-seed variance, so no
  interval can stand for the claim's (the numbers are shown, the verdict is withheld).
Across tasks the claim is supported (contradicted) only when every task is, "mixed" when
some tasks support it and others contradict it, inconclusive otherwise. Each verdict
comes with the prospective power for the claim's declared smallest effect of interest
(EFFECTS) from the run's variance components.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.analysis.stats import (
    Components,
    Interval,
    components,
    geometric_interval,
    mean_interval,
    paired_bootstrap,
    power,
    seed_interval,
    seeds_for_power,
)
from bench.analysis.targets import paired_times
from bench.record import TrialRecord
from bench.registry import reference_method, split_variant, traits_of

SUPPORTED, CONTRADICTED, INCONCLUSIVE, MIXED = "supported", "contradicted", "inconclusive", "mixed"
NOT_MEASURED = "not measured"
ONE_SEED = "no verdict (one seed)"
NOT_TESTABLE = "not testable at this configuration"
ZO_OFF = "ZO part off at this rate"

# The smallest effect of interest per claim, declared before data (docs/claims.md):
# score differences in score units (0..1), time as log of the speed-up, sharpness as a
# fraction of the ablation's mean sharpness.
EFFECTS = {
    "accuracy": 0.02,
    "time": math.log(1.1),
    "score": 0.02,
    "sharpness": 0.10,
    "dose": 0.01,
}
POWER = 0.8
# Claim 3: a ZO rate below this is the ZO part off in effect, by choice (docs/claims.md):
# on SmolLM2-135M MeZO's 16-step dev-loss drop grows with its rate, 0.0045 at 1.63e-6
# (claims-tune), so at 1e-7 it would be about 0.0003, far below the declared dose.
ZO_LR_OFF = 1.0e-7

Outcomes = Mapping[str, Mapping[int, float]]  # trial_id -> doc_id -> per-document score


def doc_outcomes(run_dir: Path) -> dict[str, dict[int, float]]:
    """Per-document primary-metric values of every trial with a samples file."""
    out: dict[str, dict[int, float]] = {}
    folder = Path(run_dir) / "samples"
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        docs = {}
        for line in path.read_text().splitlines():
            if line.strip():
                s = json.loads(line)
                if isinstance(s.get("score"), int | float):
                    docs[int(s["doc_id"])] = float(s["score"])
        out[path.stem] = docs
    return out


@dataclass
class Comparison:
    """`method` minus `reference` on one task and model, with its interval and unit."""

    method: str
    reference: str
    task: str
    model: str
    interval: Interval | None  # of the difference (score units 0..1, or as stated)
    unit: str  # what the interval is over, with counts, e.g. "3 seeds x 30 documents"
    seeds: int = 0
    documents: int = 1
    comps: Components | None = None  # variance components (None with one seed)
    note: str = ""

    @property
    def direction(self) -> int:
        """+1 / -1 when the interval excludes 0 on that side, 0 otherwise."""
        iv = self.interval
        if iv is None or iv.lo is None or iv.hi is None:
            return 0
        return 1 if iv.lo > 0 else -1 if iv.hi < 0 else 0


def _ok(records: Sequence[TrialRecord], method: str, task: str, model: str) -> dict:
    return {
        r.seed: r
        for r in records
        if r.ok and r.method == method and r.task == task and r.model == model
    }


def score_difference(
    records: Sequence[TrialRecord],
    outcomes: Outcomes,
    method: str,
    reference: str,
    task: str,
    model: str,
) -> Comparison:
    """Test score of `method` minus `reference`, paired by seed and document.

    Two or more seeds: stats.seed_interval over the seeds x documents differences. One
    seed: a paired bootstrap over documents, labelled as not including seed variance
    (verdicts treat it as no verdict)."""
    import numpy as np

    mine, ref = _ok(records, method, task, model), _ok(records, reference, task, model)
    seeds = sorted(set(mine) & set(ref))
    found = [(outcomes.get(mine[s].trial_id), outcomes.get(ref[s].trial_id)) for s in seeds]
    pairs = [(a, b) for a, b in found if a and b]
    if not pairs:
        return Comparison(method, reference, task, model, None, "-", note="no paired samples")
    docs = sorted(set.intersection(*[set(a) & set(b) for a, b in pairs]))
    if not docs:
        return Comparison(method, reference, task, model, None, "-", note="no shared documents")
    d = np.array([[a[k] - b[k] for k in docs] for a, b in pairs])
    n_seed, n_doc = d.shape
    if n_seed == 1:
        return Comparison(
            method,
            reference,
            task,
            model,
            paired_bootstrap(d[0].tolist()),
            f"{n_doc} documents of 1 seed (bootstrap; cannot include seed variance)",
            1,
            n_doc,
        )
    return Comparison(
        method,
        reference,
        task,
        model,
        seed_interval(d),
        f"{n_seed} seeds x {n_doc} documents (t over seeds, {n_seed - 1} df)",
        n_seed,
        n_doc,
        components(d),
    )


def seed_difference(
    records: Sequence[TrialRecord],
    method: str,
    reference: str,
    task: str,
    model: str,
    value: Any,
    what: str = "",
) -> Comparison:
    """t-interval over seeds of value(method record) - value(reference record)."""
    import numpy as np

    mine, ref = _ok(records, method, task, model), _ok(records, reference, task, model)
    diffs = []
    for s in sorted(set(mine) & set(ref)):
        a, b = value(mine[s]), value(ref[s])
        if a is not None and b is not None:
            diffs.append(a - b)
    n = len(diffs)
    return Comparison(
        method,
        reference,
        task,
        model,
        mean_interval(diffs),
        f"{n} seed{'s' if n != 1 else ''} (t, {max(n - 1, 0)} df){what}",
        n,
        1,
        components(np.array(diffs)[:, None]) if n >= 2 else None,
    )


def random_direction_sharpness(record: TrialRecord) -> float | None:
    s = record.sharpness or {}
    return (s.get("random_direction") or {}).get("mean_rise")


def top_eigenvalue(record: TrialRecord) -> float | None:
    s = record.sharpness or {}
    return (s.get("hessian") or {}).get("top_eigenvalue")


@dataclass
class TaskVerdict:
    task: str
    model: str
    verdict: str
    evidence: list[str]
    comparisons: list[Comparison] = field(default_factory=list)
    power: str = ""  # prospective power for the declared effect
    parts: dict[str, str] = field(default_factory=dict)  # claim 3: flatness, score
    dose: list[str] = field(default_factory=list)  # claim 3: the ZO dose, stated first


@dataclass
class ClaimVerdict:
    key: str
    statement: str
    measurement: str
    verdict: str
    tasks: list[TaskVerdict] = field(default_factory=list)
    note: str = ""
    sweep: list[Any] = field(default_factory=list)  # claim 3: DosePoints by ZO rate


def decide(c: Comparison, sign: int = 1) -> str:
    """A comparison's verdict: `sign` +1 when the claim is "method - reference > 0"."""
    if c.interval is None:
        return NOT_MEASURED
    if c.seeds < 2:
        return ONE_SEED
    return {1: SUPPORTED, -1: CONTRADICTED, 0: INCONCLUSIVE}[sign * c.direction]


def combine(verdicts: Sequence[str]) -> str:
    """A claim over several tasks: supported / contradicted only when every task is,
    mixed when some are supported and some contradicted, inconclusive otherwise."""
    if verdicts and all(v == ZO_OFF for v in verdicts):
        return ZO_OFF
    verdicts = [v for v in verdicts if v != ZO_OFF]  # off by choice: left out
    measured = [v for v in verdicts if v not in (NOT_MEASURED, NOT_TESTABLE)]
    if not measured:
        return NOT_TESTABLE if NOT_TESTABLE in verdicts else NOT_MEASURED
    if SUPPORTED in measured and CONTRADICTED in measured:
        return MIXED
    if len(measured) == len(verdicts):
        for v in (SUPPORTED, CONTRADICTED, ONE_SEED):
            if all(m == v for m in measured):
                return v
    return INCONCLUSIVE


def combine_parts(flatness: str, score: str) -> str:
    """Claim 3's two parts: supported when both are, contradicted when both are, mixed
    when one is supported and the other contradicted, inconclusive otherwise (symmetric:
    a false verdict needs both parts wrong the same way)."""
    if flatness == score and flatness in (SUPPORTED, CONTRADICTED, ONE_SEED, NOT_MEASURED):
        return flatness
    if {flatness, score} == {SUPPORTED, CONTRADICTED}:
        return MIXED
    if NOT_MEASURED in (flatness, score):
        return NOT_MEASURED
    return INCONCLUSIVE


def _fmt(
    iv: Interval | None, scale: float = 1.0, digits: int = 1, unit: str = "", kind: str = "f"
) -> str:
    """ "+1.2 [-0.3, +2.7]"; kind "e" for quantities far below 1 (sharpness rises)."""
    if iv is None:
        return "n/a"
    text = f"{iv.mean * scale:+.{digits}{kind}}{unit}"
    if iv.lo is not None and iv.hi is not None:
        text += f" [{iv.lo * scale:+.{digits}{kind}}, {iv.hi * scale:+.{digits}{kind}}]"
    return text


def power_note(c: Comparison, effect: float, what: str) -> str:
    """How many seeds give 80% power for `effect` (prospective, from the run's variance
    components); says so when the run cannot tell."""
    if c.comps is None:
        return (
            f"power for {what}: the run cannot say (one seed measures no seed variance); "
            "run 3 or more seeds"
        )
    if c.comps.variance(max(c.seeds, 2), c.documents) <= 0:
        return (
            f"power for {what}: the run cannot say (every paired difference is the same, "
            "so it shows no variance to plan from)"
        )
    docs = c.documents
    n = seeds_for_power(effect, c.comps, docs, POWER)
    where = f" at {docs} documents" if docs > 1 else ""
    if n is None:
        more = seeds_for_power(effect, c.comps, 4 * docs, POWER) if docs > 1 else None
        tail = f"; at {4 * docs} documents: {more} seeds" if more else ""
        return f"power for {what}: not within 200 seeds{where}{tail}"
    return f"{POWER:.0%} power for {what} needs {n} seeds{where} (this run: {c.seeds})"


def _cells(records: Sequence[TrialRecord], method: str, reference: str) -> list[tuple]:
    cells = {(r.task, r.model) for r in records if r.method == method}
    cells &= {(r.task, r.model) for r in records if r.method == reference}
    return sorted(cells)


def _verdict(
    key: str, statement: str, measurement: str, tasks: list[TaskVerdict], **extra: Any
) -> ClaimVerdict:
    """A claim's verdict over its per-(task, model) verdicts (combine; not measured when
    the run has no cell to judge)."""
    overall = combine([t.verdict for t in tasks]) if tasks else NOT_MEASURED
    return ClaimVerdict(key, statement, measurement, overall, tasks, **extra)


_Judged = TypeVar("_Judged")


def _per_cell(
    records: Sequence[TrialRecord],
    method: str,
    other: str,
    judge: Callable[[str, str], _Judged],
) -> list[_Judged]:
    """`judge(task, model)` on every (task, model) both `method` and `other` ran."""
    return [judge(task, model) for task, model in _cells(records, method, other)]


def claim_accuracy(
    records: Sequence[TrialRecord],
    outcomes: Outcomes,
    method: str,
    reference: str,
    effects: Mapping[str, float] = EFFECTS,
) -> ClaimVerdict:
    effect = effects["accuracy"]

    def judge(task: str, model: str) -> TaskVerdict:
        c = score_difference(records, outcomes, method, reference, task, model)
        if c.interval is None:
            return TaskVerdict(task, model, NOT_MEASURED, [c.note])
        evidence = [f"score difference x100: {_fmt(c.interval, 100)} over {c.unit}"]
        what = f"a difference of {100 * effect:g} points"
        return TaskVerdict(task, model, decide(c), evidence, [c], power_note(c, effect, what))

    return _verdict(
        "accuracy",
        f"{method} scores higher than first-order fine-tuning ({reference}).",
        f"test score of {method} minus {reference}, paired by seed and document; 95% "
        "interval over seeds (t with S - 1 df, seed and document variance).",
        _per_cell(records, method, reference, judge),
    )


def _log_train_seconds(r: TrialRecord) -> float | None:
    return math.log(r.train_seconds) if r.train_seconds else None


def _time_to_target_verdict(
    m_ttt: dict[int, Any],
    r_ttt: dict[int, Any],
    method: str,
    reference: str,
    task: str,
    model: str,
    effect: float,
) -> TaskVerdict:
    """Claim 2 on one (task, model) with targets: the paired time-to-target speed-up."""
    import numpy as np

    pairs = paired_times(m_ttt, r_ttt)
    n = len(pairs.logs)
    any_ttt = next(iter(r_ttt.values()))
    budget = any_ttt.get("budget")
    target = any_ttt.get("target", "?")
    c = Comparison(
        method,
        reference,
        task,
        model,
        mean_interval(pairs.logs),
        f"{n} seed{'s' if n != 1 else ''} (t over log ratios, {max(n - 1, 0)} df)",
        n,
        1,
        components(np.array(pairs.logs)[:, None]) if n >= 2 else None,
    )
    if c.interval is None:
        verdict = NOT_MEASURED
        evidence = [f"neither method reached the target ({target}) on any paired seed"]
    else:
        verdict = decide(c)
        g = geometric_interval(pairs.logs)
        assert g is not None  # c.interval is set: the paired seeds have times
        evidence = [
            f"speed-up to the target ({target}"
            + (f", budget {budget:.0f} s" if budget else "")
            + f"): {g.mean:.2f}x"
            + (f" [{g.lo:.2f}, {g.hi:.2f}]" if g.lo is not None else "")
            + f", geometric mean over {c.unit}; {pairs.describe()}"
        ]
    if not any_ttt.get("fixed_in_advance", False):
        evidence.append(
            f"the target is {reference}'s final dev value in this same run, not fixed "
            "in advance (give the target seeds for a target-setting stage)"
        )
    what = f"a {math.exp(effect) - 1:.0%} speed-up"
    return TaskVerdict(task, model, verdict, evidence, [c], power_note(c, effect, what))


def _train_time_verdict(
    records: Sequence[TrialRecord],
    method: str,
    reference: str,
    task: str,
    model: str,
    effect: float,
) -> TaskVerdict:
    """Claim 2 on one (task, model) without targets: train-clock time for the same number
    of steps (log ratio)."""
    c = seed_difference(
        records, method, reference, task, model, _log_train_seconds, ", log train seconds"
    )
    if c.interval is None:
        return TaskVerdict(task, model, NOT_MEASURED, ["no paired train times"])
    ratio = Interval(
        math.exp(c.interval.mean),
        None if c.interval.lo is None else math.exp(c.interval.lo),
        None if c.interval.hi is None else math.exp(c.interval.hi),
        c.interval.n,
    )
    evidence = [
        f"no dev target: train time ratio {method}/{reference} for the same steps "
        f"{ratio.mean:.2f}x"
        + (f" [{ratio.lo:.2f}, {ratio.hi:.2f}]" if ratio.lo is not None else "")
        + f" over {c.unit}"
    ]
    what = f"a {math.exp(effect) - 1:.0%} speed-up"
    return TaskVerdict(task, model, decide(c, sign=-1), evidence, [c], power_note(c, effect, what))


def claim_time(
    records: Sequence[TrialRecord],
    method: str,
    reference: str,
    effects: Mapping[str, float] = EFFECTS,
) -> ClaimVerdict:
    effect = effects["time"]

    def judge(task: str, model: str) -> TaskVerdict:
        mine, ref = _ok(records, method, task, model), _ok(records, reference, task, model)
        m_ttt = {s: r.time_to_target for s, r in mine.items() if r.time_to_target}
        r_ttt = {s: r.time_to_target for s, r in ref.items() if r.time_to_target}
        if m_ttt and r_ttt:
            return _time_to_target_verdict(m_ttt, r_ttt, method, reference, task, model, effect)
        return _train_time_verdict(records, method, reference, task, model, effect)

    return _verdict(
        "time",
        f"{method} needs less training time than {reference}.",
        "time to the dev target on the train clock plus setup (AlgoPerf: target fixed in "
        "advance, one budget for every method, a trial that did not reach it entering at the "
        "budget); speed-up = "
        "reference / method, geometric mean over seeds with a t-interval of the log ratios; "
        "without targets, the train-time ratio for equal steps.",
        _per_cell(records, method, reference, judge),
    )


def zo_rate(records: Sequence[TrialRecord], method: str, task: str, model: str) -> float | None:
    """The ZO learning rate `method`'s trials ran with on (task, model), if they name one."""
    for r in _ok(records, method, task, model).values():
        rate = (r.config.get("method_config") or {}).get("zo_lr")
        if isinstance(rate, int | float) and not isinstance(rate, bool):
            return float(rate)
    return None


@dataclass
class Dose:
    """The gate of claim 3: did the ZO part change the dev loss? The primary statistic,
    declared before data (docs/claims.md): `method`'s dev loss minus its zo-off twin's at
    the last evaluation point both reached, paired by seed, 95% t-interval over seeds."""

    changed: bool | None  # None: the run cannot tell (one seed, no points)
    comparison: Comparison | None
    step: int | None
    zo_lr: float | None
    power: float | None  # of the gate for the declared dose at this run's seeds and sd
    lines: list[str] = field(default_factory=list)

    @property
    def off(self) -> bool:
        """The ZO part is off in effect by choice: its rate is below ZO_LR_OFF."""
        return self.zo_lr is not None and self.zo_lr < ZO_LR_OFF


def zo_dose(
    records: Sequence[TrialRecord],
    method: str,
    ablation: str,
    task: str,
    model: str,
    effects: Mapping[str, float] = EFFECTS,
) -> Dose:
    """The ZO dose of `method` against `ablation` on (task, model): the primary statistic
    (final-point dev-loss difference) with its interval and the gate's power for the
    declared dose (EFFECTS["dose"]); the other points are shown, never tested."""
    mine, abl = _ok(records, method, task, model), _ok(records, ablation, task, model)
    seeds = sorted(s for s in set(mine) & set(abl) if mine[s].eval_curve)
    rate = zo_rate(records, method, task, model)
    lines = [] if rate is None else [f"zo_lr {rate:.3g}" if rate >= 1e-3 else f"zo_lr {rate:.2e}"]
    gains = []
    for s in seeds:
        extra = mine[s].step_extra or {}
        zo, fo = extra.get("zo_gain"), extra.get("fo_gain")
        if zo and fo:
            zo_sum = sum(x for x in zo if isinstance(x, int | float))
            fo_sum = sum(x for x in fo if isinstance(x, int | float))
            if fo_sum:
                gains.append(zo_sum / fo_sum)
    if gains:
        lines.append(
            f"first-order gain of the ZO update / the FO update's, summed over steps: "
            f"{', '.join(f'{g:.2g}' for g in gains)} (per seed)"
        )
    if not seeds:
        lines.append(f"no evaluation points on both {method} and {ablation}")
        return Dose(None, None, None, rate, None, lines)
    by_step: dict[int, dict[int, float]] = {}
    for s in seeds:
        a = {p["step"]: p.get("dev_loss") for p in mine[s].eval_curve}
        b = {p["step"]: p.get("dev_loss") for p in abl[s].eval_curve}
        for step in sorted(set(a) & set(b)):
            if step > 0 and a[step] is not None and b[step] is not None:
                by_step.setdefault(step, {})[s] = a[step] - b[step]
    # The primary statistic: the last point every paired seed reached.
    common = [st for st, d in by_step.items() if len(d) == len(seeds)]
    if not common:
        lines.append(f"no evaluation point after step 0 shared by every seed of {method}")
        return Dose(None, None, None, rate, None, lines)
    last = max(common)
    c = seed_difference(
        records,
        method,
        ablation,
        task,
        model,
        lambda r: next((p.get("dev_loss") for p in r.eval_curve if p["step"] == last), None),
        f", dev loss at step {last}",
    )
    dose = effects["dose"]
    gate_power = power(dose, c.comps, c.seeds) if c.comps is not None else None
    others = [
        f"step {st}: {_fmt(mean_interval(list(d.values())), digits=4)}"
        for st, d in sorted(by_step.items())
        if st != last
    ]
    text = (
        f"dose (dev loss of {method} minus {ablation} at step {last}, the primary "
        f"statistic): {_fmt(c.interval, digits=4)} over {c.unit}"
    )
    if gate_power is not None:
        need = seeds_for_power(dose, c.comps) if c.comps and c.comps.seed > 0 else 2
        text += (
            f"; the gate's power for a dose of {dose:g}: {gate_power:.0%} at {c.seeds} seeds"
            + (f" ({POWER:.0%} power needs {need} seeds)" if need else "")
        )
    lines.append(text)
    if others:
        lines.append("earlier points, shown, not tested: " + "; ".join(others))
    if c.seeds < 2:
        lines.append("one seed: the run cannot tell the ZO part's effect from noise")
        return Dose(None, c, last, rate, None, lines)
    return Dose(c.direction != 0, c, last, rate, gate_power, lines)


def _stochasticity_task(
    records: Sequence[TrialRecord],
    outcomes: Outcomes,
    method: str,
    ablation: str,
    task: str,
    model: str,
    effects: Mapping[str, float],
) -> TaskVerdict:
    """Claim 3 for one (method, task, model): the dose gate, then flatness and score."""
    d = zo_dose(records, method, ablation, task, model, effects)
    dose = list(d.lines)
    if d.off:
        dose.append(
            f"the ZO rate {d.zo_lr:.2e} is below {ZO_LR_OFF:g}, the declared rate at which "
            "the ZO part is off in effect: left out of the overall verdict"
        )
        return TaskVerdict(task, model, ZO_OFF, [], [], "", dose=dose)
    if d.changed is False:
        dose.append(
            "the ZO part did not change the dev loss beyond seed noise: the claim cannot be "
            "tested at this configuration"
        )
        return TaskVerdict(task, model, NOT_TESTABLE, [], [], "", dose=dose)
    if d.changed is True:
        dose.append("the ZO part changed the dev loss beyond seed noise")
    sharp = seed_difference(
        records, method, ablation, task, model, random_direction_sharpness, ", sharpness"
    )
    eig = seed_difference(records, method, ablation, task, model, top_eigenvalue)
    score = score_difference(records, outcomes, method, ablation, task, model)
    flat_v = decide(sharp, sign=-1)
    score_v = decide(score)
    evidence = [
        f"flatness: {flat_v}: random-direction sharpness, {method} minus {ablation}: "
        f"{_fmt(sharp.interval, digits=2, kind='e')} over {sharp.unit} (negative = flatter "
        "with ZO on)",
        f"top Hessian eigenvalue, {method} minus {ablation}: "
        + (f"{_fmt(eig.interval, digits=3)} over {eig.unit}" if eig.interval else "not measured"),
        f"score: {score_v}: score difference x100, {method} minus {ablation}: "
        f"{_fmt(score.interval, 100)} over {score.unit}",
    ]
    measured = [random_direction_sharpness(r) for r in _ok(records, ablation, task, model).values()]
    abl_sharp = [x for x in measured if x is not None]
    notes = [power_note(score, effects["score"], f"{100 * effects['score']:g} points")]
    if abl_sharp:
        eff = effects["sharpness"] * abs(sum(abl_sharp) / len(abl_sharp))
        notes.append(
            power_note(sharp, eff, f"{effects['sharpness']:.0%} of {ablation}'s sharpness")
        )
    return TaskVerdict(
        task,
        model,
        combine_parts(flat_v, score_v),
        evidence,
        [sharp, eig, score],
        "; ".join(notes),
        {"flatness": flat_v, "score": score_v},
        dose,
    )


@dataclass
class DosePoint:
    """One point of the dose-response: a variant's ZO rate, its dose and claim 3 there."""

    method: str
    zo_lr: float | None
    dose: Dose
    verdict: TaskVerdict
    sharpness: Comparison | None = None  # on - off at every rate, shown even when not judged
    score: Comparison | None = None


def dose_response(
    records: Sequence[TrialRecord],
    outcomes: Outcomes,
    method: str,
    ablation: str,
    task: str,
    model: str,
    effects: Mapping[str, float] = EFFECTS,
) -> list[DosePoint]:
    """`method` and every ``method[zo-lr...]`` variant of the run against the same
    ablation, by ZO rate: each one's dose and claim 3's verdict at that rate. The claim's
    verdict is `method`'s at the suite's settings; the other rates are evidence beside it."""
    names = [method] + sorted({r.method for r in records if r.method.startswith(f"{method}[zo-lr")})
    out = []
    for name in names:
        if not _ok(records, name, task, model):
            continue
        d = zo_dose(records, name, ablation, task, model, effects)
        v = _stochasticity_task(records, outcomes, name, ablation, task, model, effects)
        sharp = seed_difference(records, name, ablation, task, model, random_direction_sharpness)
        score = score_difference(records, outcomes, name, ablation, task, model)
        out.append(DosePoint(name, d.zo_lr, d, v, sharp, score))
    return sorted(out, key=lambda p: (p.zo_lr is None, p.zo_lr or 0.0))


def claim_stochasticity(
    records: Sequence[TrialRecord],
    outcomes: Outcomes,
    method: str,
    ablation: str,
    effects: Mapping[str, float] = EFFECTS,
) -> ClaimVerdict:
    sweep: list[DosePoint] = []

    def judge(task: str, model: str) -> list[TaskVerdict]:
        points = dose_response(records, outcomes, method, ablation, task, model, effects)
        if len(points) > 1:
            sweep.extend(points)
        return [p.verdict for p in points if p.method == method]

    tasks = [t for cell in _per_cell(records, method, ablation, judge) for t in cell]
    return _verdict(
        "stochasticity",
        f"{method}'s ZO part is beneficial stochasticity: against the same FO set with ZO "
        f"off ({ablation}) it reaches flatter solutions and scores higher.",
        "first the ZO dose (dev loss with ZO on minus off at the last evaluation point, "
        "paired by seed, 95% t-interval: the gate); where it moved, two parts: flatness "
        "(random-direction sharpness, seed-paired 95% t-interval) and score (as claim 1), "
        "combined: supported / contradicted only when both parts are.",
        tasks,
        note="" if tasks else f"the run has no {ablation} rows beside {method}",
        sweep=sweep,
    )


def fo_sizes(records: Sequence[TrialRecord], method: str) -> dict[str, float]:
    """Each ``method[...]`` variant's FO parameters relative to `method`'s (mean over its
    trials, per task and model, then over cells): which ablations are the same size."""
    import statistics

    def mean_fo(name: str, task: str, model: str) -> float | None:
        counts = [
            r.method_summary.get("fo_parameters") for r in _ok(records, name, task, model).values()
        ]
        counts = [c for c in counts if isinstance(c, int | float) and c > 0]
        return statistics.fmean(counts) if counts else None

    variants = sorted({r.method for r in records if r.method.startswith(f"{method}[")})
    out = {}
    for v in variants:
        ratios = []
        for task, model in _cells(records, v, method):
            a, b = mean_fo(v, task, model), mean_fo(method, task, model)
            if a is not None and b:
                ratios.append(a / b)
        if ratios:
            out[v] = statistics.fmean(ratios)
    return out


def final_records(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The final trials (no tuning or target-setting trials)."""
    return [r for r in records if r.config.get("phase", "final") == "final"]


def hybrid_of(methods: Iterable[str]) -> str | None:
    """The label among `methods` whose method declares itself the hybrid the claims are
    about (MethodTraits.is_hybrid: Hi-ZFO's plain row, not a variant of it), or None."""
    found = sorted(
        m for m in set(methods) if split_variant(m)[1] is None and traits_of(m).is_hybrid
    )
    return found[0] if found else None


def zo_off_twin(method: str) -> str:
    """The label of `method` with its ZO part off, claim 3's ablation: the variant the
    method declares (MethodTraits.zo_off_variant), else ``<method>[zo-off]``."""
    return f"{method}[{traits_of(method).zo_off_variant or 'zo-off'}]"


def evaluate_claims(
    records: Sequence[TrialRecord],
    outcomes: Outcomes,
    *,
    method: str | None = None,
    reference: str | None = None,
    ablation: str | None = None,
    effects: Mapping[str, float] = EFFECTS,
) -> list[ClaimVerdict]:
    """All three claims on the final trials of a run: `method` (default: the run's
    hybrid, hybrid_of) against `reference` (default: the method that declares itself the
    reference) and against `ablation` (default: zo_off_twin). ValueError when the run has
    neither."""
    labels = {r.method for r in records}
    method = method or hybrid_of(labels)
    reference = reference or reference_method(labels)
    if method is None or reference is None:
        raise ValueError("the claims need a hybrid method and a reference method in the run")
    ablation = ablation or zo_off_twin(method)
    finals = final_records(records)
    return [
        claim_accuracy(finals, outcomes, method, reference, effects),
        claim_time(finals, method, reference, effects),
        claim_stochasticity(finals, outcomes, method, ablation, effects),
    ]
