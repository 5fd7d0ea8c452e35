"""The stall limit: how long a trial may go without progress before the driver stops it.

Progress is the heartbeat of the trial's progress file (bench/train/progress.py: its
``time``, refreshed after every training step and after every forward pass while the
trial loads, evaluates or scores). A trial whose heartbeat is older than its limit is
stopped (its worker killed, its checkpoints kept) and recorded as failed with
``TimeoutError: no progress for N s at step K``; the sweep goes on
(bench/orchestrate/sweep.py). The live display marks it as stalled from a quarter of
the limit on (bench/orchestrate/display.py).

The limit is ``train.stall_timeout_s`` when the suite sets it (while the trial is still
``loading``, imports and model loading, at least ``STALL_FLOOR_S``: they make no forward
passes to beat with); otherwise it is derived
from the trial's expected step time, its own train-clock seconds per step so far
(``train_seconds / step`` in the progress file): ``STALL_STEPS`` steps' worth, and never
less than ``STALL_FLOOR_S`` (10 minutes), which also holds before the first step
(loading, a method's set-up, step 0's evaluation point).
"""

from __future__ import annotations

from typing import Any

from bench.spec import TrialSpec

STALL_FLOOR_S = 600.0  # the least derived limit, and the limit before the first step
STALL_STEPS = 50  # the derived limit in steps: 50 x the trial's seconds per step
WARN_FRACTION = 0.25  # the display marks a trial silent for this part of its limit


def step_seconds(progress: dict[str, Any] | None) -> float | None:
    """The trial's train-clock seconds per step so far, None before its first step."""
    if not progress:
        return None
    step = int(progress.get("step") or 0)
    seconds = float(progress.get("train_seconds") or 0.0)
    return seconds / step if step > 0 and seconds > 0 else None


def stall_limit(spec: TrialSpec, progress: dict[str, Any] | None) -> float:
    """Seconds `spec`'s trial may go without progress (module docstring)."""
    if spec.train.stall_timeout_s is not None:
        limit = float(spec.train.stall_timeout_s)
        # Imports and model loading make no forward passes to beat with.
        loading = not progress or progress.get("phase", "loading") == "loading"
        return max(limit, STALL_FLOOR_S) if loading else limit
    per_step = step_seconds(progress)
    return max(STALL_FLOOR_S, STALL_STEPS * per_step) if per_step else STALL_FLOOR_S


def silence(progress: dict[str, Any] | None, now: float) -> float | None:
    """Seconds since the trial's last heartbeat, None when it has not started."""
    if not progress or not isinstance(progress.get("time"), int | float):
        return None
    return max(0.0, now - float(progress["time"]))


def marked(progress: dict[str, Any] | None) -> bool:
    """Whether the display marks this running trial as stalled: silent (the sweep's
    ``silent_seconds``) for WARN_FRACTION of its ``stall_limit``, and at least 3 s."""
    if not progress or "silent_seconds" not in progress or "stall_limit" not in progress:
        return False
    silent, limit = float(progress["silent_seconds"]), float(progress["stall_limit"])
    return silent >= max(WARN_FRACTION * limit, 3.0)


def stall_error(silent: float, progress: dict[str, Any]) -> str:
    """The failed record's error for a trial stopped after `silent` seconds without
    progress."""
    return f"TimeoutError: no progress for {silent:.0f} s at step {int(progress.get('step') or 0)}"
