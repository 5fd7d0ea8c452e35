"""Tuning that tunes (issue 22.1): budget per dimension, independent sequences per method,
staged search, edge flags and extensions, numeric bounds, every point in tuning.md."""

from __future__ import annotations

import json
import logging
import math
import sys

import pytest
from helpers.records import make_record

from bench import store
from bench.config import ConfigError, settings
from bench.orchestrate.tuning import (
    describe,
    parse_space,
    planned_trials,
    run_tuning,
    tuning_specs,
)
from bench.report.tuning import tuning_table
from bench.suite import expand, plan_from_raw


def _suite(methods, **tuning):
    raw = {
        "models": ["tiny"],
        "tasks": ["math-mini"],
        "methods": methods,
        "seeds": [0],
        "train": {"steps": 4},
        "tuning": {"trials": 4, "seeds": [0], **tuning},
    }
    return plan_from_raw(raw, expand(raw))


HIZFO = {
    "config": {"zo_lr": 1.0e-6},
    "search": {"fo_lr": {"log_uniform": [1e-5, 1e-2]}, "zo_lr": {"loguniform": [1e-7, 1e-3]}},
}


def _fake_sweep(run_dir, dev_loss):
    """A sweep that 'trains' each spec by writing a record whose final dev loss is
    dev_loss(method_config); returns the specs it ran."""
    ran = []

    def sweep(specs):
        for s in specs:
            record = make_record(
                s.method,
                s.task,
                s.seed,
                model=s.model,
                score=None,
                config={**s.to_dict(), "phase": "tune", "tuning_point": s.tuning_point},
                eval_curve=[
                    {"step": 4, "seconds": 1.0, "dev_loss": dev_loss(settings(s.method_config))}
                ],
                digest=s.trial_id,
            )
            record.trial_id = s.trial_id
            store.write_trial(run_dir, record)
        ran.append(list(specs))
        return specs

    return sweep, ran


def test_bounds_written_without_a_dot_are_numbers_and_compared_as_numbers():
    from baselines.mezo import MeZOConfig

    # PyYAML reads 1e-4 (no dot) as the string "1e-4"; as strings "1e-4" < "5e-5".
    space = parse_space({"lr": {"loguniform": ["1e-7", "1e-4"]}}, MeZOConfig, "s")
    assert space == {"lr": {"log_uniform": [1e-7, 1e-4]}}
    with pytest.raises(ConfigError, match=r"s\.lr\.log_uniform: expected \[lo, hi\] with lo < hi"):
        parse_space({"lr": {"log_uniform": ["1e-4", "5e-5"]}}, MeZOConfig, "s")
    with pytest.raises(ConfigError, match="expected a number, got 'fast'"):
        parse_space({"lr": {"uniform": ["fast", 1]}}, MeZOConfig, "s")
    assert parse_space({"lr": ["1e-4", "3e-4"]}, MeZOConfig, "s") == {"lr": [1e-4, 3e-4]}


def test_budget_grows_with_dimensions_and_methods_draw_their_own_points():
    suite = _suite(
        {
            "fo-adamw": {"search": {"lr": {"log_uniform": [1e-5, 1e-2]}}},
            "mezo": {"search": {"lr": {"log_uniform": [1e-5, 1e-2]}}},  # the same range
            "hizfo": HIZFO,
        }
    )
    specs = tuning_specs(suite.specs, suite.tuning)
    per = {
        m: [s.tuning_point for s in specs if s.method == m] for m in ("fo-adamw", "mezo", "hizfo")
    }
    assert len(per["fo-adamw"]) == len(per["mezo"]) == 4 and len(per["hizfo"]) == 8
    assert planned_trials(suite.specs, suite.tuning) == 16
    # Same range, independent sequences: no point in common.
    assert not {p["lr"] for p in per["fo-adamw"]} & {p["lr"] for p in per["mezo"]}
    assert len({p["zo_lr"] for p in per["hizfo"]}) == 8  # joint: zo_lr spread over 8 values


