"""`zo-sgd-momentum`: ZO-SGD with heavy-ball momentum, as ZO-Bench's ZO-SGD-MMT.

ZO-Bench (Zhang et al., ICML 2024, arXiv 2402.11592; code ZO-Bench/ZO-LLM, trainer
`zo_sgd` with `--momentum 0.9`) feeds MeZO's gradient estimate to PyTorch's SGD with
momentum:

    g = (L(theta + eps z) - L(theta - eps z)) / (2 eps)     # the projected gradient
    b = mu b + (g z + wd theta)                              # torch.optim.SGD, dampening 0
    theta -= lr b

With mu = 0 this is exactly MeZO's update theta -= lr (g z + wd theta).

State and memory: one momentum buffer per weight tensor, i.e. one extra copy of the
weights (540 MB for SmolLM2-135M in fp32), allocated in setup() and kept for the whole run.
That is the price of momentum in ZO: MeZO keeps nothing but the seed, so a 13B model's
MeZO run fits where ZO-SGD-MMT needs another 26 GB (fp16).

z is never stored: the buffer gets g z through an SPSA over the buffers themselves
(hizfo.zo), which draws the same z as the SPSA over the weights because it sees tensors of
the same shapes, order, devices and dtypes. A step therefore draws z four times (perturb
+eps, -2 eps, restore, buffer update), one more than MeZO's fused three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bench.method import Batch, StepStats, TrainContext
from hizfo.schedule import check_schedule, scheduled_lr
from hizfo.zo import SPSA, SPSAConfig, default_no_decay, derive_seed

__all__ = ["ZOSGDMomentum", "ZOSGDMomentumConfig"]


@dataclass
class ZOSGDMomentumConfig:
    """ZO-SGD-MMT.

    Attributes:
        lr: learning rate. 1e-6, MeZO's full-parameter rate and the middle of ZO-Bench's
            grid (1e-5 .. 1e-8); with momentum 0.9 the steady-state step is about 10x a
            MeZO step at the same lr, so sweep it.
        eps: perturbation scale. 1e-3, MeZO's and ZO-Bench's default (grid 1e-2 .. 1e-4).
        momentum: heavy-ball coefficient mu (torch.optim.SGD semantics: no dampening, no
            Nesterov). 0.9, the value of every ZO-Bench ZO-SGD-MMT sweep. 0 gives MeZO.
        weight_decay: L2 term added to the estimate before momentum, as torch.optim.SGD,
            not on biases and norm weights (MeZO's rule). 0, as in ZO-Bench's sweeps.
        schedule: "constant" (ZO-Bench asserts a constant schedule), "linear" or "cosine"
            decay to 0 (hizfo.schedule, the schedule every method uses).
        warmup_steps: linear warmup steps of the LR (0: none).
    """

    lr: float = 1e-6
    eps: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        check_schedule(self.schedule, self.warmup_steps, owner="ZOSGDMomentumConfig")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.eps <= 0 or self.weight_decay < 0:
            raise ValueError("eps must be > 0 and weight_decay >= 0")


class ZOSGDMomentum:
    config_class: ClassVar[type] = ZOSGDMomentumConfig
    trains: ClassVar[bool] = True

    def __init__(self, config: ZOSGDMomentumConfig) -> None:
        self.config = config

    def setup(self, model: torch.nn.Module, ctx: TrainContext) -> torch.nn.Module:
        self.model, self.ctx = model, ctx
        # No autograd graph ever; dropout off so L+ and L- see the same function (as MeZO).
        model.requires_grad_(False)
        model.eval()
        seen: set[int] = set()  # tied weights once, in model order: the order that defines z
        self.named = [
            (n, p) for n, p in model.named_parameters() if not (id(p) in seen or seen.add(id(p)))
        ]
        self.spsa = SPSA(self.named, SPSAConfig(eps=self.config.eps))
        self.buffers = [torch.zeros_like(p) for _, p in self.named]
        # eps = 1, so perturb_(seed, g) adds exactly g z to every buffer.
        self.buffer_z = SPSA(
            [(n, b) for (n, _), b in zip(self.named, self.buffers, strict=True)],
            SPSAConfig(eps=1.0),
        )
        self.decay = [not default_no_decay(n, p) for n, p in self.named]
        return model

    @torch.no_grad()
    def step(self, batch: Batch, step: int) -> StepStats:
        c = self.config
        lr = scheduled_lr(c.lr, step, self.ctx.total_steps, c.schedule, c.warmup_steps)
        seed = derive_seed(self.ctx.seed, step)
        self.spsa.perturb_(seed, 1.0)
        loss_plus = float(self.ctx.loss_fn(self.model, batch))
        self.spsa.perturb_(seed, -2.0)
        loss_minus = float(self.ctx.loss_fn(self.model, batch))
        self.spsa.perturb_(seed, 1.0)  # back to theta: decay and the update act on it
        g = (loss_plus - loss_minus) / (2 * c.eps)

        for (_, p), b, decay in zip(self.named, self.buffers, self.decay, strict=True):
            b.mul_(c.momentum)
            if decay and c.weight_decay:
                b.add_(p, alpha=c.weight_decay)
        self.buffer_z.perturb_(seed, g)
        for (_, p), b in zip(self.named, self.buffers, strict=True):
            p.add_(b, alpha=-lr)
        return StepStats(
            loss=(loss_plus + loss_minus) / 2,
            forward_passes=2,
            backward_passes=0,
            extra={"projected_grad": g},
        )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.named]

    def state_dict(self) -> dict[str, Any]:
        return {
            "momentum_buffers": dict(zip((n for n, _ in self.named), self.buffers, strict=True))
        }

    def summary(self) -> dict[str, Any]:
        return {
            "trainable_parameters": self.spsa.numel,
            "zo_parameters": self.spsa.numel,
            "state_numel": sum(b.numel() for b in self.buffers),  # one copy of the weights
        }
