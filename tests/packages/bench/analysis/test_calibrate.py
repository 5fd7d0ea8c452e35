"""The verdict rules' error rates on simulated runs with a known truth (a small version of
`hizfo-bench calibrate`): every replicate is a run directory read back through the report's
own path; false verdicts within their bound, planted effects found, either way."""

from __future__ import annotations

import json
import math

import numpy as np

from bench import store
from bench.analysis.calibrate import (
    NOMINAL,
    OVERALL,
    Setting,
    calibrate,
    default_settings,
    render,
    simulate,
    step_noise,
    write_run,
)
from bench.analysis.claims import CONTRADICTED, NOT_TESTABLE, SUPPORTED, ZO_OFF
from bench.cli import main
from bench.record import TrialRecord
from bench.report.claims import verdicts_of_run

REPLICATES = 100


def _bound(p: float, n: int) -> float:
    """p plus three Monte Carlo standard errors: a correct rule exceeds it by chance in
    about 1 of 700 checks."""
    return p + 3 * math.sqrt(p * (1 - p) / n)


def test_false_verdicts_stay_within_bounds_and_planted_effects_are_found():
    none = {"accuracy": "none", "time": "none", "stochasticity": "none"}
    settings = [
        Setting("null binary sd 1", 3, 30, 1.0, truth=none),
        Setting("null with a ZO dose", 3, 30, dose=-0.05, truth={"stochasticity": "none"}),
        Setting("score +2 logit", 5, 30, 0.0, score_effect=2.0, truth={"accuracy": SUPPORTED}),
        Setting("half the time", 5, 30, time_factor=2.0, truth={"time": SUPPORTED}),
        # The case issue 30 found: never reaching, stepping twice as fast, stopping at half
        # the budget. Entered at the early stop it came out "supported" 17-20% per task.
        Setting(
            "never, early stop",
            3,
            30,
            time_factor=2.0,
            never=True,
            early_stop=0.5,
            truth={"time": CONTRADICTED},
        ),
    ]
    rates = {
        (r.setting, r.claim, r.scope): r for r in calibrate(settings, verdicts_of_run, REPLICATES)
    }
    for r in rates.values():
        for wrong in r.false_verdicts:
            assert r.rate(wrong) <= _bound(NOMINAL, REPLICATES), (r.setting, r.claim, wrong)
    # Each planted effect is detected most of the time (the test fails if the rules
    # only ever said "inconclusive").
    assert rates[("score +2 logit", "accuracy", OVERALL)].rate(SUPPORTED) >= 0.8
    assert rates[("half the time", "time", OVERALL)].rate(SUPPORTED) >= 0.8
    never = rates[("never, early stop", "time", "sim-a")]
    assert never.rate(SUPPORTED) == 0 and never.rate(CONTRADICTED) >= 0.5
    # Without a ZO dose, claim 3 is called untestable, not decided.
    assert rates[("null binary sd 1", "stochasticity", OVERALL)].rate(NOT_TESTABLE) >= 0.8
    assert rates[("null with a ZO dose", "stochasticity", "sim-a")].rate(NOT_TESTABLE) <= 0.2
    assert "| never, early stop | time | overall | contradicted |" in render(list(rates.values()))


def test_claim3_overall_comes_out_either_way_with_one_task_off_by_rate():
    """As in the claims suite (docstring-summary's ZO rate tuned to off): the off task is
    "ZO part off at this rate" and the overall verdict is the other task's, supported or
    contradicted with the planted truth (issue 30: it was capped at inconclusive)."""
    common = {"seeds": 5, "documents": 60, "seed_sd": 0.25, "zo_off_b": True}
    settings = [
        Setting("flatter", dose=-5 * 0.0093, flat=1.0, zo_score=2.0, **common,
                truth={"stochasticity": SUPPORTED}),
        Setting("sharper", dose=5 * 0.0093, flat=-1.0, zo_score=-2.0, **common,
                truth={"stochasticity": CONTRADICTED}),
    ]  # fmt: skip
    rates = {(r.setting, r.scope): r for r in calibrate(settings, verdicts_of_run, 40)}
    assert rates[("flatter", "sim-b")].rate(ZO_OFF) == 1.0
    assert rates[("flatter", OVERALL)].rate(SUPPORTED) >= 0.5
    assert rates[("sharper", OVERALL)].rate(CONTRADICTED) >= 0.5
    for r in rates.values():
        assert all(r.rate(v) == 0 for v in r.false_verdicts)


def test_a_replicate_is_a_run_directory_the_report_reads(tmp_path):
    run = simulate(Setting("x", 3, 10, early_stop=0.5, truth={}), np.random.default_rng(0))
    write_run(tmp_path / "run", run)
    records = store.read_trials(tmp_path / "run")
    assert len(records) == 2 * 3 * 3  # two tasks, three methods, three seeds
    assert (tmp_path / "run" / "targets.json").is_file()
    assert len(list((tmp_path / "run" / "samples").glob("*.jsonl"))) == len(records)
    early = [r for r in records if r.method == "hizfo"]
    assert all(r.steps < 16 for r in early)  # stopped before the budget
    got = verdicts_of_run(tmp_path / "run")
    assert set(got) == {"accuracy", "time", "stochasticity"}
    assert set(got["time"]) == {OVERALL, "sim-a", "sim-b"}


def test_step_noise_is_measured_from_trial_files():
    rng = np.random.default_rng(1)
    records = []
    for _ in range(40):
        per = math.exp(rng.normal(0, 0.2))
        t = np.concatenate([[0.0], np.cumsum(per * 2 * np.exp(rng.normal(0, 0.3, 8)))])
        curve = [{"step": 2 * i, "seconds": float(x)} for i, x in enumerate(t)]
        records.append(TrialRecord("m__t", "m", "t", "tiny", 0, eval_curve=curve))
    noise = step_noise(records)
    assert 0.15 < noise["trial_sd"] < 0.3 and 0.25 < noise["interval_sd"] < 0.36


def test_default_settings_cover_the_issue():
    names = [s.name for s in default_settings((3,), 30)]
    for sd in ("0", "0.5", "1"):
        for kind in ("binary", "continuous"):
            assert f"no effect, {kind}, seed sd {sd}, 3 seeds" in names
    for effect in ("2x faster", "2x slower", "never reaches", "score +1 logit"):
        assert any(n.startswith(effect) for n in names), effect
    for k in (1, 3, 5):
        assert any(f"ZO dose {k} sd" in n for n in names)


def test_cli_writes_json_and_rejects_bad_sizes(tmp_path, capsys):
    out = tmp_path / "cal.json"
    code = main(
        ["calibrate", "--seeds", "3", "--documents", "20", "--replicates", "10", "--json", str(out)]
    )
    assert code in (0, 1)  # 10 replicates: a rate may exceed its bound by chance
    data = json.loads(out.read_text())
    assert data["seeds"] == [3] and data["documents"] == 20 and data["replicates"] == 10
    assert {r["claim"] for r in data["rates"]} == {"accuracy", "time", "stochasticity"}
    assert {r["scope"] for r in data["rates"]} == {OVERALL, "sim-a", "sim-b"}
    assert "| setting | claim | scope | truth |" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    assert main(["calibrate", "--documents", "1", "--json", str(bad)]) == 2
    assert not bad.exists()
    assert "--documents must be at least 2" in capsys.readouterr().err
