"""The one learning-rate schedule of every method: constant, linear or cosine, with warmup.

Every method of the suite (MeZO, Hi-ZFO's ZO and FO parts, fo-adamw, LoRA and the
plugins) takes its learning rate of 0-based step t as

    lr_t = lr * lr_multiplier(t, total_steps, warmup_steps, schedule)

A schedule is a pure function of the step: it needs no scheduler state, so it survives a
rebuilt optimizer (Hi-ZFO rebuilds its AdamW every time the FO set changes) and a resume
from a checkpoint.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "linear", "cosine")


def check_schedule(schedule: str, warmup_steps: int = 0, *, owner: str = "schedule") -> None:
    """Raise a one-line ValueError for an unknown schedule or a negative warmup.

    `owner` names the setting in the message, e.g. "MeZOConfig".
    """
    if schedule not in SCHEDULES:
        raise ValueError(
            f"{owner}: unknown lr schedule {schedule!r}; valid: {', '.join(SCHEDULES)}"
        )
    if warmup_steps < 0:
        raise ValueError(f"{owner}: warmup steps must be >= 0, got {warmup_steps!r}")


def lr_multiplier(step: int, total: int | None, warmup: int = 0, kind: str = "linear") -> float:
    """Factor on the peak LR at 0-based `step` of `total`.

    Warmup: (step + 1) / warmup for step < warmup. After it, with p = (step - warmup) /
    max(total - warmup, 1) clipped to [0, 1]: "constant" 1, "linear" 1 - p, "cosine"
    (1 + cos(pi p)) / 2. `total` may be None for "constant" only.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    if total is None:
        raise ValueError(f"the {kind!r} schedule needs the total number of steps")
    progress = min(1.0, max(0.0, (step - warmup) / max(total - warmup, 1)))
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def scheduled_lr(lr: float, step: int, total: int | None, schedule: str, warmup: int = 0) -> float:
    """The learning rate of 0-based `step`: lr * lr_multiplier(step, total, warmup, schedule)."""
    return lr * lr_multiplier(step, total, warmup, schedule)
