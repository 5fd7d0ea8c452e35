"""`zo-signsgd`: zeroth-order sign-SGD, an example hizfo-bench method plugin.

ZO-Bench's ZO-SGD-Sign (Zhang et al., ICML 2024, arXiv 2402.11592; `zo_sign_opt` in
its code): the MeZO step with the projected gradient g replaced by its sign,

    theta -= lr * sign(g) * z,

so the step length no longer depends on the size of the loss difference, only on lr.

Built from hizfo.zo's public primitives (probe and the fused restore_and_update_), so
z is regenerated from a per-step seed, perturbation is in place through the estimator's
own generator, and the global RNG is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bench.method import Batch, StepStats, TrainContext
from hizfo.schedule import check_schedule
from hizfo.zo import SPSAConfig, ZOPrologue


@dataclass
class ZOSignSGDConfig:
    """ZO-SignSGD.

    Attributes:
        lr: learning rate; every coordinate moves by lr * |z_i| per step, whatever the
            loss difference, so it is not comparable to MeZO's lr. 1e-6 is a starting
            point for a 100M+ model; sweep it.
        eps: perturbation scale (1e-3, as MeZO and ZO-Bench).
        q: random directions per step; their signed updates are averaged. 1 as in
            ZO-Bench (each direction costs two forward passes).
        weight_decay: MeZO-style decay, not on biases and norm weights.
        schedule: "constant", "linear" or "cosine" decay to 0 (hizfo.schedule, the
            schedule every method uses).
        warmup_steps: linear warmup steps of the LR (0: none).
    """

    lr: float = 1e-6
    eps: float = 1e-3
    q: int = 1
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        check_schedule(self.schedule, self.warmup_steps, owner="ZOSignSGDConfig")


class ZOSignSGD:
    config_class: ClassVar[type] = ZOSignSGDConfig
    trains: ClassVar[bool] = True
    # Method traits (bench.method.MethodTraits): two forwards per step (q = 1), no backward.
    step_passes: ClassVar[tuple[float, float]] = (2.0, 0.0)
    display_order: ClassVar[int] = 90

    def __init__(self, config: ZOSignSGDConfig) -> None:
        self.config = config

    def setup(self, model: torch.nn.Module, ctx: TrainContext) -> torch.nn.Module:
        self.model, self.ctx = model, ctx
        c = self.config
        # Inference memory only, and no dropout, so L+ and L- see the same function.
        spsa_config = SPSAConfig(eps=c.eps, q=c.q, weight_decay=c.weight_decay)
        self.zo = ZOPrologue.for_run(model, ctx, c, spsa_config)
        self.spsa = self.zo.spsa
        return model

    @torch.no_grad()
    def step(self, batch: Batch, step: int) -> StepStats:
        c = self.config
        lr, seed = self.zo.step_args(step)
        losses = []
        signs = []
        for i in range(c.q):
            # Back to theta before probing the next direction; the last stays at -eps z.
            probe = self.spsa.probe(
                lambda: self.ctx.loss_fn(self.model, batch),
                self.spsa.perturbation_seed(seed, i),
                restore=i < c.q - 1,
            )
            losses.append(probe.loss)
            signs.append(
                float((probe.loss_plus > probe.loss_minus) - (probe.loss_plus < probe.loss_minus))
            )
        # The last direction is still applied at -eps z: one fused pass restores it and
        # updates (with decay); earlier directions only update.
        last = self.spsa.perturbation_seed(seed, c.q - 1)
        self.spsa.restore_and_update_(last, signs[-1] / c.q, lr)
        for i in range(c.q - 1):
            self.spsa.restore_and_update_(
                self.spsa.perturbation_seed(seed, i),
                signs[i] / c.q,
                lr,
                restore_scale=0.0,
                apply_weight_decay=False,
            )
        return StepStats(
            loss=sum(losses) / c.q,
            forward_passes=2 * c.q,
            backward_passes=0,
            extra={"sign": signs[0]},
        )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self.zo.parameters

    def state_dict(self) -> dict[str, Any]:
        return {}  # stateless beyond the seed: the trajectory is (seed, step, sign)

    def summary(self) -> dict[str, Any]:
        return self.zo.summary()
