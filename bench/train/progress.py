"""Progress files: how a running trial tells the driver its step, loss and phase.

The worker (re)writes ``<run>/progress/<trial_id>.json`` atomically, a few hundred bytes
at most once per ``log_every`` steps; the driver reads the folder in its wait loop.
Files, not Ray's log forwarding or an actor: nothing to keep alive, nothing lost when a
worker dies (its retry overwrites the file), and a sweep stays readable with Ray's log
forwarding off. The price: the driver must see the worker's filesystem. That holds on
one machine and on clusters with a shared run folder (NFS); on a multi-node cluster
without one, workers on other nodes write into their own disk and the driver shows
those trials as queued until their result arrives (docs/orchestration.md).

A file holds: ``phase`` (``loading`` | ``training`` | ``evaluating``), ``step``,
``total_steps``, ``loss`` (the last window mean, or null), ``train_seconds`` (train
clock at that step), ``pid`` and ``time`` (wall-clock of the write, for staleness).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.train.hooks import Hook, LoopState


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


class ProgressFile(Hook):
    """The training loop's side of the progress file: step and loss every log point."""

    def __init__(self, run_dir: Path, trial_id: str) -> None:
        self.run_dir, self.trial_id = Path(run_dir), trial_id
        self.loss: float | None = None

    def _write(self, state: LoopState, phase: str) -> None:
        write_progress(
            self.run_dir,
            self.trial_id,
            phase=phase,
            step=state.step,
            total_steps=state.total_steps,
            loss=self.loss,
            train_seconds=state.clock.seconds,
        )

    def on_log(self, state: LoopState, point: dict[str, Any]) -> None:
        self.loss = float(point["loss"])
        self._write(state, "training" if state.step < state.total_steps else "evaluating")

    def on_end(self, state: LoopState) -> None:
        self._write(state, "evaluating")
