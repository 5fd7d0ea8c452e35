"""Hooks of the training loop: what watches a trial train without changing how it trains.

The loop (bench/train/recipe.py) does the work itself: it steps, averages the loss over
each ``log_every`` window, and measures evaluation points every ``eval_every`` steps.
After each of these it tells every hook through one dispatcher (``Hooks``):
``on_step`` after each optimisation step, ``on_log`` with each loss point,
``on_eval_point`` with each evaluation point (step 0 included), and ``on_end`` once the
loop finishes. Every callback is optional: a hook defines only what it needs.

A new hook is a ``Hook`` subclass added to the list ``trial_hooks`` builds
(bench/train/recipe.py). Hooks observe; the one that writes into the record says so in
its name (``StepExtraRecorder``).

The train clock belongs to the loop, not to the hooks: work a hook does inside
``clock.paused()`` (evaluation points, say) is not counted in ``train_seconds``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.method import StepStats
from bench.record import TrialRecord

log = logging.getLogger("hizfo_bench.train")


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


class TrainClock:
    """Wall-clock of the training loop only; ``paused()`` excludes a block from it.

    It also keeps the process's CPU seconds over the same windows (``cpu_seconds``):
    on a shared machine other processes' load stretches wall-clock time but hardly this
    process's CPU time, so regression checks can compare it where wall time is noise.
    """

    def __init__(self) -> None:
        self._started: float | None = None
        self._cpu_started = 0.0
        self._paused_total = 0.0
        self._paused_cpu = 0.0
        self.paused_seconds = 0.0  # the total time spent paused (evaluation, say)

    def start(self, seconds: float = 0.0, cpu_seconds: float = 0.0) -> None:
        """Start the clock; a resumed trial starts it at the `seconds` and `cpu_seconds`
        its checkpoint had run."""
        self._started = time.perf_counter() - seconds
        self._cpu_started = time.process_time() - cpu_seconds

    @property
    def seconds(self) -> float:
        if self._started is None:
            return 0.0
        return time.perf_counter() - self._started - self._paused_total

    @property
    def cpu_seconds(self) -> float:
        if self._started is None:
            return 0.0
        return time.process_time() - self._cpu_started - self._paused_cpu

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            if self._started is not None:  # a pause before the start is not on the clock
                self._paused_total += dt
                self._paused_cpu += time.process_time() - c0
            self.paused_seconds += dt


@dataclass
class LoopState:
    """What hooks may read about the loop (and the record they may write into)."""

    record: TrialRecord
    total_steps: int
    clock: TrainClock
    step: int = 0  # steps finished
    tokens: int = 0
    passes: dict[str, int] = field(default_factory=lambda: {"forward": 0, "backward": 0})


class Hook:
    """Base class with every callback a no-op; subclass and override what you need."""

    def on_step(self, state: LoopState, stats: StepStats) -> None:
        """After each optimisation step (state.step is the number of steps done)."""

    def on_log(self, state: LoopState, point: dict[str, Any]) -> None:
        """Every log_every steps: point = {step, loss (window mean), seconds}."""

    def on_eval_point(self, state: LoopState, point: dict[str, Any]) -> None:
        """After each evaluation point on dev."""

    def on_end(self, state: LoopState) -> None:
        """Once the training loop has finished."""


class DivergenceGuard(Hook):
    """Stops the trial when the training loss is NaN or infinite."""

    def on_step(self, state: LoopState, stats: StepStats) -> None:
        if not math.isfinite(stats.loss):
            raise DivergenceError(f"training loss is {stats.loss} at step {state.step - 1}")


class Hooks(Hook):
    """The one dispatcher: every callback goes to every hook, in list order."""

    def __init__(self, hooks: Iterable[Hook] = ()) -> None:
        self.hooks = list(hooks)

    def on_step(self, state: LoopState, stats: StepStats) -> None:
        for hook in self.hooks:
            hook.on_step(state, stats)

    def on_log(self, state: LoopState, point: dict[str, Any]) -> None:
        for hook in self.hooks:
            hook.on_log(state, point)

    def on_eval_point(self, state: LoopState, point: dict[str, Any]) -> None:
        for hook in self.hooks:
            hook.on_eval_point(state, point)

    def on_end(self, state: LoopState) -> None:
        for hook in self.hooks:
            hook.on_end(state)


def loss_point(state: LoopState, window: list[float]) -> dict[str, Any]:
    """The curve point of a finished ``log_every`` window: its mean loss and the clocks."""
    return {
        "step": state.step,
        "loss": sum(window) / len(window),
        "seconds": state.clock.seconds,
        "cpu_seconds": state.clock.cpu_seconds,
    }


class ConsoleLog(Hook):
    """One log line per loss point and evaluation point; the loss on the progress bar."""

    def __init__(self, bar: Any = None) -> None:
        self.bar = bar

    def on_log(self, state: LoopState, point: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{point['loss']:.4f}")
        log.info(
            "%s step %d/%d loss %.4f (%.2f s/step)",
            state.record.trial_id,
            state.step,
            state.total_steps,
            point["loss"],
            point["seconds"] / state.step,
        )

    def on_eval_point(self, state: LoopState, point: dict[str, Any]) -> None:
        log.info(
            "%s eval step %d: dev loss %.4f%s (%.1f s)",
            state.record.trial_id,
            point["step"],
            point["dev_loss"],
            "" if point["dev_score"] is None else f", dev score {point['dev_score']:.4f}",
            point["eval_seconds"],
        )


class StepExtraRecorder(Hook):
    """Keeps what methods report per step in ``StepStats.extra`` (MeZO's projected
    gradient: with the seed, its whole trajectory; Hi-ZFO's backward depth and z draws)
    as columns in the record's ``step_extra``, and adds honest cost totals to ``passes``:
    ``backward_equivalent`` (backward passes weighted by the share of a full backward
    they ran, where the method reports ``backward_depth``) and ``z_draws`` (passes over
    the ZO weights to draw z)."""

    def __init__(self) -> None:
        self.columns: dict[str, list[float]] = {}

    def on_step(self, state: LoopState, stats: StepStats) -> None:
        for key, value in stats.extra.items():
            column = self.columns.setdefault(key, [])
            column.extend([None] * (state.step - 1 - len(column)))  # steps that lacked it
            column.append(value)

    def on_end(self, state: LoopState) -> None:
        if not self.columns:
            return
        state.record.step_extra = self.columns
        if "backward_depth" in self.columns:
            state.passes["backward_equivalent"] = sum(
                d or 0.0 for d in self.columns["backward_depth"]
            )
        if "z_draws" in self.columns:
            state.passes["z_draws"] = int(sum(d or 0 for d in self.columns["z_draws"]))
