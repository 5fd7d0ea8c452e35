"""Evaluation points: on dev only, off the train clock, without changing the training."""

from __future__ import annotations

import json
import time

import pytest
from helpers.specs import make_spec

from bench.config import ConfigError
from bench.spec import DevConfig
from bench.suite import expand
from bench.train.hooks import TrainClock
from bench.train.recipe import TrialRecipe, run_trial


def _spec(method="fo-adamw", config=None, steps=8, dev=None):
    return make_spec(method, config or {"lr": 1e-3}, steps=steps, log_every=4, dev=dev)


def test_clock_excludes_paused_blocks_and_pauses_before_start():
    clock = TrainClock()
    with clock.paused():
        time.sleep(0.05)
    clock.start()
    with clock.paused():
        time.sleep(0.1)
    assert clock.seconds < 0.05
    assert clock.paused_seconds >= 0.15


def test_points_every_n_steps_with_passes_and_dev_loss(tmp_path):
    spec = _spec(dev=DevConfig(eval_every=3, batches=2))
    recipe = TrialRecipe(spec, __import__("torch").device("cpu"), run_dir=tmp_path)
    recipe.setup()
    recipe.train()
    points = recipe.record.eval_curve
    assert [p["step"] for p in points] == [0, 3, 6, 8]
    assert [p["forward"] for p in points] == [0, 3, 6, 8]
    assert all(p["dev_score"] is None and p["dev_loss"] > 0 for p in points)
    # Training lowers the dev loss on this tiny model with a large LR.
    assert points[-1]["dev_loss"] < points[0]["dev_loss"]
    # Train-clock seconds grow and never include the points' own time.
    secs = [p["seconds"] for p in points]
    assert secs == sorted(secs) and secs[0] == 0.0
    assert recipe.record.dev_eval_seconds >= sum(p["eval_seconds"] for p in points) * 0.99
    # A point's train-clock time never includes evaluation: the last point is at (or a
    # hair before) the end of the train clock, and points match the loss curve's clock.
    assert points[-1]["seconds"] <= recipe.record.train_seconds
    assert points[-1]["seconds"] == pytest.approx(recipe.record.curve[-1]["seconds"], abs=0.05)
    # The metrics file holds every loss and eval point as it happened.
    lines = [json.loads(x) for x in (tmp_path / "metrics" / f"{spec.trial_id}.jsonl").open()]
    assert [x["step"] for x in lines if x["kind"] == "eval"] == [0, 3, 6, 8]
    assert [x["step"] for x in lines if x["kind"] == "train"] == [4, 8]


def test_points_do_not_change_the_training():
    """Same losses with and without evaluation points (RNG states are restored; dropout
    is on in train mode for this check to mean something)."""
    plain = run_trial(_spec(steps=6))
    watched = run_trial(_spec(steps=6, dev=DevConfig(eval_every=2, batches=1, score=True, limit=2)))
    assert plain["status"] == watched["status"] == "ok", (plain["error"], watched["error"])
    assert [p["loss"] for p in plain["curve"]] == [p["loss"] for p in watched["curve"]]
    assert plain["score"] == watched["score"]
    assert [p["step"] for p in watched["eval_curve"]] == [0, 2, 4, 6]
    assert all(0.0 <= p["dev_score"] <= 1.0 for p in watched["eval_curve"])
    assert plain["eval_curve"] == []


def test_dev_score_reads_dev_documents_never_test(monkeypatch):
    from bench.tasks.math_mini import MathMini

    def no_test(self):
        raise AssertionError("test documents read during training")

    spec = _spec(steps=2, dev=DevConfig(eval_every=1, batches=1, score=True, limit=2))
    recipe = TrialRecipe(spec, __import__("torch").device("cpu"))
    monkeypatch.setattr(MathMini, "eval_documents", no_test)
    recipe.setup()
    recipe.train()  # would raise if a point read test
    assert len(recipe.record.eval_curve) == 3


def _suite(**dev):
    return {
        "models": ["tiny"],
        "tasks": ["math-mini"],
        "methods": {"fo-adamw": {}},
        "train": {"steps": 10},
        "dev": dev,
    }


def test_eval_every_larger_than_steps_is_a_config_error():
    with pytest.raises(ConfigError, match="larger than train.steps"):
        expand(_suite(eval_every=11))


def test_dev_score_on_a_task_without_dev_documents_is_a_config_error():
    raw = _suite(eval_every=5, score=True) | {"tasks": ["humaneval"]}
    with pytest.raises(ConfigError, match="no dev documents"):
        expand(raw, check_sources=False)


def test_trial_ids_without_dev_settings_are_unchanged():
    # The id of a spec without a dev section is what it was before dev existed.
    assert _spec().trial_id.endswith("__" + _spec().trial_id.rsplit("__", 1)[1])
    assert _spec().trial_id != _spec(dev=DevConfig(eval_every=2)).trial_id
