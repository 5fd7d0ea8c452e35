"""The one AdamW set-up shared by every first-order part of the suite.

Full fine-tuning (fo-adamw), LoRA's adapters and Hi-ZFO's FO tensors all build their
optimizer here, so a comparison between them differs only in what is trained, never in
how: the same decay groups (no decay on biases and norm weights, hizfo.zo.default_no_decay,
as in the Hugging Face Trainer and MeZO), the same schedules and the same clipping.

Schedules are hizfo.schedule's, the one schedule of every method (ZO ones included):
the learning rate of step t is cfg.lr * lr_multiplier(t, total_steps, cfg.warmup_steps,
cfg.schedule), a pure function of t, so it survives a rebuilt optimizer (Hi-ZFO rebuilds
its AdamW every time the FO set changes) and a resume without scheduler state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from hizfo.schedule import SCHEDULES, check_schedule, lr_multiplier, scheduled_lr
from hizfo.zo import default_no_decay

# AdamWConfig.implementation: torch's choice, or its foreach or fused kernels.
ADAMW_IMPLEMENTATIONS = ("auto", "foreach", "fused")

__all__ = [
    "ADAMW_IMPLEMENTATIONS",
    "SCHEDULES",
    "AdamWConfig",
    "build_adamw",
    "clip_gradients",
    "lr_multiplier",
    "param_groups",
    "set_lr",
]


@dataclass
class AdamWConfig:
    """Settings of the shared AdamW.

    Attributes:
        lr: peak learning rate. 1e-5 is the usual full fine-tuning rate for 100M-1B
            decoder models (MeZO's FT grid is 1e-5..5e-5).
        betas: Adam's moment coefficients (torch defaults).
        eps: Adam's denominator term (torch default 1e-8).
        weight_decay: decoupled weight decay (AdamW) on matrices; biases and norm
            weights get none (param_groups). 0 as in MeZO's FT baseline.
        schedule: "constant", "linear" (decay to 0 at the last step) or "cosine" (half a
            cosine down to 0 at the last step), after the warmup. "linear" and "cosine"
            need the total number of steps.
        warmup_steps: linear warmup: step t < warmup_steps uses lr * (t + 1) / warmup_steps.
        max_grad_norm: clip the global gradient norm to this before each step (1.0, the
            Hugging Face Trainer default); None disables clipping.
        implementation: how torch.optim.AdamW walks the tensors (ADAMW_IMPLEMENTATIONS).
            "auto" (default): torch's own choice, torch._foreach_* kernels over all the
            tensors of a group on CUDA (a bounded number of launches, not one per
            tensor) and a loop over the tensors on a CPU. "foreach": the foreach kernels
            on any device; on a CPU the same floats as the loop (tested), at the price
            of one temporary the size of the trained tensors during the step (torch's
            denominators). "fused": one fused kernel per group, no such temporary, but
            not bit for bit the loop (about one ulp per step).
    """

    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    implementation: str = field(
        default="auto", metadata={"id": "when_set"}
    )  # added after trial ids existed: hashed only when set (bench.spec)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # YAML gives lists
        if self.lr < 0:
            raise ValueError(f"AdamWConfig.lr must be >= 0, got {self.lr}")
        if self.eps <= 0:
            raise ValueError(f"AdamWConfig.eps must be > 0, got {self.eps}")
        if self.weight_decay < 0:
            raise ValueError(f"AdamWConfig.weight_decay must be >= 0, got {self.weight_decay}")
        check_schedule(self.schedule, self.warmup_steps, owner="AdamWConfig")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError("AdamWConfig.max_grad_norm must be > 0 or None")
        if self.implementation not in ADAMW_IMPLEMENTATIONS:
            raise ValueError(
                f"AdamWConfig.implementation must be one of {', '.join(ADAMW_IMPLEMENTATIONS)}, "
                f"got {self.implementation!r}"
            )


def param_groups(
    named_params: Iterable[tuple[str, torch.Tensor]],
    weight_decay: float,
    *,
    no_decay: Callable[[str, torch.Tensor], bool] = default_no_decay,
) -> list[dict]:
    """AdamW parameter groups: [decayed matrices, undecayed biases and norm weights].

    Empty groups are left out; a tensor listed twice (tied weights) appears once.
    """
    decay: list[torch.Tensor] = []
    exempt: list[torch.Tensor] = []
    seen: set[int] = set()
    for name, param in named_params:
        if id(param) in seen:
            continue
        seen.add(id(param))
        (exempt if no_decay(name, param) else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": exempt, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_adamw(
    named_params: Iterable[tuple[str, torch.Tensor]], cfg: AdamWConfig
) -> torch.optim.AdamW:
    """torch.optim.AdamW over `named_params` with cfg's decay groups, betas and eps.

    Every group's "initial_lr" is cfg.lr; set_lr scales it by the schedule each step.
    """
    groups = param_groups(named_params, cfg.weight_decay)
    if not groups:
        raise ValueError("build_adamw needs at least one parameter")
    kernels = {"auto": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    optimizer = torch.optim.AdamW(
        groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **kernels[cfg.implementation]
    )
    for group in optimizer.param_groups:
        group["initial_lr"] = cfg.lr
    return optimizer


def set_lr(
    optimizer: torch.optim.Optimizer, cfg: AdamWConfig, step: int, total: int | None
) -> float:
    """Set every group's LR for 0-based `step` from cfg's schedule; returns that LR."""
    lr = scheduled_lr(cfg.lr, step, total, cfg.schedule, cfg.warmup_steps)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def clip_gradients(params: Iterable[torch.Tensor], cfg: AdamWConfig) -> float | None:
    """Clip the global gradient norm to cfg.max_grad_norm; returns the norm before
    clipping (None when clipping is off).

    torch.nn.utils.clip_grad_norm_ with its default foreach=None takes the foreach path
    on CPU and CUDA tensors: one torch._foreach_norm and one torch._foreach_mul_ per
    (device, dtype) group, not one per tensor (tested)."""
    if cfg.max_grad_norm is None:
        return None
    return float(torch.nn.utils.clip_grad_norm_(list(params), cfg.max_grad_norm))
