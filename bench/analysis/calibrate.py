"""A proof by simulation: how often the verdicts are wrong when the truth is known.

`hizfo-bench calibrate` builds simulated runs with a planted truth and judges each one
through the path `hizfo-bench report` takes: every replicate is written as a run
directory (trials/<trial_id>.json, samples/<trial_id>.jsonl, targets.json), and the
report layer's reader (bench/report/claims.verdicts_of_run: store.read_trials, the final
trials, stats.split_settings, claims.doc_outcomes, claims.evaluate_claims, combine,
render) reads it back, so what is calibrated is what a user gets. This module simulates
and counts; the reader is passed in (`evaluate`), since the report layer sits above it.

The simulated run, per replicate (a fresh draw of everything), on two tasks ("sim-a" and
"sim-b", the two tasks of the claims suite), per task:

- test documents: difficulty b_d ~ N(0, 1.5) on the logit scale; a method x document
  interaction N(0, 0.25) per method (real on this test set, zero over documents);
- a trained model per (method, seed): a logit shift u ~ N(0, seed_sd) plus the method's
  planted effect; binary scores ~ Bernoulli(sigmoid(b_d + interaction + u + effect)),
  continuous scores sigmoid(b_d + interaction + u + effect + N(0, 0.5));
- dev-loss curves at evaluation points: L = 1 + 1.5 exp(-rate x step), rate ~ 0.1
  exp(N(0, 0.15)) per (method, seed), point noise N(0, 0.01); step times with the noise
  of real trial files: a per-trial factor exp(N(0, trial_sd)) and a per-interval factor
  exp(N(0, interval_sd)) (STEP_NOISE, measured from the claims-zo run; `step_noise`
  measures any run's); the target (fixed in advance) is the reference's expected loss at
  40% of the steps, the budget the whole run's expected time; a planted time effect
  multiplies Hi-ZFO's rate and its step speed ("2x faster": the target in half the
  steps, "2x slower"), "never" lifts its floor above the target, and `early_stop`
  ends its trial at that fraction of the steps (before the budget runs out);
- the zo-off twin: Hi-ZFO's curve minus the ZO dose (Hi-ZFO lower by `dose` x progress)
  plus N(0, DOSE_SD) per point (DOSE_SD: the per-seed sd of the final-point difference
  measured on math-mini, 0.0093, so a dose of k sd is k x DOSE_SD); sharpness 0.01
  exp(N(0, 0.2)) per (method, seed), Hi-ZFO's times exp(-flat);
- `zo_off_b`: task sim-b's ZO rate below ZO_LR_OFF (the claims suite's docstring-summary
  tuned to off), so its row reads "ZO part off at this rate" and the overall verdict is
  sim-a's.

Settings cover no effect (seed sd 0 / 0.5 / 1.0, binary and continuous scores, 3 and 5
seeds), and the power of each planted effect: 2x faster, 2x slower, never reaching with
an early stop and twice the step speed, +1 logit, a ZO dose of 1 / 3 / 5 sd without and
with a flatness and score effect, either way. Each rate, per task and overall, comes with
its 95% Clopper-Pearson interval (the Monte Carlo error); a false-verdict rate passes when
that interval reaches down to the nominal 2.5%.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import store
from bench.analysis.claims import CONTRADICTED, NOT_TESTABLE, SUPPORTED, ZO_LR_OFF, ZO_OFF
from bench.analysis.targets import Target, annotate
from bench.record import TrialRecord

METHOD, REFERENCE, ABLATION = "hizfo", "fo-adamw", "hizfo[zo-off]"
TASKS, MODEL = ("sim-a", "sim-b"), "sim-model"
OVERALL = "overall"
NOMINAL = 0.025  # the per-side false-verdict rate the rules are built for
CLAIMS = ("accuracy", "time", "stochasticity")
STEPS, EVAL_EVERY = 16, 2
ZO_LR = 1.0e-4  # the simulated ZO rate (above ZO_LR_OFF)
# Step-time noise of real trial files (sd of log time): between trials of one method and
# between evaluation intervals within a trial. MEASURED with `step_noise` on the claims-zo
# run of 2026-12-06 (results/published/claims-zo; two trials at a time on the 2-core box).
STEP_NOISE = {"trial_sd": 0.10, "interval_sd": 0.25}
# The per-seed sd of Hi-ZFO's final dev loss minus its zo-off twin's on math-mini (the
# claims run of 2026-11-30, 3 seeds; issue 30): the unit of a planted ZO dose.
DOSE_SD = 0.0093

# A run directory's verdicts: claim -> {task or OVERALL: verdict}.
Verdicts = dict[str, dict[str, str]]
Evaluate = Callable[[Path], Verdicts]


@dataclass(frozen=True)
class Setting:
    """One simulated design and its truth. `truth` maps a claim to the verdict a perfect
    test would give ("none" = no effect: both supported and contradicted are false)."""

    name: str
    seeds: int = 3
    documents: int = 30
    seed_sd: float = 0.5
    scores: str = "binary"  # or "continuous"
    score_effect: float = 0.0  # Hi-ZFO's logit shift against fo-adamw (and zo-off)
    time_factor: float = 1.0  # Hi-ZFO 2 = twice as fast per step and per unit of progress
    never: bool = False  # Hi-ZFO's dev loss floors above the target
    early_stop: float = 1.0  # Hi-ZFO's trial ends at this fraction of the steps
    dose: float = 0.0  # Hi-ZFO's dev loss minus zo-off's at the end (negative = lower)
    flat: float = 0.0  # log-sharpness reduction with ZO on (negative: sharper)
    zo_score: float = 0.0  # Hi-ZFO's logit shift against zo-off only
    zo_off_b: bool = False  # task sim-b's ZO rate below ZO_LR_OFF
    truth: dict[str, str] = field(default_factory=dict)


def default_settings(seeds: Sequence[int] = (3, 5), documents: int = 30) -> list[Setting]:
    """No effect at three seed sds and two score kinds, and every planted effect."""
    out = []
    for n in seeds:
        out += _no_effect_settings(n, documents)
        out += _score_and_time_settings(n, documents)
        out += _stochasticity_settings(n, documents)
    return out


def _no_effect_settings(n: int, documents: int) -> list[Setting]:
    """Nothing planted: every claim's truth is 'none'."""
    out = []
    none = {c: "none" for c in CLAIMS}
    for scores in ("binary", "continuous"):
        for sd in (0.0, 0.5, 1.0):
            out.append(
                Setting(
                    f"no effect, {scores}, seed sd {sd:g}, {n} seeds",
                    n,
                    documents,
                    sd,
                    scores,
                    truth=none,
                )
            )
    return out


