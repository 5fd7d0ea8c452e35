"""Progress files: how a running trial tells the driver its step, loss and phase.

The worker (re)writes ``<run>/progress/<trial_id>.json`` atomically, a few hundred bytes
at most once per ``log_every`` steps; the driver reads the folder in its wait loop.
Files, not Ray's log forwarding or an actor: nothing to keep alive, nothing lost when a
worker dies (its retry overwrites the file), and a sweep stays readable with Ray's log
forwarding off. The price: the driver must see the worker's filesystem. That holds on
one machine and on clusters with a shared run folder (NFS); on a multi-node cluster
without one, workers on other nodes write into their own disk and the driver shows
those trials as queued until their result arrives (docs/orchestration.md).

A file holds: ``phase`` (``loading`` | ``training`` | ``evaluating``, training done |
``sharpness`` | ``scoring``, the test set), ``step``,
``total_steps``, ``loss`` (the last window mean, or null), ``train_seconds`` (train
clock at that step), ``pid`` and ``time`` (wall-clock of the write, for staleness).

``time`` is the trial's heartbeat (``Heartbeat``): it is refreshed, at most once every
``BEAT_SECONDS``, after every training step and, outside the training steps (loading,
set-up, evaluation points, sharpness, test scoring), after every forward pass of the
model. The driver stops a trial whose heartbeat is older than its stall limit
(bench/orchestrate/stall.py). Inside a step only the step's end counts, so a ``step()``
that never returns stops the heartbeat even if it runs forward passes.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.train.hooks import Hook, LoopState

# The heartbeat rewrites the progress file at most this often (seconds).
BEAT_SECONDS = 1.0


def progress_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "progress"


def write_progress(run_dir: Path, trial_id: str, **fields: Any) -> None:
    """Replace the trial's progress file (temp file and rename: readers see all or nothing).

    Never raises: progress is a courtesy to the person watching, not worth a trial.
    """
    folder = progress_dir(run_dir)
    data = {"trial_id": trial_id, "pid": os.getpid(), "time": time.time(), **fields}
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{trial_id}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, folder / f"{trial_id}.json")


def read_progress(run_dir: Path, trial_id: str) -> dict[str, Any] | None:
    """The trial's last progress, or None when it has not started (or is out of sight)."""
    try:
        return json.loads((progress_dir(run_dir) / f"{trial_id}.json").read_text())
    except (OSError, ValueError):
        return None


def clear_progress(run_dir: Path, trial_ids: list[str]) -> None:
    """Forget earlier attempts' progress (a resumed sweep), so they do not show as running."""
    for trial_id in trial_ids:
        (progress_dir(run_dir) / f"{trial_id}.json").unlink(missing_ok=True)


class Heartbeat:
    """A trial's progress file, kept fresh while the trial makes progress.

    ``write`` sets fields and rewrites the file now; ``beat`` rewrites it with the same
    fields and a new ``time`` when BEAT_SECONDS have passed since the last write.
    ``attach`` makes every forward pass of a model a beat while ``armed`` (the recipe
    disarms it for the training steps, where only a finished step counts).
    """

    def __init__(
        self, run_dir: Path, trial_id: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.run_dir, self.trial_id = Path(run_dir), trial_id
        self.fields: dict[str, Any] = {"phase": "loading", "step": 0, "total_steps": 0}
        self.fields["loss"] = None
        self.armed = True
        self._clock = clock
        self._last = float("-inf")

    def write(self, **fields: Any) -> None:
        self.fields.update(fields)
        self._last = self._clock()
        write_progress(self.run_dir, self.trial_id, **self.fields)

    def beat(self, **fields: Any) -> None:
        self.fields.update(fields)
        if self._clock() - self._last >= BEAT_SECONDS:
            self.write()

    def _on_forward(self, module: Any, args: Any, output: Any) -> None:
        if self.armed:
            self.beat()

    def attach(self, model: Any) -> Any:
        """Beat after every forward pass of `model` while armed; returns the hook handle."""
        return model.register_forward_hook(self._on_forward)

    @contextlib.contextmanager
    def forwards_count(self) -> Iterator[None]:
        """Forward passes count as progress inside the block (an evaluation point)."""
        armed, self.armed = self.armed, True
        try:
            yield
        finally:
            self.armed = armed


class ProgressFile(Hook):
    """The training loop's side of the progress file: the step after every step (at most
    once every BEAT_SECONDS), the loss every log point."""

    def __init__(self, run_dir: Path, trial_id: str, heartbeat: Heartbeat | None = None) -> None:
        self.heartbeat = heartbeat or Heartbeat(run_dir, trial_id)

    def _fields(self, state: LoopState, phase: str) -> dict[str, Any]:
        return {
            "phase": phase,
            "step": state.step,
            "total_steps": state.total_steps,
            "train_seconds": state.clock.seconds,
        }

    def on_step(self, state: LoopState, stats: Any) -> None:
        self.heartbeat.beat(**self._fields(state, "training"))

    def on_log(self, state: LoopState, point: dict[str, Any]) -> None:
        phase = "training" if state.step < state.total_steps else "evaluating"
        self.heartbeat.write(loss=float(point["loss"]), **self._fields(state, phase))

    def on_eval_point(self, state: LoopState, point: dict[str, Any]) -> None:
        self.heartbeat.beat()

    def on_end(self, state: LoopState) -> None:
        self.heartbeat.write(**self._fields(state, "evaluating"))
