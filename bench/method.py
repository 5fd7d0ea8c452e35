"""The method contract: how a fine-tuning method plugs into a trial.

A method is a class with a config dataclass. The trial loop owns data, timing,
memory and evaluation; the method owns only how parameters change::

    class MyMethod:
        config_class = MyConfig            # a dataclass; every field documented
        trains = True                      # False for methods that never step (zero-shot)

        def __init__(self, config: MyConfig) -> None: ...
        def setup(self, model, ctx: TrainContext) -> torch.nn.Module: ...
        def step(self, batch: Batch, step: int) -> StepStats: ...
        def trainable_parameters(self) -> list[torch.nn.Parameter]: ...
        def state_dict(self) -> dict: ...
        def summary(self) -> dict: ...     # JSON-serialisable extras for the trial file

Register it under the entry-point group ``hizfo_bench.methods``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

Batch = dict[str, torch.Tensor]  # input_ids, attention_mask, labels (-100 on prompt/pad)


def causal_lm_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy over target tokens (labels != -100)."""
    return model(**batch, use_cache=False).loss


@dataclass
class StepStats:
    """What one optimisation step reports back to the trial loop."""

    loss: float
    forward_passes: int = 1
    backward_passes: int = 0
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainContext:
    """What a method may know about the run when it sets up."""

    total_steps: int
    seed: int
    device: torch.device
    loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor] = causal_lm_loss
    # Draws `n` training batches (for importance profiling); never the batches of step().
    sample_batches: Callable[[int], list[Batch]] = lambda n: []


@runtime_checkable
class Method(Protocol):
    config_class: ClassVar[type]
    trains: ClassVar[bool]

    def __init__(self, config: Any) -> None: ...

    def setup(self, model: torch.nn.Module, ctx: TrainContext) -> torch.nn.Module: ...

    def step(self, batch: Batch, step: int) -> StepStats: ...

    def trainable_parameters(self) -> list[torch.nn.Parameter]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def summary(self) -> dict[str, Any]: ...


REQUIRED_ATTRIBUTES = (
    "config_class",
    "trains",
    "setup",
    "step",
    "trainable_parameters",
    "state_dict",
    "summary",
)