def _score_and_time_settings(n: int, documents: int) -> list[Setting]:
    """Claims 1 and 2: a score effect, faster and slower to the target, never reaching."""
    out: list[Setting] = []
    out += [
        Setting(
            f"score +1 logit (binary, seed sd 0.25), {n} seeds",
            n,
            documents,
            0.25,
            score_effect=1.0,
            truth={"accuracy": SUPPORTED, "time": "none"},
        ),
        Setting(
            f"2x faster to the target, {n} seeds",
            n,
            documents,
            time_factor=2.0,
            truth={"accuracy": "none", "time": SUPPORTED},
        ),
        Setting(
            f"2x slower to the target, {n} seeds",
            n,
            documents,
            time_factor=0.5,
            truth={"time": CONTRADICTED},
        ),
        Setting(
            f"never reaches, 2x the step speed, stops at half the budget, {n} seeds",
            n,
            documents,
            time_factor=2.0,
            never=True,
            early_stop=0.5,
            truth={"accuracy": "none", "time": CONTRADICTED},
        ),
    ]
    return out


def _stochasticity_settings(n: int, documents: int) -> list[Setting]:
    """Claim 3: a ZO dose alone, and with flatness and score effects either way."""
    out = []
    for k in (1, 3, 5):
        out.append(
            Setting(
                f"claim 3: ZO dose {k} sd, no flatness or score effect, {n} seeds",
                n,
                documents,
                dose=-k * DOSE_SD,
                truth={"stochasticity": "none"},
            )
        )
    out += [
        Setting(
            f"claim 3: ZO dose 3 sd, flatter and +1 logit, {n} seeds",
            n,
            documents,
            0.25,
            dose=-3 * DOSE_SD,
            flat=0.5,
            zo_score=1.0,
            truth={"stochasticity": SUPPORTED},
        ),
        Setting(
            f"claim 3: ZO dose 3 sd, sharper and -1 logit, {n} seeds",
            n,
            documents,
            0.25,
            dose=3 * DOSE_SD,
            flat=-0.5,
            zo_score=-1.0,
            truth={"stochasticity": CONTRADICTED},
        ),
        Setting(
            f"claim 3 as in the claims suite (sim-b's ZO rate off): dose 3 sd, flatter "
            f"and +1 logit on sim-a, {n} seeds",
            n,
            documents,
            0.25,
            dose=-3 * DOSE_SD,
            flat=0.5,
            zo_score=1.0,
            zo_off_b=True,
            truth={"stochasticity": SUPPORTED},
        ),
        Setting(
            f"claim 3 as in the claims suite (sim-b's ZO rate off): dose 3 sd, sharper "
            f"and -1 logit on sim-a, {n} seeds",
            n,
            documents,
            0.25,
            dose=3 * DOSE_SD,
            flat=-0.5,
            zo_score=-1.0,
            zo_off_b=True,
            truth={"stochasticity": CONTRADICTED},
        ),
    ]
    return out


