"""A proof by simulation: how often the verdicts are wrong when the truth is known.

`hizfo-bench calibrate` builds simulated runs (trial records, per-document test scores,
dev-loss curves, sharpness) with a planted truth and passes each through the same code
`hizfo-bench report` uses (bench/analysis/targets.annotate, then
bench/analysis/claims.evaluate_claims), then counts the verdicts per claim and setting.

The simulated run, per replicate (a fresh draw of everything):

- test documents: difficulty b_d ~ N(0, 1.5) on the logit scale; a method x document
  interaction N(0, 0.25) per method (real on this test set, zero over documents);
- a trained model per (method, seed): a logit shift u ~ N(0, seed_sd) (what a seed
  changes: the whole model is better or worse on every document), plus the method's
  planted effect; binary scores ~ Bernoulli(sigmoid(b_d + interaction + u + effect)),
  continuous scores sigmoid(b_d + interaction + u + effect + N(0, 0.5));
- dev-loss curves at evaluation points: L = 1 + 1.5 exp(-rate x step), rate ~ 0.1
  exp(N(0, 0.15)) per (method, seed), per-step time 1 s x exp(N(0, 0.05)), point noise
  N(0, 0.01); the target (fixed in advance) is the reference's expected loss at 40% of
  the steps, the budget the whole run's expected time; a planted time effect multiplies
  Hi-ZFO's rate, "never" lifts its floor above the target;
- the zo-off twin: Hi-ZFO's curve minus the ZO dose (Hi-ZFO lower by `dose` x progress
  when the dose is planted) plus N(0, 0.003) per point; sharpness 0.01 exp(N(0, 0.2))
  per (method, seed), Hi-ZFO's times exp(-flat) when flatter.

Settings cover no effect (seed sd 0 / 0.5 / 1.0, binary and continuous scores, 3 and 5
seeds), planted score, time and "never reaches within the budget" effects, and claim 3
with and without a ZO dose. Each rate comes with its 95% Clopper-Pearson interval (the
Monte Carlo error); a false-verdict rate passes when that interval reaches down to the
nominal 2.5%.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bench.analysis.claims import (
    CONTRADICTED,
    NOT_TESTABLE,
    SUPPORTED,
    evaluate_claims,
)
from bench.analysis.targets import Target, annotate

METHOD, REFERENCE, ABLATION = "hizfo", "fo-adamw", "hizfo[zo-off]"
TASK, MODEL = "sim", "sim-model"
NOMINAL = 0.025  # the per-side false-verdict rate the rules are built for
CLAIMS = ("accuracy", "time", "stochasticity")
STEPS, EVAL_EVERY = 16, 2


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
    time_factor: float = 1.0  # Hi-ZFO's rate x this: 2 = the target in half the time
    never: bool = False  # Hi-ZFO's dev loss floors above the target
    dose: float = 0.0  # Hi-ZFO's dev loss minus zo-off's at the end (negative = lower)
    flat: float = 0.0  # log-sharpness reduction with ZO on
    zo_score: float = 0.0  # Hi-ZFO's logit shift against zo-off only
    truth: dict[str, str] = field(default_factory=dict)


def default_settings(seeds: Sequence[int] = (3, 5), documents: int = 30) -> list[Setting]:
    """The settings the issue asks for, at the given seed counts and documents."""
    out = []
    none = {c: "none" for c in CLAIMS}
    for n in seeds:
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
                f"half the time to target, {n} seeds",
                n,
                documents,
                time_factor=2.0,
                truth={"accuracy": "none", "time": SUPPORTED},
            ),
            Setting(
                f"never reaches within budget, {n} seeds",
                n,
                documents,
                never=True,
                truth={"accuracy": "none", "time": CONTRADICTED},
            ),
            Setting(
                f"claim 3: ZO dose, no flatness or score effect, {n} seeds",
                n,
                documents,
                dose=-0.05,
                truth={"stochasticity": "none"},
            ),
            Setting(
                f"claim 3: ZO dose, flatter and +1 logit, {n} seeds",
                n,
                documents,
                0.25,
                dose=-0.05,
                flat=0.5,
                zo_score=1.0,
                truth={"stochasticity": SUPPORTED},
            ),
        ]
    return out


# ---- one simulated run ---------------------------------------------------------------


def _sigmoid(x: Any) -> Any:
    import numpy as np

    return 1.0 / (1.0 + np.exp(-x))


def simulate(setting: Setting, rng: Any) -> tuple[list[dict[str, Any]], dict[str, dict]]:
    """One run: final trial records (time_to_target set) and per-document outcomes."""
    import numpy as np

    s = setting
    docs = rng.normal(0.0, 1.5, s.documents)
    inter = {m: rng.normal(0.0, 0.25, s.documents) for m in (METHOD, REFERENCE, ABLATION)}
    steps = np.arange(0, STEPS + 1, EVAL_EVERY)
    target_value = 1.0 + 1.5 * math.exp(-0.1 * 0.4 * STEPS)
    target = Target(TASK, "dev_loss", value=target_value, budget=float(STEPS))
    records, outcomes = [], {}
    for seed in range(s.seeds):
        shared = rng.normal(0.0, 0.1)  # the seed's data order, shared by all methods
        curves = {}
        for m in (REFERENCE, METHOD):
            rate = 0.1 * math.exp(shared + rng.normal(0.0, 0.15))
            floor = 1.0
            if m == METHOD:
                rate *= s.time_factor
                floor = target_value + 0.2 if s.never else 1.0
            loss = floor + (2.5 - floor) * np.exp(-rate * steps) + rng.normal(0, 0.01, len(steps))
            curves[m] = loss
        # The zo-off twin: Hi-ZFO's curve without the ZO dose.
        progress = steps / STEPS
        curves[ABLATION] = curves[METHOD] - s.dose * progress + rng.normal(0, 0.003, len(steps))
        base_sharp = rng.normal(0.0, 0.1)
        for m in (REFERENCE, METHOD, ABLATION):
            step_times = np.exp(rng.normal(0.0, 0.05, STEPS))
            clock = np.concatenate([[0.0], np.cumsum(step_times)])[steps]
            shift = rng.normal(0.0, s.seed_sd)
            if m == METHOD:
                shift += s.score_effect + s.zo_score
            elif m == ABLATION:
                shift += s.score_effect
            logit = docs + inter[m] + shift
            if s.scores == "binary":
                y = (rng.random(s.documents) < _sigmoid(logit)).astype(float)
            else:
                y = _sigmoid(logit + rng.normal(0.0, 0.5, s.documents))
            sharp = 0.01 * math.exp(base_sharp + rng.normal(0.0, 0.2))
            if m == METHOD:
                sharp *= math.exp(-s.flat)
            trial_id = f"{m}__{TASK}__s{seed}"
            outcomes[trial_id] = dict(enumerate(y.tolist()))
            records.append(
                {
                    "trial_id": trial_id,
                    "method": m,
                    "task": TASK,
                    "model": MODEL,
                    "seed": seed,
                    "status": "ok",
                    "config": {"phase": "final"},
                    "score": float(y.mean()),
                    "train_seconds": float(clock[-1]),
                    "setup_seconds": 0.0,
                    "eval_curve": [
                        {"step": int(st), "seconds": float(c), "dev_loss": float(v)}
                        for st, c, v in zip(steps, clock, curves[m], strict=True)
                    ],
                    "sharpness": {"random_direction": {"mean_rise": sharp}},
                }
            )
    annotate(records, {TASK: target})
    return records, outcomes


def verdicts(setting: Setting, rng: Any) -> dict[str, str]:
    """Each claim's overall verdict on one simulated run."""
    records, outcomes = simulate(setting, rng)
    claims = evaluate_claims(records, outcomes, method=METHOD, reference=REFERENCE)
    return {c.key: c.verdict for c in claims}


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
    """How often one claim came out each way in one setting."""

    setting: str
    claim: str
    truth: str
    replicates: int
    counts: dict[str, int]

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


