"""Time-to-target, dev-only selection of tuned settings, and the tuning plan."""

from __future__ import annotations

import dataclasses

import pytest

from bench.analysis.selection import choose
from bench.analysis.targets import (
    Target,
    TargetError,
    annotate,
    parse_targets,
    speedups,
    time_to_target,
)
from bench.config import ConfigError
from bench.orchestrate.tuning import final_specs, sample_points, tuning_specs
from bench.record import TrialRecord
from bench.suite import expand, plan_from_raw


def _curve(values, metric="dev_loss", seconds_per_point=10.0):
    return [
        {
            "step": 5 * i,
            "seconds": seconds_per_point * i,
            "forward": 5 * i,
            "backward": 5 * i,
            "dev_loss": v if metric == "dev_loss" else 1.0,
            "dev_score": v if metric == "dev_score" else None,
        }
        for i, v in enumerate(values)
    ]


def _rec(method, seed, values, metric="dev_loss", spp=10.0, **kw):
    return TrialRecord(
        f"{method}__{seed}",
        method,
        "t",
        "m",
        seed,
        status="ok",
        eval_curve=_curve(values, metric, spp),
        **kw,
    )


def test_first_point_past_a_fixed_loss_target():
    t = Target("t", "dev_loss", value=1.0)
    out = time_to_target(_rec("a", 0, [2.0, 1.5, 0.9, 0.5]), t, 1.0)
    assert out["reached"] and out["steps"] == 10 and out["seconds"] == 20.0


def test_score_target_is_reached_upwards_and_never_reached_is_null():
    t = Target("t", "dev_score", value=0.5)
    assert time_to_target(_rec("a", 0, [0.1, 0.6], "dev_score"), t, 0.5)["steps"] == 5
    never = time_to_target(_rec("a", 0, [0.1, 0.2], "dev_score"), t, 0.5)
    assert never["reached"] is False and never["seconds"] is None


def test_reference_method_target_and_speedup_interval():
    # The reference's final dev loss (mean over seeds) is 1.0; "fast" gets there in half
    # the time on every seed, "slow" never does.
    recs = [
        _rec("ref", 0, [2.0, 1.5, 1.2, 1.0]),
        _rec("ref", 1, [2.0, 1.5, 1.2, 1.0]),
        _rec("fast", 0, [2.0, 1.0, 0.9, 0.8]),
        _rec("fast", 1, [2.0, 1.4, 1.0, 0.8], spp=5.0),
        _rec("slow", 0, [2.0, 1.9, 1.8, 1.7]),
    ]
    targets = {"t": Target("t", "dev_loss", method="ref")}
    assert len(annotate(recs, targets)) == 5
    rows = {r.method: r for r in speedups(recs, "ref")}
    assert rows["ref"].speedup.mean == pytest.approx(1.0)
    assert rows["fast"].reached == 2
    assert rows["fast"].speedup.mean == pytest.approx((30 / 10 + 30 / 10) / 2)
    # Censored at its last point (30 s): the speed-up is bounded by 30 / 30, never more.
    assert rows["slow"].reached == 0 and rows["slow"].pairs.method_censored == 1
    assert rows["slow"].speedup.mean <= 1.0


def test_target_errors_are_one_line():
    with pytest.raises(TargetError, match="not in the suite"):
        parse_targets({"t": {"method": "nope"}}, ["t"], ["a"])
    with pytest.raises(TargetError, match="exactly one"):
        parse_targets({"t": {"metric": "dev_loss"}}, ["t"], ["a"])
    with pytest.raises(TargetError, match="metric must be"):
        parse_targets({"t": {"metric": "test_score", "value": 1}}, ["t"], ["a"])


def _tune_rec(lr, dev_loss, test_score):
    return TrialRecord(
        f"m__{lr}",
        "m",
        "t",
        "x",
        0,
        status="ok",
        config={"tuning_point": {"lr": lr}, "phase": "tune"},
        eval_curve=[{"step": 10, "seconds": 1.0, "dev_loss": dev_loss, "dev_score": None}],
        score=test_score,
        metrics={"exact_match": test_score},
    )


def test_selection_reads_dev_never_test():
    # The test scores point the other way: a selection that peeked would pick lr=1.
    recs = [_tune_rec(1.0, 3.0, 0.9), _tune_rec(0.1, 1.0, 0.1), _tune_rec(0.01, 2.0, 0.5)]
    (choice,) = choose(recs, "dev_loss")
    assert choice.chosen == {"lr": 0.1} and choice.budget == 3
    # Removing every test field changes nothing: selection never reads them.
    for r in recs:
        r.score, r.metrics = None, {}
    assert choose(recs, "dev_loss")[0].chosen == {"lr": 0.1}


