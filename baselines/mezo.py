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
from hizfo.schedule import check_schedule
from hizfo.zo import DISTRIBUTIONS, STREAMS, SPSAConfig, ZOPrologue


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
        z_stream: how z is cut into generator calls (hizfo.zo.SPSA stream). "tensor"
            (default): z drawn tensor by tensor, MeZO's definition; on a CPU the draws of
            consecutive tensors are fused where that gives the same numbers. "bucket":
            one draw per bucket of about 1/32 of the weights, which makes a CUDA pass a
            few dozen draws instead of one per tensor; the same distribution but another
            z (on a CPU the same z when every tensor's size is a multiple of 16).
    """

    lr: float = 1e-6
    eps: float = field(default=1e-3, metadata={"gt": 0})  # 0 divides by zero in SPSA
    q: int = 1
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    keep_z: bool = False
    distribution: str = "gaussian"
    z_stream: str = field(
        default="tensor", metadata={"id": "when_set"}
    )  # added after trial ids existed: hashed only when set (bench.spec)

    def __post_init__(self) -> None:
        check_schedule(self.schedule, self.warmup_steps, owner="MeZOConfig")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"MeZOConfig.distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                f"got {self.distribution!r}"
            )
        if self.z_stream not in STREAMS:
            raise ValueError(
                f"MeZOConfig.z_stream must be one of {', '.join(STREAMS)}, got {self.z_stream!r}"
            )


class MeZO:
    config_class: ClassVar[type] = MeZOConfig
    trains: ClassVar[bool] = True
    # Method traits (bench.method.MethodTraits): two forwards per step (q = 1), no backward.
    step_passes: ClassVar[tuple[float, float]] = (2.0, 0.0)
    display_order: ClassVar[int] = 20
    # perf (bench/perf/ratios.py): the step against its two forwards and the peak against
    # inference, with targets; against the naive reference and the default row, none.
    perf_ratios: ClassVar[dict[str, dict[str, float]]] = {
        "step_over_two_forwards": {"cpu": 1.3, "cuda": 1.1},
        "peak_over_inference_peak": {"cpu": 1.1, "cuda": 1.05},
        "step_over_naive_mezo_step": {},
        "step_over_default": {},
    }
    # compare guards its step against two forwards and its peak against inference's.
    guarded_ratios: ClassVar[tuple[tuple[str, str], ...]] = (
        ("step_over_two_forwards", "time"),
        ("peak_over_inference_peak", "memory"),
        ("ops_over_floor_ops", "ops"),
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
        self.ctx = ctx
        c = self.config
        # No gradients ever (inference memory), dropout off, as in MeZO.
        self.zo = ZOPrologue.for_run(
            model,
            ctx,
            c,
            SPSAConfig(eps=c.eps, q=c.q, weight_decay=c.weight_decay),
            keep_z=c.keep_z,
            distribution=c.distribution,
            stream=c.z_stream,
        )
        self.model, self.spsa = model, self.zo.spsa
        return model

    def step(self, batch: Batch, step: int) -> StepStats:
        lr, seed = self.zo.step_args(step)
        result = self.spsa.step(lambda: self.ctx.loss_fn(self.model, batch), lr=lr, seed=seed)
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
        return self.zo.summary()
