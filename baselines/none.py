"""`none`: the untuned model, scored as it is -- the zero-shot row of every table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bench.method import Batch, StepStats, TrainContext


@dataclass
class NoTrainingConfig:
    """No settings: the model is evaluated exactly as loaded."""


class NoTraining:
    config_class: ClassVar[type] = NoTrainingConfig
    trains: ClassVar[bool] = False
    # Method traits (bench.method.MethodTraits): the zero-shot row comes first.
    step_passes: ClassVar[tuple[float, float]] = (0.0, 0.0)
    display_order: ClassVar[int] = 0

    def __init__(self, config: NoTrainingConfig) -> None:
        self.config = config

    def setup(self, model: torch.nn.Module, ctx: TrainContext) -> torch.nn.Module:
        model.requires_grad_(False)
        return model

    def step(self, batch: Batch, step: int) -> StepStats:
        raise RuntimeError("the 'none' method does not train")

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def summary(self) -> dict[str, Any]:
        return {"trainable_parameters": 0}