def test_staged_search_fixes_the_first_choice_and_searches_zo_lr_on_its_own(tmp_path):
    suite = _suite({"hizfo": HIZFO}, strategy="staged")

    def loss(c):  # best fo_lr near 1e-3 (dominant), best zo_lr near 1e-5 (small effect)
        return (math.log10(c["fo_lr"]) + 3) ** 2 + 0.01 * (math.log10(c["zo_lr"]) + 5) ** 2

    sweep, ran = _fake_sweep(tmp_path, loss)
    (choice,), _ = run_tuning(suite.specs, suite.tuning, tmp_path, sweep)
    first, second = ran
    assert {tuple(s.tuning_point) for s in first} == {("fo_lr",)}
    assert all(s.method_config.zo_lr == 1e-6 for s in first)  # the config value
    best_fo = min((settings(s.method_config) for s in first), key=loss)["fo_lr"]
    assert all(s.tuning_point["fo_lr"] == best_fo for s in second)
    assert len({s.tuning_point["zo_lr"] for s in second}) == 4
    assert choice.chosen["fo_lr"] == best_fo and choice.budget == 8
    assert choice.chosen["zo_lr"] == min(
        (s.tuning_point["zo_lr"] for s in second), key=lambda z: abs(math.log10(z) + 5)
    )
    report = tuning_table(tmp_path)
    assert report.count("| 1 | 0 |") == 4 and report.count("| 2 | 0 |") == 4  # every point
    assert "(chosen)" in report


def test_an_edge_choice_is_flagged_and_extends_the_range(tmp_path, capsys):
    suite = _suite({"mezo": {"search": {"lr": {"log_uniform": [1e-6, 1e-5]}}}}, extend_edges=1)
    sweep, ran = _fake_sweep(tmp_path, lambda c: -math.log10(c["lr"]))  # larger is better
    console = logging.StreamHandler(sys.stderr)  # as the CLI's logging set-up has one
    logging.getLogger().addHandler(console)
    try:
        (choice,), _ = run_tuning(suite.specs, suite.tuning, tmp_path, sweep)
    finally:
        logging.getLogger().removeHandler(console)
    first, extension = ran
    assert all(1e-6 <= s.tuning_point["lr"] <= 1e-5 for s in first)
    # Extended past the edge by the range's own (log) width, then still at the edge.
    assert all(1e-5 <= s.tuning_point["lr"] <= 1e-4 for s in extension)
    assert choice.chosen["lr"] > 1e-5 and choice.budget == 8
    assert choice.edges["lr"]["side"] == "high" and choice.edges["lr"]["extensions"] == 1
    err = capsys.readouterr().err
    assert err.count("extending the range") == 1 and err.count("is at the high edge") == 1
    saved = json.loads((tmp_path / "tuning.json").read_text())
    assert saved["choices"][0]["edges"]["lr"]["side"] == "high"
    assert "⚠ lr high after 1 extension(s)" in tuning_table(tmp_path)


def test_an_interior_choice_is_not_flagged_and_not_extended(tmp_path):
    suite = _suite({"mezo": {"search": {"lr": {"log_uniform": [1e-6, 1e-4]}}}}, extend_edges=2)
    sweep, ran = _fake_sweep(tmp_path, lambda c: (math.log10(c["lr"]) + 5) ** 2)
    (choice,), _ = run_tuning(suite.specs, suite.tuning, tmp_path, sweep)
    assert len(ran) == 1 and choice.edges == {}
    assert "edge of what was tried" not in tuning_table(tmp_path)


def test_a_dry_run_description_shows_every_stage_and_its_points():
    suite = _suite({"hizfo": HIZFO}, strategy="staged")
    text = "\n".join(describe(suite.specs, suite.tuning))
    assert "stage 1: fo_lr (with zo_lr=1e-06)" in text
    assert "stage 2: zo_lr with fo_lr fixed" in text
    assert text.count("fo_lr=") == 4 and text.count("zo_lr=") == 5  # 4 points + the fixed one


def test_a_config_value_that_beats_every_searched_zo_lr_is_flagged(tmp_path):
    # The ZO part only hurts: stage 2's best is stage 1's winner, with zo_lr at its config
    # value 1e-7, below every zo_lr searched, so the flag says so (not extended: off).
    hizfo = {**HIZFO, "config": {"zo_lr": 1.0e-7}}
    hizfo["search"] = {**HIZFO["search"], "zo_lr": {"log_uniform": [1e-6, 1e-3]}}
    suite = _suite({"hizfo": hizfo}, strategy="staged")
    sweep, _ = _fake_sweep(tmp_path, lambda c: (math.log10(c["fo_lr"]) + 3) ** 2 + c["zo_lr"])
    (choice,), _ = run_tuning(suite.specs, suite.tuning, tmp_path, sweep)
    assert "zo_lr" not in choice.chosen  # the config value stays
    assert choice.edges["zo_lr"] == {"side": "low", "value": 1e-7, "extensions": 0}


