"""One learning-rate schedule for every method (hizfo.schedule).

Every built-in method, every shipped plugin and the example plugin take their learning
rate from hizfo.schedule.lr_multiplier, and every config rejects an unknown schedule when
it is built (so a suite naming one fails validation, not a trial at step 0)."""

from __future__ import annotations

import sys

import pytest
import torch
from helpers import REPO
from helpers.tiny import VOCAB, tiny_llama

import hizfo.schedule
from bench.method import TrainContext, causal_lm_loss
from bench.registry import MethodError, load_method

STEPS = 3
# method -> (config, schedule field, warmup field)
CASES = {
    "mezo": ({"lr": 1e-2}, "schedule", "warmup_steps"),
    "fo-adamw": ({"lr": 1e-2}, "schedule", "warmup_steps"),
    "lora": ({"lr": 1e-2}, "schedule", "warmup_steps"),
    "hizfo-fo": ({"rho": 1.0, "fo_lr": 1e-2}, "fo_schedule", "fo_warmup_steps"),
    "hizfo-zo": ({"rho": 0.0, "zo_lr": 1e-2}, "zo_schedule", "zo_warmup_steps"),
    "zo-adam": ({"lr": 1e-3}, "schedule", "warmup_steps"),
    "zo-sgd-momentum": ({"lr": 1e-2}, "schedule", "warmup_steps"),
    "addax": ({"lr": 1e-2}, "schedule", "warmup_steps"),
    "zo-signsgd": ({"lr": 1e-3}, "schedule", "warmup_steps"),
}


def _method_class(name: str) -> type:
    if name == "zo-signsgd":
        sys.path.insert(0, str(REPO / "examples" / "zo-signsgd"))
        try:
            from zo_signsgd import ZOSignSGD
        finally:
            sys.path.pop(0)
        return ZOSignSGD
    try:
        return load_method(name.removesuffix("-fo").removesuffix("-zo"))
    except MethodError as e:  # a plugin not installed outside the project venv
        pytest.skip(str(e))


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(0, VOCAB, (4, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[2:, 8:] = 0  # two shorter examples, so addax routes some to each part
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _run(name: str, **overrides) -> float:
    """Train STEPS steps; the largest change of a trained weight."""
    cls = _method_class(name)
    config, _, _ = CASES[name]
    method = cls(cls.config_class(**config, **overrides))
    ctx = TrainContext(
        total_steps=STEPS, seed=0, device=torch.device("cpu"), loss_fn=causal_lm_loss
    )
    method.setup(tiny_llama(), ctx)
    params = method.trainable_parameters()
    before = [p.detach().clone() for p in params]
    for step in range(STEPS):
        method.step(_batch(), step)
    return max(float((p.detach() - b).abs().max()) for p, b in zip(params, before, strict=True))


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_config_rejects_an_unknown_schedule(name):
    cls = _method_class(name)
    config, schedule, warmup = CASES[name]
    with pytest.raises(ValueError, match="'cosin'"):
        cls.config_class(**config, **{schedule: "cosin"})
    with pytest.raises(ValueError, match="warmup"):
        cls.config_class(**config, **{warmup: -1})


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_method_takes_its_lr_from_the_one_schedule(name, monkeypatch):
    """The method asks hizfo.schedule for each step's multiplier, and applies it: with the
    multiplier forced to 0 nothing moves, with the real cosine schedule the model trains."""
    _, schedule, warmup = CASES[name]
    settings = {schedule: "cosine", warmup: 1}
    assert _run(name, **settings) > 1e-4  # the real schedule trains

    calls: list[tuple] = []

    def frozen(step, total, warmup_steps=0, kind="linear"):
        calls.append((step, total, warmup_steps, kind))
        return 0.0

    monkeypatch.setattr(hizfo.schedule, "lr_multiplier", frozen)
    assert _run(name, **settings) < 1e-6  # SPSA's perturb and restore round to ~1e-9
    assert {(t, STEPS, 1, "cosine") for t in range(STEPS)} <= set(calls)