# ---- one simulated run ---------------------------------------------------------------


def _sigmoid(x: Any) -> Any:
    import numpy as np

    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class SimulatedRun:
    """What a run directory holds: final trial records (time_to_target set), per-document
    outcomes (trial_id -> doc_id -> score) and the targets."""

    records: list[TrialRecord]
    outcomes: dict[str, dict[int, float]]
    targets: dict[str, Target]


def _task(s: Setting, task: str, rng: Any, noise: Mapping[str, float]) -> tuple[list, dict]:
    import numpy as np

    docs = rng.normal(0.0, 1.5, s.documents)
    inter = {m: rng.normal(0.0, 0.25, s.documents) for m in (METHOD, REFERENCE, ABLATION)}
    steps = np.arange(0, STEPS + 1, EVAL_EVERY)
    records, outcomes = [], {}
    zo_lr = 3.0e-9 if (s.zo_off_b and task == TASKS[1]) else ZO_LR
    dose = 0.0 if zo_lr < ZO_LR_OFF else s.dose
    for seed in range(s.seeds):
        shared = rng.normal(0.0, 0.1)  # the seed's data order, shared by all methods
        curves = {}
        for m in (REFERENCE, METHOD):
            rate = 0.1 * math.exp(shared + rng.normal(0.0, 0.15))
            floor = 1.0
            if m == METHOD:
                rate *= s.time_factor
                floor = _target_value() + 0.2 if s.never else 1.0
            loss = floor + (2.5 - floor) * np.exp(-rate * steps) + rng.normal(0, 0.01, len(steps))
            curves[m] = loss
        # The zo-off twin: Hi-ZFO's curve without the ZO dose.
        progress = steps / STEPS
        curves[ABLATION] = curves[METHOD] - dose * progress + rng.normal(0, DOSE_SD, len(steps))
        base_sharp = rng.normal(0.0, 0.1)
        for m in (REFERENCE, METHOD, ABLATION):
            per_step = math.exp(rng.normal(0.0, noise["trial_sd"]))
            if m == METHOD:
                per_step /= s.time_factor
            intervals = (
                per_step
                * EVAL_EVERY
                * np.exp(rng.normal(0.0, noise["interval_sd"], len(steps) - 1))
            )
            clock = np.concatenate([[0.0], np.cumsum(intervals)])
            kept = len(steps)
            if m == METHOD and s.early_stop < 1.0:
                kept = int(np.searchsorted(steps, s.early_stop * STEPS, side="right"))
            shift = rng.normal(0.0, s.seed_sd)
            if m == METHOD:
                shift += s.score_effect + (s.zo_score if dose else 0.0)
            elif m == ABLATION:
                shift += s.score_effect
            logit = docs + inter[m] + shift
            if s.scores == "binary":
                y = (rng.random(s.documents) < _sigmoid(logit)).astype(float)
            else:
                y = _sigmoid(logit + rng.normal(0.0, 0.5, s.documents))
            sharp = 0.01 * math.exp(base_sharp + rng.normal(0.0, 0.2))
            if m == METHOD and dose:
                sharp *= math.exp(-s.flat)
            trial_id = f"{m}__{task}__{MODEL}__s{seed}__sim"
            outcomes[trial_id] = dict(enumerate(y.tolist()))
            method_config = {"zo_lr": zo_lr, "zo_enabled": m != ABLATION} if m != REFERENCE else {}
            record = TrialRecord(
                trial_id=trial_id,
                method=m,
                task=task,
                model=MODEL,
                seed=seed,
                status="ok",
                score=float(y.mean()),
                metrics={"score": float(y.mean())},
                train_seconds=float(clock[kept - 1]),
                setup_seconds=0.0,
                steps=int(steps[kept - 1]),
                eval_samples=s.documents,
                eval_curve=[
                    {"step": int(st), "seconds": float(c), "dev_loss": float(v)}
                    for st, c, v in list(zip(steps, clock, curves[m], strict=True))[:kept]
                ],
                sharpness={"random_direction": {"mean_rise": sharp}},
                config={"phase": "final", "method_config": method_config},
            )
            records.append(record)
    return records, outcomes


