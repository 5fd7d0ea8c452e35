"""`zo-adam`: ZO-Adam, as ZO-Bench defines it.

ZO-Bench (Zhang et al., ICML 2024, arXiv 2402.11592; code ZO-Bench/ZO-LLM, trainer
`zo_adam`) feeds MeZO's gradient estimate g z to PyTorch's Adam:

    g = (L(theta + eps z) - L(theta - eps z)) / (2 eps)     # the projected gradient
    Adam step (torch.optim.Adam) with gradient g z

Adam's per-coordinate normalisation undoes the scale of g z, so a step moves every
weight by about lr whatever the size of the loss difference.

State and memory: Adam keeps two moment buffers per weight tensor (exp_avg, exp_avg_sq),
two extra copies of the weights, for the whole run. This is why ZO-Bench calls ZO-Adam
"not memory-efficient": on a 13B model in fp16 that is 52 GB on top of MeZO's footprint.
The gradient estimate g z is never held for the whole model: hizfo.zo's per-tensor z
iterator (SPSA.tensor_z) gives one tensor's z at a time, which becomes that tensor's
`.grad` for one Adam step (one torch.optim.Adam per tensor) and is freed before the next
tensor's, as ZO-Bench's loop does (it redraws z tensor by tensor with the global RNG).
Peak memory is therefore weights + 2 copies + one tensor. Adam runs with foreach=False,
so its temporaries are per tensor too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bench.method import Batch, StepStats, TrainContext
from hizfo.schedule import check_schedule
from hizfo.zo import SPSAConfig, ZOPrologue, default_no_decay

__all__ = ["ZOAdam", "ZOAdamConfig"]


@dataclass
class ZOAdamConfig:
    """ZO-Adam.

    Attributes:
        lr: Adam's learning rate. 1e-6: ZO-Bench grid-searches 1e-5 .. 1e-8 for full
            fine-tuning; an Adam step moves every weight by about lr, so 1e-6 over a few
            hundred steps is a small, safe move. Sweep it.
        eps: SPSA perturbation scale. 1e-3, MeZO's and ZO-Bench's default.
        betas: Adam's moment coefficients; PyTorch's defaults (0.9, 0.999), which ZO-Bench
            uses (it builds torch.optim.Adam with lr only).
        adam_eps: Adam's denominator term; PyTorch's default 1e-8, as ZO-Bench.
        weight_decay: Adam's L2 term, not on biases and norm weights (MeZO's rule). 0, as
            in ZO-Bench (its Adam gets no weight decay).
        schedule: "constant" (ZO-Bench asserts a constant schedule), "linear" or "cosine"
            decay to 0 (hizfo.schedule, the schedule every method uses).
        warmup_steps: linear warmup steps of the LR (0: none).
    """

    lr: float = 1e-6
    eps: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        check_schedule(self.schedule, self.warmup_steps, owner="ZOAdamConfig")
        if self.eps <= 0 or self.adam_eps <= 0 or self.weight_decay < 0:
            raise ValueError("eps and adam_eps must be > 0 and weight_decay >= 0")


class ZOAdam:
    config_class: ClassVar[type] = ZOAdamConfig
    trains: ClassVar[bool] = True
    # Method traits (bench.method.MethodTraits): two forwards per step, no backward.
    step_passes: ClassVar[tuple[float, float]] = (2.0, 0.0)
    display_order: ClassVar[int] = 70

    def __init__(self, config: ZOAdamConfig) -> None:
        self.config = config

    def setup(self, model: torch.nn.Module, ctx: TrainContext) -> torch.nn.Module:
        self.model, self.ctx = model, ctx
        c = self.config
        # No autograd graph ever (.grad is written by hand); dropout off, as MeZO.
        self.zo = ZOPrologue.for_run(model, ctx, c, SPSAConfig(eps=c.eps))
        self.named, self.spsa = self.zo.named, self.zo.spsa
        # One Adam per tensor, so a tensor steps as soon as its g z exists (tensor_z) and
        # the estimate is never held for the whole model; Adam's update of a tensor does
        # not depend on the others, so this is torch.optim.Adam over all of them.
        self.optimizers = {
            n: torch.optim.Adam(
                [p],
                lr=c.lr,
                betas=c.betas,
                eps=c.adam_eps,
                weight_decay=0.0 if default_no_decay(n, p) else c.weight_decay,
                foreach=False,
            )
            for n, p in self.named
        }
        return model

    @torch.no_grad()
    def step(self, batch: Batch, step: int) -> StepStats:
        lr, seed = self.zo.step_args(step)
        # Restored to theta before Adam steps.
        probe = self.spsa.probe(lambda: self.ctx.loss_fn(self.model, batch), seed)
        g = probe.projected_grad
        for name, p, z in self.spsa.tensor_z(seed):
            p.grad = z.mul_(g)  # this tensor's gradient estimate g z
            optimizer = self.optimizers[name]
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            p.grad = None
        return StepStats(
            loss=probe.loss,
            forward_passes=2,
            backward_passes=0,
            extra={"projected_grad": g},
        )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.named]

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": {n: o.state_dict() for n, o in self.optimizers.items()}}

    def summary(self) -> dict[str, Any]:
        numel = self.spsa.numel
        # exp_avg and exp_avg_sq per weight; the gradient estimate is one tensor at a time
        return {"trainable_parameters": numel, "zo_parameters": numel, "state_numel": 2 * numel}
