"""The method contract's declared parts (bench/method.py): StepStats' passes are required
and checked, and every built-in method, shipped plugin and the example plugin declares
the traits the scheduler and the report read (MethodTraits), consistent with what its
step reports."""

from __future__ import annotations

import sys

import pytest
import torch
from helpers import REPO
from helpers.tiny import VOCAB, tiny_llama

from bench.method import MethodTraits, StepStats, TrainContext, causal_lm_loss, method_traits
from bench.registry import MethodError, load_method

BUILT_IN = ("none", "fo-adamw", "mezo", "lora", "hizfo")
PLUGINS = ("addax", "zo-sgd-momentum", "zo-adam")
# Methods whose step runs its passes over the whole batch, so StepStats' forward count is
# the declared one (addax splits the batch; lora and hizfo run partial backwards).
WHOLE_BATCH = ("fo-adamw", "mezo", "hizfo", "zo-sgd-momentum", "zo-adam", "zo-signsgd")


def _cls(name: str) -> type:
    if name == "zo-signsgd":
        sys.path.insert(0, str(REPO / "examples" / "zo-signsgd"))
        try:
            from zo_signsgd import ZOSignSGD
        finally:
            sys.path.pop(0)
        return ZOSignSGD
    try:
        return load_method(name)
    except MethodError as e:  # a plugin not installed outside the project venv
        pytest.skip(str(e))


def test_step_stats_passes_are_required_and_checked():
    with pytest.raises(TypeError, match="forward_passes"):
        StepStats(loss=1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="backward_passes"):
        StepStats(loss=1.0, forward_passes=2)  # type: ignore[call-arg]
    for bad in (-1, 1.5, True, None):
        with pytest.raises(ValueError, match="StepStats.forward_passes must be an int >= 0"):
            StepStats(loss=1.0, forward_passes=bad, backward_passes=0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="StepStats.backward_passes must be an int >= 0"):
            StepStats(loss=1.0, forward_passes=1, backward_passes=bad)  # type: ignore[arg-type]
    assert StepStats(loss=1.0, forward_passes=0, backward_passes=0).extra == {}


def test_traits_default_for_a_method_that_declares_none():
    class Bare:
        trains = True

    class Frozen:
        trains = False
        step_passes = (2.0, 1.0)

    assert method_traits(Bare) == MethodTraits()
    assert MethodTraits().step_cost == 3.0  # an FO step: a forward and a 2-forward backward
    assert method_traits(Frozen).step_passes == (0.0, 0.0)

    class Broken:
        step_passes = (1.0,)

    with pytest.raises(ValueError, match="step_passes"):
        method_traits(Broken)


def test_every_method_declares_its_traits():
    names = (*BUILT_IN, *PLUGINS, "zo-signsgd")
    classes = {name: _cls(name) for name in names}
    for name, cls in classes.items():
        for attr in ("step_passes", "display_order"):
            assert attr in vars(cls), f"{name} does not declare {attr}"
    traits = {name: method_traits(cls) for name, cls in classes.items()}
    assert [n for n, t in traits.items() if t.is_reference] == ["fo-adamw"]
    # Built-in rows first, in the tables' order, then the plugins.
    orders = [traits[n].display_order for n in names]
    assert orders[: len(BUILT_IN)] == sorted(orders[: len(BUILT_IN)])
    assert max(orders[: len(BUILT_IN)]) < min(orders[len(BUILT_IN) :])
    assert traits["none"].step_cost == 0.0
    assert traits["mezo"].step_cost < traits["fo-adamw"].step_cost < traits["hizfo"].step_cost


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(0, VOCAB, (4, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[2:, 8:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


@pytest.mark.parametrize("name", [*BUILT_IN[1:], *PLUGINS, "zo-signsgd"])
def test_declared_passes_match_what_a_default_step_reports(name):
    cls = _cls(name)
    method = cls(cls.config_class())
    batch = _batch()
    ctx = TrainContext(
        total_steps=1,
        seed=0,
        device=torch.device("cpu"),
        loss_fn=causal_lm_loss,
        sample_batches=lambda n: [batch] * n,
    )
    method.setup(tiny_llama(), ctx)
    stats = method.step(batch, 0)
    forward, backward = method_traits(cls).step_passes
    if name in WHOLE_BATCH:
        assert stats.forward_passes == forward
    assert (stats.backward_passes > 0) == (backward > 0)