def _target_value() -> float:
    return 1.0 + 1.5 * math.exp(-0.1 * 0.4 * STEPS)


def simulate(setting: Setting, rng: Any, noise: Mapping[str, float] = STEP_NOISE) -> SimulatedRun:
    """One simulated run on both tasks, annotated with time-to-target as a run is."""
    budget = float(STEPS)  # the whole run's expected time
    targets = {t: Target(t, "dev_loss", value=_target_value(), budget=budget) for t in TASKS}
    records, outcomes = [], {}
    for task in TASKS:
        r, o = _task(setting, task, rng, noise)
        records += r
        outcomes.update(o)
    annotate(records, targets)
    return SimulatedRun(records, outcomes, targets)


def write_run(folder: Path, run: SimulatedRun) -> None:
    """The simulated run as a run directory: trial files, samples and targets.json."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "samples").mkdir(parents=True)
    for record in run.records:
        store.write_trial(folder, record)
    for trial_id, docs in run.outcomes.items():
        lines = (json.dumps({"doc_id": d, "score": y}) for d, y in docs.items())
        (folder / "samples" / f"{trial_id}.jsonl").write_text("\n".join(lines) + "\n")
    targets = {
        t.task: {MODEL: {"value": t.value, "budget": t.budget}} for t in run.targets.values()
    }
    (folder / "targets.json").write_text(json.dumps(targets, indent=1))


def step_noise(records: Iterable[TrialRecord]) -> dict[str, float]:
    """Step-time noise of real trial files, as sds of log time: `trial_sd` between the
    trials of one (method, task) (their mean seconds per step), `interval_sd` between the
    evaluation intervals of one trial (seconds per step in each, around its mean)."""
    per_trial: dict[tuple[str, str], list[float]] = {}
    within = []
    for r in records:
        points = [p for p in r.eval_curve if p.get("seconds") is not None]
        rates = [
            math.log((b["seconds"] - a["seconds"]) / (b["step"] - a["step"]))
            for a, b in zip(points, points[1:], strict=False)
            if b["step"] > a["step"] and b["seconds"] > a["seconds"]
        ]
        if len(rates) >= 2:
            mean = statistics.fmean(rates)
            within += [x - mean for x in rates]
            per_trial.setdefault((r.method, r.task), []).append(mean)
    between = [x - statistics.fmean(g) for g in per_trial.values() if len(g) >= 2 for x in g]
    n_groups = sum(1 for g in per_trial.values() if len(g) >= 2)
    return {
        "trial_sd": math.sqrt(sum(x * x for x in between) / max(1, len(between) - n_groups)),
        "interval_sd": math.sqrt(sum(x * x for x in within) / max(1, len(within) - len(per_trial))),
    }


# ---- rates -----------------------------------------------------------------------------


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    from scipy import stats

    if n == 0:
        return 0.0, 1.0
    a = 1 - level
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


@dataclass
class Rate:
    """How often one claim came out each way in one setting, on one task or overall."""

    setting: str
    claim: str
    truth: str
    replicates: int
    counts: dict[str, int]
    scope: str = OVERALL

    def rate(self, verdict: str) -> float:
        return self.counts.get(verdict, 0) / self.replicates

    def interval(self, verdict: str) -> tuple[float, float]:
        return clopper_pearson(self.counts.get(verdict, 0), self.replicates)

    @property
    def false_verdicts(self) -> list[str]:
        """The verdicts that would be wrong under this truth."""
        if self.truth == "none":
            return [SUPPORTED, CONTRADICTED]
        if self.truth == SUPPORTED:
            return [CONTRADICTED]
        if self.truth == CONTRADICTED:
            return [SUPPORTED]
        return []

    @property
    def ok(self) -> bool:
        """Every false verdict's rate is consistent with at most NOMINAL (its 95% MC
        interval reaches down to it)."""
        return all(self.interval(v)[0] <= NOMINAL for v in self.false_verdicts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rates"] = {v: self.rate(v) for v in self.counts}
        d["intervals"] = {v: self.interval(v) for v in self.counts}
        d["false_verdicts"] = self.false_verdicts
        d["ok"] = self.ok
        return d


def verdicts(setting: Setting, rng: Any, evaluate: Evaluate, folder: Path) -> Verdicts:
    """One simulated run written to `folder` and judged by `evaluate` (the report's reader)."""
    write_run(folder, simulate(setting, rng))
    return evaluate(folder)


def _run_setting(args: tuple[Setting, int, int, Evaluate]) -> list[Rate]:
    import numpy as np

    setting, replicates, seed, evaluate = args
    rng = np.random.default_rng(seed)
    counts: dict[tuple[str, str], dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="hizfo-calibrate-") as tmp:
        for _ in range(replicates):
            got = verdicts(setting, rng, evaluate, Path(tmp) / "run")
            for claim in setting.truth:
                for scope, v in got[claim].items():
                    cell = counts.setdefault((claim, scope), {})
                    cell[v] = cell.get(v, 0) + 1
    order = {OVERALL: 0, **{t: i + 1 for i, t in enumerate(TASKS)}}
    return [
        Rate(setting.name, claim, setting.truth[claim], replicates, c, scope)
        for (claim, scope), c in sorted(
            counts.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9))
        )
    ]


