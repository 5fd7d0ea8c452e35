"""`fo-adamw`: full fine-tuning with AdamW, the first-order reference of every table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bench.method import Batch, StepStats, TrainContext, linear_schedule


@dataclass
class FOAdamWConfig:
    """Full-parameter AdamW.

    Attributes:
        lr: peak learning rate. 1e-5 is the usual full fine-tuning rate for 100M-1B
            decoder models (MeZO's FT baseline grid is 1e-5..5e-5); the mini suite
            uses what a small sweep on the embedded model chose.
        weight_decay: decoupled weight decay (AdamW); 0 as in MeZO's FT baseline.
        betas: Adam moment coefficients (PyTorch defaults).
        warmup_steps: linear warmup from 0 to `lr`.
        schedule: "linear" (decay to 0 at the last step) or "constant" after warmup.
        max_grad_norm: clip the global gradient norm; None disables clipping.
        grad_accumulation: micro-batches per step; each trial batch is split into this
            many equal parts (memory for activations drops accordingly).
    """

    lr: float = 1e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    schedule: str = "linear"
    max_grad_norm: float | None = 1.0
    grad_accumulation: int = 1


class FOAdamW:
    config_class: ClassVar[type] = FOAdamWConfig
    trains: ClassVar[bool] = True

    def __init__(self, config: FOAdamWConfig) -> None:
        if config.grad_accumulation < 1:
            raise ValueError("grad_accumulation must be >= 1")
        self.config = config

    def setup(self, model: torch.nn.Module, ctx: TrainContext) -> torch.nn.Module:
        self.model, self.ctx = model, ctx
        model.requires_grad_(True)
        model.train()
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._build_optimizer()
        return model

    def _build_optimizer(self) -> None:
        """AdamW over self.params with warmup and decay; LoRA reuses it for its adapters."""
        c = self.config
        self.optimizer = torch.optim.AdamW(
            self.params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: linear_schedule(s, self.ctx.total_steps, c.warmup_steps, c.schedule),
        )

    def step(self, batch: Batch, step: int) -> StepStats:
        k = self.config.grad_accumulation
        n = batch["input_ids"].shape[0]
        if n % k:
            raise ValueError(f"batch size {n} is not divisible by grad_accumulation {k}")
        total = 0.0
        for i in range(k):
            micro = {key: v[i * n // k : (i + 1) * n // k] for key, v in batch.items()}
            loss = self.ctx.loss_fn(self.model, micro) / k
            loss.backward()
            total += loss.item()
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepStats(loss=total, forward_passes=k, backward_passes=k)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self.params

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def summary(self) -> dict[str, Any]:
        return {"trainable_parameters": sum(p.numel() for p in self.params)}
