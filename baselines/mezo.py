"""`mezo`: MeZO (Malladi et al., 2023), full-parameter two-point SPSA with the seed trick.

The estimator itself lives in hizfo/zo.py and is shared with Hi-ZFO, so the two
methods differ only in which tensors get ZO updates. z is regenerated from a
per-step seed (never stored), perturbation is in place through the estimator's own
torch.Generator, and the restore and the update are fused into one pass.

Two opt-ins trade MeZO's defaults for speed where drawing z dominates the step (a CPU:
docs/performance.md): ``keep_z`` and ``distribution: rademacher``. Both are off by
default, so a default run is MeZO as published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from bench.method import Batch, StepStats, TrainContext
from hizfo.schedule import check_schedule, scheduled_lr
from hizfo.zo import DISTRIBUTIONS, SPSA, SPSAConfig, derive_seed


@dataclass
class MeZOConfig:
    """MeZO-SGD.

    Attributes:
        lr: learning rate. MeZO's published full-parameter rate for OPT-13B is 1e-6 or
            1e-7 (batch 16, eps 1e-3, 20k steps); the embedded 135M model trains for a
            few dozen to a few hundred steps here, so the mini suite uses the value a
            small sweep chose (see the defaults table in docs/methods.md).
        eps: perturbation scale; 1e-3 as in MeZO; > 0 (the projected gradient divides
            by 2 eps).
        q: perturbations per step (each costs two forward passes); MeZO uses 1.
        weight_decay: applied to every tensor but biases and norm weights, as in MeZO.
        schedule: "constant" (MeZO's default), "linear" or "cosine" decay to 0
            (hizfo.schedule, the schedule every method uses).
        warmup_steps: linear warmup steps of the LR (0: none).
        keep_z: keep z in memory for the step (hizfo.zo.SPSA keep_z). False (default,
            MeZO's seed trick): z is regenerated three times per step and nothing is
            stored. True: z is drawn once and kept, which costs one more copy of the ZO
            weights (the whole model here, e.g. 513 MiB for SmolLM2-135M in fp32), so
            MeZO's memory is no longer inference memory; the numbers drawn are the
            same, so updates agree with the default to rounding.
        distribution: "gaussian" (default, MeZO: z ~ N(0, I)) or "rademacher" (+-1
            entries, eight per generator call, much cheaper to draw on a CPU). Both have
            E[z z^T] = I, so the projected gradient stays an unbiased estimate for smooth
            losses (docs/hizfo.md); a different z, so runs differ from Gaussian runs.
    """

    lr: float = 1e-6
    eps: float = field(default=1e-3, metadata={"gt": 0})  # 0 divides by zero in SPSA
    q: int = 1
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    keep_z: bool = False
    distribution: str = "gaussian"

    def __post_init__(self) -> None:
        check_schedule(self.schedule, self.warmup_steps, owner="MeZOConfig")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"MeZOConfig.distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                f"got {self.distribution!r}"
            )


class MeZO:
    config_class: ClassVar[type] = MeZOConfig
    trains: ClassVar[bool] = True
    # Method traits (bench.method.MethodTraits): two forwards per step (q = 1), no backward.
    step_passes: ClassVar[tuple[float, float]] = (2.0, 0.0)
    display_order: ClassVar[int] = 20
    # compare guards its step against two forwards and its peak against inference's.
    guarded_ratios: ClassVar[tuple[tuple[str, str], ...]] = (
        ("step_over_two_forwards", "time"),
        ("peak_over_inference_peak", "memory"),
    )
    # `hizfo-bench perf` rows (bench/perf.py): the default step and each opt-in, alone and
    # together, so their step / two-forwards ratios sit side by side.
    perf_variants: ClassVar[dict[str, dict[str, Any]]] = {
        "": {},
        "keep_z": {"keep_z": True},
        "rademacher": {"distribution": "rademacher"},
        "keep_z+rademacher": {"keep_z": True, "distribution": "rademacher"},
    }

    def __init__(self, config: MeZOConfig) -> None:
        self.config = config

    def setup(self, model: torch.nn.Module, ctx: TrainContext) -> torch.nn.Module:
        self.model, self.ctx = model, ctx
        # No gradients ever: ZO needs inference memory only. Dropout off, as in MeZO.
        model.requires_grad_(False)
        model.eval()
        c = self.config
        self.spsa = SPSA(
            model.named_parameters(),
            SPSAConfig(eps=c.eps, q=c.q, weight_decay=c.weight_decay),
            keep_z=c.keep_z,
            distribution=c.distribution,
        )
        return model

    def step(self, batch: Batch, step: int) -> StepStats:
        c = self.config
        lr = scheduled_lr(c.lr, step, self.ctx.total_steps, c.schedule, c.warmup_steps)
        result = self.spsa.step(
            lambda: self.ctx.loss_fn(self.model, batch),
            lr=lr,
            seed=derive_seed(self.ctx.seed, step),
        )
        return StepStats(
            loss=result.loss,
            forward_passes=result.forward_passes,
            backward_passes=0,
            extra={"projected_grad": result.projected_grads[0]},
        )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())

    def state_dict(self) -> dict[str, Any]:
        return {}  # the seed trick: the trajectory is the (seed, step, projected grad) list

    def summary(self) -> dict[str, Any]:
        return {"trainable_parameters": self.spsa.numel, "zo_parameters": self.spsa.numel}
