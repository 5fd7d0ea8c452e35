"""Precision modes through a trial: fp32 master weights under bf16-mixed, a warning for pure bf16."""

from __future__ import annotations

import pytest
import torch

from bench.config import ConfigError
from bench.spec import EvalConfig, TrainConfig, TrialSpec
from bench.suite import expand
from bench.train.precision import resolve
from bench.train.recipe import TrialRecipe


def _recipe(method, config, **train):
    spec = TrialSpec(
        method=method,
        task="math-mini",
        model="tiny",
        seed=0,
        method_config=config,
        train=TrainConfig(
            steps=3, batch_size=4, max_length=64, train_examples=16, log_every=1, **train
        ),
        eval=EvalConfig(limit=2, batch_size=2, max_gen_toks=4),
    )
    recipe = TrialRecipe(spec, torch.device("cpu"))
    recipe.setup()
    recipe.train()
    return recipe


def test_bfloat16_asks_for_mixed_precision_by_default():
    assert resolve(None, "bfloat16").name == "bf16-mixed"
    assert resolve(None, "float32").name == "fp32"
    assert resolve("bf16", "float32").warning
    # On a GPU the suites run bf16-mixed unless they say otherwise.
    assert resolve(None, "float32", "cuda").name == "bf16-mixed"
    assert resolve("fp32", "float32", "cuda").name == "fp32"


@pytest.mark.parametrize("method,config", [("fo-adamw", {"lr": 1e-3}), ("mezo", {"lr": 1e-3})])
def test_bf16_mixed_keeps_fp32_master_weights_and_computes_in_bf16(method, config):
    mixed = _recipe(method, config, dtype="bfloat16")
    assert all(p.dtype == torch.float32 for p in mixed.model.parameters())
    assert mixed.record.model_info["precision"] == "bf16-mixed"
    assert mixed.record.warnings is None
    fp32 = _recipe(method, config)
    # Same weights and data; the bf16 compute changes the losses in the low bits.
    a = [p["loss"] for p in mixed.record.curve]
    b = [p["loss"] for p in fp32.record.curve]
    assert a != b and a == pytest.approx(b, rel=0.05)


def test_pure_bf16_weights_carry_a_warning():
    pure = _recipe("fo-adamw", {"lr": 1e-3}, precision="bf16")
    assert all(p.dtype == torch.bfloat16 for p in pure.model.parameters())
    assert "bf16-mixed" in pure.record.warnings[0]


def test_unknown_precision_is_a_config_error():
    raw = {
        "models": ["tiny"],
        "tasks": ["math-mini"],
        "methods": ["fo-adamw"],
        "train": {"precision": "fp8"},
    }
    with pytest.raises(
        ConfigError, match=r"\.precision: .fp8. is not allowed: must be one of fp32"
    ):
        expand(raw)