def test_failed_points_rank_last():
    recs = [
        _tune_rec(1.0, 3.0, 0.0),
        dataclasses.replace(_tune_rec(0.1, 1.0, 0.0), status="failed"),
    ]
    assert choose(recs, "dev_loss")[0].chosen == {"lr": 1.0}


def test_points_are_quasi_random_in_range_and_reproducible():
    space = {"lr": {"log_uniform": [1e-6, 1e-3]}, "eps": [1e-3, 1e-2]}
    pts = sample_points(space, 8)
    assert pts == sample_points(space, 8)
    assert all(1e-6 <= p["lr"] <= 1e-3 and p["eps"] in (1e-3, 1e-2) for p in pts)
    assert len({p["lr"] for p in pts}) == 8  # spread, no repeats
    assert {p["eps"] for p in pts} == {1e-3, 1e-2}


def _suite(search, **extra):
    return {
        "models": ["tiny"],
        "tasks": ["math-mini"],
        "methods": {"fo-adamw": {"config": {"lr": 1e-3}, "search": search}, "mezo": {}},
        "seeds": [0, 1],
        "train": {"steps": 10},
        "tuning": {"trials": 3, "seeds": [7]},
        **extra,
    }


def test_every_tuned_method_gets_the_same_budget_and_finals_get_the_choice():
    raw = _suite({"lr": {"log_uniform": [1e-4, 1e-2]}})
    suite = plan_from_raw(raw, expand(raw))
    tune = tuning_specs(suite.specs, suite.tuning)
    assert len(tune) == 3 and {s.seed for s in tune} == {7}
    assert all(s.phase == "tune" and s.dev.eval_every == 10 for s in tune)
    choice = choose([], "dev_loss")
    assert final_specs(suite.specs, choice) == suite.specs


def test_search_on_an_unknown_config_key_is_a_config_error():
    raw = _suite({"learning_rate": [1e-3]})
    with pytest.raises(ConfigError, match="unknown config key 'learning_rate'"):
        plan_from_raw(raw, expand(raw))


def test_target_naming_a_method_not_in_the_suite_is_a_config_error():
    raw = _suite({"lr": [1e-3]}, targets={"math-mini": {"method": "lora"}})
    with pytest.raises(ConfigError, match="not in the suite"):
        plan_from_raw(raw, expand(raw))


def test_tuning_trial_is_never_scored_on_test(monkeypatch):
    import bench.train.recipe as recipe

    def only_dev(*args, split="test", **kwargs):
        assert split == "dev", "a tuning trial scored test"
        raise AssertionError("unexpected")

    monkeypatch.setattr(recipe, "evaluate", only_dev)
    raw = _suite({"lr": [1e-3]}) | {
        "train": {"steps": 2, "batch_size": 4, "train_examples": 16, "max_length": 64}
    }
    spec = tuning_specs(*(lambda s: (s.specs, s.tuning))(plan_from_raw(raw, expand(raw))))[0]
    record = recipe.run_trial(spec)
    assert record["status"] == "ok", record["error"]
    assert record["score"] is None and record["eval_seconds"] is None
    assert [p["step"] for p in record["eval_curve"]] == [0, 2]


@pytest.mark.integration
def test_a_tuning_run_through_the_cli_picks_on_dev(tmp_path, ray_cluster):
    import json

    import yaml

    from bench.cli import main

    suite = {
        "name": "tune-tiny",
        "models": ["tiny"],
        "tasks": ["math-mini"],
        "methods": {"fo-adamw": {"search": {"lr": [1.0e-6, 3.0e-3]}}},
        "seeds": [0],
        "tuning": {"trials": 2, "seeds": [0], "metric": "dev_loss"},
        "targets": {"math-mini": {"metric": "dev_loss", "method": "fo-adamw"}},
        "train": {"steps": 6, "batch_size": 4, "max_length": 64, "train_examples": 32},
        "dev": {"eval_every": 3, "batches": 1},
        "eval": {"limit": 2, "batch_size": 2, "max_gen_toks": 4},
    }
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "run"
    assert main(["run", "--suite", str(path), "--out", str(out)]) == 0
    tuning = json.loads((out / "tuning.json").read_text())
    (choice,) = tuning["choices"]
    # 3e-3 trains the tiny model in 6 steps, 1e-6 does not: dev decides for the larger.
    assert choice["chosen"] == {"lr": 3.0e-3} and choice["budget"] == 2
    records = [json.loads(p.read_text()) for p in (out / "trials").glob("*.json")]
    tune = [r for r in records if r["config"]["phase"] == "tune"]
    final = [r for r in records if r["config"]["phase"] != "tune"]
    assert len(tune) == 2 and all(r["score"] is None for r in tune)
    (f,) = final
    assert f["config"]["method_config"]["lr"] == 3.0e-3 and f["score"] is not None
    assert f["time_to_target"]["reached"]
