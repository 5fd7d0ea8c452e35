"""`fo-adamw`: full fine-tuning with AdamW, the first-order reference of every table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bench.method import Batch, StepStats, TrainContext
from hizfo.adamw import AdamWConfig, build_adamw, clip_gradients, set_lr


@dataclass
class FOAdamWConfig(AdamWConfig):
    """Full-parameter AdamW: the shared first-order set-up (hizfo.adamw.AdamWConfig: lr,
    betas, eps, weight_decay with no decay on biases and norm weights, schedule,
    warmup_steps, max_grad_norm; documented there), the same one LoRA's adapters and
    Hi-ZFO's FO tensors use, plus:

    Attributes:
        grad_accumulation: micro-batches per step; each trial batch is split into this
            many equal parts (memory for activations drops accordingly).
        train_mode: run the model in train mode (dropout on, for models that have it). Off
            by default, as for MeZO and Hi-ZFO, whose two SPSA probes must see the same
            function: so a difference between methods is never a dropout difference.
    """

    grad_accumulation: int = 1
    train_mode: bool = False


class FOAdamW:
    config_class: ClassVar[type] = FOAdamWConfig
    trains: ClassVar[bool] = True
    # Method traits (bench.method.MethodTraits): one forward and one full backward per
    # step; the reference every other method is compared and timed against.
    step_passes: ClassVar[tuple[float, float]] = (1.0, 1.0)
    is_reference: ClassVar[bool] = True
    display_order: ClassVar[int] = 10
    # Every parameter first-order; perf: its step and peak against a forward and
    # inference (no target: the floor of an FO step is its own forward + backward).
    fo_fraction: ClassVar[float] = 1.0
    perf_ratios: ClassVar[dict[str, dict[str, float]]] = {
        "step_over_forward": {},
        "peak_over_inference_peak": {},
    }
    # On several devices: sharded with FSDP2 (bench/train/distributed.py).
    sharding: ClassVar[str] = "fsdp2"

    def __init__(self, config: FOAdamWConfig) -> None:
        if config.grad_accumulation < 1:
            raise ValueError("grad_accumulation must be >= 1")
        self.config = config

    def setup(self, model: torch.nn.Module, ctx: TrainContext) -> torch.nn.Module:
        self.model, self.ctx = model, ctx
        model.requires_grad_(True)
        model.train(self.config.train_mode)
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named]
        self._build_optimizer()
        return model

    def _build_optimizer(self) -> None:
        """The shared AdamW over self.named (LoRA reuses it for its adapters)."""
        self.optimizer = build_adamw(self.named, self.config)

    def step(self, batch: Batch, step: int) -> StepStats:
        k = self.config.grad_accumulation
        n = batch["input_ids"].shape[0]
        if n % k:
            raise ValueError(f"batch size {n} is not divisible by grad_accumulation {k}")
        set_lr(self.optimizer, self.config, step, self.ctx.total_steps)
        total = 0.0
        for i in range(k):
            micro = {key: v[i * n // k : (i + 1) * n // k] for key, v in batch.items()}
            loss = self.ctx.loss_fn(self.model, micro) / k
            loss.backward()
            total += loss.item()
        clip_gradients(self.params, self.config)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepStats(loss=total, forward_passes=k, backward_passes=k)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self.params

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from state_dict() after setup() (bench/train/checkpoint.py)."""
        self.optimizer.load_state_dict(state["optimizer"])

    def summary(self) -> dict[str, Any]:
        return {"trainable_parameters": sum(p.numel() for p in self.params)}