def calibrate(
    settings: Sequence[Setting],
    evaluate: Evaluate,
    replicates: int = 200,
    workers: int = 1,
    seed: int = 0,
) -> list[Rate]:
    """Rates of every claim's verdicts per setting, per task and overall (replicates each;
    independent streams per setting, so the result does not depend on `workers`).
    `evaluate` reads a run directory the way `hizfo-bench report` does."""
    jobs = [(s, replicates, seed * 1000 + i, evaluate) for i, s in enumerate(settings)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_run_setting, jobs))
    else:
        results = [_run_setting(j) for j in jobs]
    return [r for rs in results for r in rs]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def render(rates: Sequence[Rate], seconds: float | None = None) -> str:
    """A Markdown table: per setting and claim, the truth and each verdict's rate."""
    lines = [
        "| setting | claim | scope | truth | supported | contradicted | other | within bound |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rates:

        def cell(v: str, r: Rate = r) -> str:
            lo, hi = r.interval(v)
            return f"{_pct(r.rate(v))} [{_pct(lo)}, {_pct(hi)}]"

        other = {k: v for k, v in r.counts.items() if k not in (SUPPORTED, CONTRADICTED)}
        other_text = ", ".join(
            f"{k} {_pct(v / r.replicates)}" for k, v in sorted(other.items(), key=lambda kv: -kv[1])
        )
        ok = "-" if not r.false_verdicts else ("yes" if r.ok else "**no**")
        lines.append(
            f"| {r.setting} | {r.claim} | {r.scope} | {r.truth} | {cell(SUPPORTED)} | "
            f"{cell(CONTRADICTED)}"
            f" | {other_text or '-'} | {ok} |"
        )
    n = rates[0].replicates if rates else 0
    tail = (
        f"\n{n} replicates per setting; rates with 95% Clopper-Pearson intervals (Monte Carlo "
        f"error). A false-verdict rate is within bound when its interval reaches "
        f"{_pct(NOMINAL)}. '{NOT_TESTABLE}' is claim 3's verdict when the ZO part did not "
        f"move the dev loss, '{ZO_OFF}' a task whose ZO rate is below the declared minimum; "
        "scope: a task's verdict or the overall one across both tasks."
    )
    if seconds is not None:
        tail += f" Wall time {seconds:.0f} s."
    return "\n".join(lines) + "\n" + tail + "\n"


def run(
    evaluate: Evaluate,
    seeds: Sequence[int] = (3, 5),
    documents: int = 30,
    replicates: int = 400,
    workers: int = 2,
    seed: int = 0,
) -> tuple[list[Rate], float]:
    """The default calibration; returns the rates and the wall time."""
    t0 = time.perf_counter()
    rates = calibrate(default_settings(seeds, documents), evaluate, replicates, workers, seed)
    return rates, time.perf_counter() - t0


def with_sizes(settings: Sequence[Setting], seeds: int, documents: int) -> list[Setting]:
    """The same settings at another size (a user's suite)."""
    return [replace(s, seeds=seeds, documents=documents) for s in settings]
