"""One trial in-process (no Ray): record contract, measurements, methods lowering the loss."""

import math
from importlib.metadata import EntryPoint

import pytest
from helpers.specs import make_spec

from baselines.fo_adamw import FOAdamW
from bench import registry
from bench.method import StepStats
from bench.store import REQUIRED_FIELDS
from bench.train.recipe import run_trial


def _spec(method, config=None, steps=20, train_examples=32):
    return make_spec(method, config, steps=steps, train_examples=train_examples, log_every=5)


def test_record_follows_the_contract():
    record = run_trial(_spec("fo-adamw", {"lr": 1e-3}, steps=10))
    assert record["status"] == "ok", record["error"]
    assert set(REQUIRED_FIELDS) <= set(record)
    assert record["steps"] == 10 and record["error"] is None
    assert [p["step"] for p in record["curve"]] == [5, 10]
    assert record["train_seconds"] > 0 and record["eval_seconds"] > 0
    assert record["passes"] == {"forward": 10, "backward": 10}
    mem = record["memory"]
    assert mem["kind"] == "weights_plus_added" and mem["device"] == "cpu"
    # Both figures on every device: weights plus what training added, and the addition.
    assert record["peak_memory_bytes"] == mem["peak_with_weights_bytes"]
    assert mem["peak_with_weights_bytes"] == mem["weights_bytes"] + mem["added_bytes"]
    assert mem["weights_bytes"] > 0 and mem["added_bytes"] >= 0
    assert 0.0 <= record["score"] <= 1.0
    assert "exact_match,flexible-extract" in record["metrics"]
    assert record["config"]["method"] == "fo-adamw"
    assert record["environment"]["packages"]["torch"]


@pytest.mark.parametrize(
    "method, config, steps",
    [("fo-adamw", {"lr": 1e-3}, 30), ("mezo", {"lr": 2e-3, "eps": 1e-3}, 60)],
)
def test_methods_lower_the_training_loss(method, config, steps):
    # One fixed batch of 4: the random-init tiny model sits at ln(vocab), and ZO needs
    # a steady objective to make visible progress in a few dozen steps.
    record = run_trial(_spec(method, config, steps=steps, train_examples=4))
    assert record["status"] == "ok", record["error"]
    first, last = record["curve"][0]["loss"], record["curve"][-1]["loss"]
    assert last < first - 0.05, record["curve"]


class _NaNAfterTwoSteps(FOAdamW):
    def step(self, batch, step):
        stats = super().step(batch, step)
        loss = float("nan") if step >= 2 else stats.loss
        return StepStats(loss, stats.forward_passes, stats.backward_passes)


def test_divergence_is_recorded_as_failed(monkeypatch):
    eps = dict(registry._entry_points())
    eps["nan-method"] = EntryPoint("nan-method", f"{__name__}:_NaNAfterTwoSteps", registry.GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: eps)
    record = run_trial(_spec("nan-method", steps=20))
    assert record["status"] == "failed"
    assert "DivergenceError: training loss is nan at step 2" in record["error"]
    assert record["score"] is None


def test_none_does_not_train():
    record = run_trial(_spec("none"))
    assert record["status"] == "ok"
    assert record["steps"] == 0 and record["curve"] == [] and math.isfinite(record["score"])