def test_the_suite_snippet_of_tuning_md_fixes_the_chosen_values(tmp_path):
    """The `by_task` block tuning.md prints, merged into the suite, gives final trials
    with exactly the chosen values (as claims takes claims-tune's choices)."""
    import yaml

    suite = _suite({"hizfo": HIZFO}, strategy="staged")

    def loss(c):
        return (math.log10(c["fo_lr"]) + 3) ** 2 + 0.01 * (math.log10(c["zo_lr"]) + 5) ** 2

    sweep, _ = _fake_sweep(tmp_path, loss)
    (choice,), _ = run_tuning(suite.specs, suite.tuning, tmp_path, sweep)
    report = tuning_table(tmp_path)
    block = report.split("```yaml\n", 1)[1].split("```", 1)[0]
    by_task = yaml.safe_load(block)["methods"]["hizfo"]["by_task"]
    raw = {
        "models": ["tiny"],
        "tasks": ["math-mini"],
        "methods": {"hizfo": {"config": HIZFO["config"], "by_task": by_task}},
        "train": {"steps": 4},
    }
    (spec,) = expand(raw)
    for key, value in choice.chosen.items():
        assert isinstance(by_task["math-mini"][key], float)  # read as a number, not a string
        assert getattr(spec.method_config, key) == pytest.approx(value, rel=5e-3)


def test_a_variant_trains_at_its_base_choice_unless_it_sets_the_key_itself(tmp_path):
    """hizfo[random] (one switch different) takes hizfo's tuned fo_lr and zo_lr; a
    variant that sets zo_lr to its own value keeps it; a variant of an untuned method,
    and the untuned methods, are left alone."""
    from bench.orchestrate.tuning import final_specs

    methods = {
        "hizfo": HIZFO,
        "hizfo[random]": {"config": {**HIZFO["config"], "selection": "random"}},
        "hizfo[zo-lr-10x]": {"config": {"zo_lr": 1.0e-5}},
        "mezo": {"config": {"lr": 1e-6}},
        "mezo[x]": {"config": {"lr": 2e-6}},
    }
    suite = _suite(methods, strategy="staged")

    def loss(c):
        return (math.log10(c["fo_lr"]) + 3) ** 2 + 0.01 * (math.log10(c["zo_lr"]) + 5) ** 2

    sweep, _ = _fake_sweep(tmp_path, loss)
    (choice,), _ = run_tuning(suite.specs, suite.tuning, tmp_path, sweep)
    final = {s.method: settings(s.method_config) for s in final_specs(suite.specs, [choice])}
    assert final["hizfo[random]"]["fo_lr"] == choice.chosen["fo_lr"]
    assert final["hizfo[random]"]["zo_lr"] == choice.chosen["zo_lr"]
    assert final["hizfo[random]"]["selection"] == "random"
    assert final["hizfo[zo-lr-10x]"]["zo_lr"] == 1.0e-5  # its own value
    assert final["hizfo[zo-lr-10x]"]["fo_lr"] == choice.chosen["fo_lr"]
    assert final["mezo"]["lr"] == 1e-6 and final["mezo[x]"]["lr"] == 2e-6


def test_a_dry_run_lists_tuned_trials_as_to_do_until_tuning_chose_then_with_its_ids(
    tmp_path, capsys
):
    """Before tuning a tuned cell's final id is unknown: never [done], even when a trial
    of that id exists (a tuning point equal to the suite's settings); after it, the
    final trials are listed with the choices' ids (issue 35: the dry run's [done])."""
    import json

    from helpers.records import make_record

    from bench import store
    from bench.analysis.selection import Choice
    from bench.cli import main
    from bench.orchestrate.tuning import final_specs
    from bench.suite import load_plan

    suite = load_plan("mini-tune", check_sources=False)
    run = tmp_path / "run"
    run.mkdir()
    first = next(s for s in suite.specs if s.method == "fo-adamw")
    store.write_trial(run, make_record("fo-adamw", trial_id=first.trial_id))
    assert main(["run", "--suite", "mini-tune", "--out", str(run), "--dry-run"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if first.trial_id in x)
    assert line.strip().startswith("[todo] (after tuning") and line.split()[-1] == first.trial_id

    choice = Choice(first.method, first.task, first.model, "dev_loss", 1, {"lr": 3e-4}, 1.0)
    (run / "tuning.json").write_text(json.dumps({"choices": [choice.to_dict()]}))
    (tuned,) = [s for s in final_specs(suite.specs, [choice]) if s.tuning_point]
    assert tuned.trial_id != first.trial_id
    store.write_trial(run, make_record("fo-adamw", trial_id=tuned.trial_id))
    assert main(["run", "--suite", "mini-tune", "--out", str(run), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"[done] {tuned.trial_id}" in out and "tuning finished" in out
    assert first.trial_id not in out.split("then the final trials")[-1]
