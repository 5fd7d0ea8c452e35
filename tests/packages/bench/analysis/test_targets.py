"""Time to target as AlgoPerf scores it: a target-setting stage, one budget, setup on the
clock, censored times (bench/analysis/targets.py)."""

from __future__ import annotations

import math

import pytest
from helpers.specs import make_spec

from bench.analysis.targets import (
    Target,
    TargetError,
    annotate,
    parse_targets,
    set_targets,
    speedups,
    target_specs,
    time_to_target,
)
from bench.record import TrialRecord


def _rec(method, seed, losses, spp=10.0, setup=0.0, phase="final"):
    return TrialRecord(
        f"{method}-{seed}-{phase}",
        method,
        "t",
        "m",
        seed,
        status="ok",
        setup_seconds=setup,
        config={"phase": phase},
        eval_curve=[
            {"step": 5 * i, "seconds": spp * i, "dev_loss": v} for i, v in enumerate(losses)
        ],
    )


def test_the_stage_fixes_a_target_the_reference_reaches_and_a_budget():
    t = Target("t", "dev_loss", method="ref", seeds=(100, 101, 102), fraction=0.9)
    stage = [
        _rec("ref", 100, [3.0, 2.0, 1.5, 1.0], phase="target"),
        _rec("ref", 101, [3.0, 2.2, 1.6, 1.2], phase="target"),
        _rec("ref", 102, [3.0, 2.1, 1.4, 1.1], phase="target"),
    ]
    got = set_targets(stage, {"t": t})["t"]["m"]
    # median start 3.0, median best 1.1: 3.0 - 0.9 x 1.9
    assert got["value"] == pytest.approx(3.0 - 0.9 * 1.9)
    # reached at 30 s on every target seed (1.29 needs the third point): budget 2 x 30 s
    assert got["budget"] == pytest.approx(60.0)
    assert got["seeds"] == [100, 101, 102]


def test_target_specs_run_the_reference_on_the_target_seeds_only():
    specs = [make_spec("fo-adamw", seed=0), make_spec("hizfo", seed=0)]
    t = Target(specs[0].task, "dev_loss", method="fo-adamw", seeds=(100, 101))
    stage = target_specs(specs, {specs[0].task: t})
    assert [(s.method, s.seed, s.phase) for s in stage] == [
        ("fo-adamw", 100, "target"),
        ("fo-adamw", 101, "target"),
    ]
    assert all(s.dev.eval_every for s in stage)


def test_setup_is_on_the_clock_and_the_budget_censors():
    t = Target("t", "dev_loss", value=1.0)
    out = time_to_target(_rec("h", 0, [2.0, 1.5, 0.9], setup=7.0), t, 1.0, budget=100.0)
    assert out["reached"] and out["seconds"] == 27.0 and out["clock"].startswith("train")
    late = time_to_target(_rec("h", 0, [2.0, 1.5, 0.9], setup=7.0), t, 1.0, budget=20.0)
    assert not late["reached"] and late["censored_at"] == 20.0 and late["seconds"] is None


def test_never_reaching_is_a_censored_time_that_bounds_the_speedup():
    t = Target("t", "dev_loss", value=1.0, budget=40.0)
    recs = []
    for seed in range(3):
        recs.append(_rec("ref", seed, [2.0, 1.5, 0.9 - 0.01 * seed, 0.8]))  # 20 s
        recs.append(_rec("slow", seed, [2.0, 1.9, 1.8, 1.7, 1.6]))  # never
        recs.append(_rec("fast", seed, [2.0, 0.9, 0.8], spp=10.0 + seed))  # 10-12 s
    annotate(recs, {"t": t})
    rows = {r.method: r for r in speedups(recs, "ref")}
    slow = rows["slow"]
    assert slow.reached == 0 and slow.pairs.method_censored == 3
    # Censored at the 40 s budget: at most 20 / 40 on every seed.
    assert slow.speedup.mean == pytest.approx(0.5)
    assert rows["fast"].speedup.lo > 1
    assert rows["fast"].speedup.mean == pytest.approx(
        math.exp(sum(math.log(20 / (10 + s)) for s in range(3)) / 3)
    )


def test_target_errors_are_one_line():
    with pytest.raises(TargetError, match="seeds must be a list of integers"):
        parse_targets({"t": {"method": "a", "seeds": "x"}}, ["t"], ["a"])
    with pytest.raises(TargetError, match="give 'method'"):
        parse_targets({"t": {"value": 1.0, "seeds": [1]}}, ["t"], ["a"])
    with pytest.raises(TargetError, match="fraction must be"):
        parse_targets({"t": {"method": "a", "seeds": [1], "fraction": 2}}, ["t"], ["a"])
    with pytest.raises(TargetError, match="budget_factor"):
        parse_targets({"t": {"method": "a", "seeds": [1], "budget_factor": 0.5}}, ["t"], ["a"])
    got = parse_targets({"t": {"method": "a", "seeds": [7, 8], "budget": 90}}, ["t"], ["a"])
    assert got["t"].staged and got["t"].budget == 90.0


def test_a_trial_that_stops_early_without_the_target_is_never_a_speed_up():
    """Hi-ZFO stepping twice as fast but stopping at 10 s, before the 40 s budget, without
    reaching the target: it did not reach it within the budget (enters at 40 s), so the
    speed-up is at most 20 / 40 on every seed, never 20 / 10 (issue 30)."""
    t = Target("t", "dev_loss", value=1.0, budget=40.0)
    recs = []
    for seed in range(3):
        recs.append(_rec("ref", seed, [2.0, 1.5, 0.9 - 0.01 * seed]))  # reaches at 20 s
        recs.append(_rec("early", seed, [2.0, 1.5, 1.2], spp=5.0))  # stops at 10 s
    annotate(recs, {"t": t})
    early = next(r for r in speedups(recs, "ref") if r.method == "early")
    assert early.reached == 0 and early.pairs.method_censored == 3
    assert early.pairs.ended_early == 3 and "entered at the budget" in early.pairs.describe()
    assert early.speedup.mean == pytest.approx(0.5)
    assert early.speedup.hi < 1


def test_without_a_budget_a_censored_trial_is_at_best_as_fast_as_the_one_that_reached():
    t = Target("t", "dev_loss", value=1.0)
    recs = [_rec("ref", 0, [2.0, 1.5, 0.9]), _rec("early", 0, [2.0, 1.5], spp=2.0)]
    annotate(recs, {"t": t})
    early = next(r for r in speedups(recs, "ref") if r.method == "early")
    assert early.speedup.mean == pytest.approx(1.0)
