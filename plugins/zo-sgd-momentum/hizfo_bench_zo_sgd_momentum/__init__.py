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

z is never stored for the whole model: the probe is hizfo.zo's (SPSA.probe), and the
update walks the tensors with SPSA.tensor_z, which gives one tensor's z at a time (the
same numbers the probe perturbed with); each buffer and weight is updated as its z
arrives. A step therefore draws z four times (perturb +eps, -2 eps, restore, update), one
more than MeZO's fused three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bench.method import Batch, StepStats, TrainContext
from hizfo.schedule import check_schedule
from hizfo.zo import SPSAConfig, ZOPrologue, default_no_decay

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
    # Method traits (bench.method.MethodTraits): two forwards per step, no backward.
    step_passes: ClassVar[tuple[float, float]] = (2.0, 0.0)
    display_order: ClassVar[int] = 60

    def __init__(self, config: ZOSGDMomentumConfig) -> None:
        self.config = config

    def setup(self, model: torch.nn.Module, ctx: TrainContext) -> torch.nn.Module:
        self.model, self.ctx = model, ctx
        c = self.config
        # No autograd graph ever; dropout off so L+ and L- see the same function (as MeZO).
        self.zo = ZOPrologue.for_run(model, ctx, c, SPSAConfig(eps=c.eps))
        self.named, self.spsa = self.zo.named, self.zo.spsa
        self.buffers = {n: torch.zeros_like(p) for n, p in self.named}
        self.decay = {n: not default_no_decay(n, p) for n, p in self.named}
        return model

    @torch.no_grad()
    def step(self, batch: Batch, step: int) -> StepStats:
        c = self.config
        lr, seed = self.zo.step_args(step)
        # Restored to theta: decay and the update act on it.
        probe = self.spsa.probe(lambda: self.ctx.loss_fn(self.model, batch), seed)
        g = probe.projected_grad
        for name, p, z in self.spsa.tensor_z(seed):
            b = self.buffers[name]
            b.mul_(c.momentum)
            if self.decay[name] and c.weight_decay:
                b.add_(p, alpha=c.weight_decay)
            b.add_(z, alpha=g)
            p.add_(b, alpha=-lr)
        return StepStats(
            loss=probe.loss,
            forward_passes=2,
            backward_passes=0,
            extra={"projected_grad": g},
        )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.named]

    def state_dict(self) -> dict[str, Any]:
        return {"momentum_buffers": dict(self.buffers)}

    def summary(self) -> dict[str, Any]:
        return {
            "trainable_parameters": self.spsa.numel,
            "zo_parameters": self.spsa.numel,
            "state_numel": sum(b.numel() for b in self.buffers.values()),  # one copy of the weights
        }