def _run_setting(args: tuple[Setting, int, int]) -> list[Rate]:
    import numpy as np

    setting, replicates, seed = args
    rng = np.random.default_rng(seed)
    counts: dict[str, dict[str, int]] = {c: {} for c in setting.truth}
    for _ in range(replicates):
        got = verdicts(setting, rng)
        for claim in setting.truth:
            counts[claim][got[claim]] = counts[claim].get(got[claim], 0) + 1
    return [
        Rate(setting.name, claim, setting.truth[claim], replicates, counts[claim])
        for claim in setting.truth
    ]


def calibrate(
    settings: Sequence[Setting], replicates: int = 200, workers: int = 1, seed: int = 0
) -> list[Rate]:
    """Rates of every claim's verdicts per setting (replicates each; independent streams
    per setting, so the result does not depend on `workers`)."""
    jobs = [(s, replicates, seed * 1000 + i) for i, s in enumerate(settings)]
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
        "| setting | claim | truth | supported | contradicted | other | within bound |",
        "|---|---|---|---|---|---|---|",
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
            f"| {r.setting} | {r.claim} | {r.truth} | {cell(SUPPORTED)} | {cell(CONTRADICTED)}"
            f" | {other_text or '-'} | {ok} |"
        )
    n = rates[0].replicates if rates else 0
    tail = (
        f"\n{n} replicates per setting; rates with 95% Clopper-Pearson intervals (Monte Carlo "
        f"error). A false-verdict rate is within bound when its interval reaches "
        f"{_pct(NOMINAL)}. '{NOT_TESTABLE}' is claim 3's verdict when the ZO part did not "
        "move the dev loss."
    )
    if seconds is not None:
        tail += f" Wall time {seconds:.0f} s."
    return "\n".join(lines) + "\n" + tail + "\n"


def run(
    seeds: Sequence[int] = (3, 5),
    documents: int = 30,
    replicates: int = 400,
    workers: int = 2,
    seed: int = 0,
) -> tuple[list[Rate], float]:
    """The default calibration; returns the rates and the wall time."""
    t0 = time.perf_counter()
    rates = calibrate(default_settings(seeds, documents), replicates, workers, seed)
    return rates, time.perf_counter() - t0


def with_sizes(settings: Sequence[Setting], seeds: int, documents: int) -> list[Setting]:
    """The same settings at another size (a user's suite)."""
    return [replace(s, seeds=seeds, documents=documents) for s in settings]
