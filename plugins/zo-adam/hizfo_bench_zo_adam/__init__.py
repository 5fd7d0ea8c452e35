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
On top of that, this implementation keeps a third copy, the gradient estimate g z in
`.grad`: hizfo.zo's public API draws z for all tensors in one pass, so g z is written for
every tensor before Adam steps. ZO-Bench's loop sets one tensor's gradient at a time (it
redraws z tensor by tensor with the global RNG), so its transient cost is one tensor.
Peak memory here is therefore weights + 3 copies; a per-tensor z iterator in hizfo.zo
would bring it to weights + 2 copies + one tensor. Adam runs with foreach=False, so its
temporaries are per tensor too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bench.method import Batch, StepStats, TrainContext
from hizfo.schedule import check_schedule, scheduled_lr
from hizfo.zo import SPSA, SPSAConfig, default_no_decay, derive_seed

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

    def __init__(self, config: ZOAdamConfig) -> None:
        self.config = config

    def setup(self, model: torch.nn.Module, ctx: TrainContext) -> torch.nn.Module:
        self.model, self.ctx = model, ctx
        c = self.config
        # No autograd graph ever (.grad is written by hand); dropout off, as MeZO.
        model.requires_grad_(False)
        model.eval()
        seen: set[int] = set()  # tied weights once, in model order: the order that defines z
        self.named = [
            (n, p) for n, p in model.named_parameters() if not (id(p) in seen or seen.add(id(p)))
        ]
        self.spsa = SPSA(self.named, SPSAConfig(eps=c.eps))
        self.grads = [torch.zeros_like(p) for _, p in self.named]
        # eps = 1, so perturb_(seed, g) adds exactly g z to every (zeroed) gradient.
        self.grad_z = SPSA(
            [(n, grad) for (n, _), grad in zip(self.named, self.grads, strict=True)],
            SPSAConfig(eps=1.0),
        )
        decay = [p for n, p in self.named if not default_no_decay(n, p)]
        no_decay = [p for n, p in self.named if default_no_decay(n, p)]
        self.optimizer = torch.optim.Adam(
            [
                {"params": decay, "weight_decay": c.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=c.lr,
            betas=c.betas,
            eps=c.adam_eps,
            foreach=False,
        )
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
        self.spsa.perturb_(seed, 1.0)  # back to theta before Adam steps
        g = (loss_plus - loss_minus) / (2 * c.eps)

        for (_, p), grad in zip(self.named, self.grads, strict=True):
            grad.zero_()
            p.grad = grad  # (re)attached each step, whatever else cleared .grad
        self.grad_z.perturb_(seed, g)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        return StepStats(
            loss=(loss_plus + loss_minus) / 2,
            forward_passes=2,
            backward_passes=0,
            extra={"projected_grad": g},
        )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.named]

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def summary(self) -> dict[str, Any]:
        numel = self.spsa.numel
        # exp_avg and exp_avg_sq per weight, plus the gradient estimate in .grad
        return {"trainable_parameters": numel, "zo_parameters": numel, "state_numel": 3 * numel}
