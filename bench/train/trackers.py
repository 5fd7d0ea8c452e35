"""Experiment trackers: a trial's loss, eval points and final metrics in TensorBoard or W&B.

Each tracker is a training-loop Hook (bench/train/hooks.py): ``on_log`` sends the
window loss, ``on_eval_point`` the point's numeric fields, ``on_end`` the final training
figures. The test metrics exist only after evaluation, which runs after the loop, so the
worker hands them over with ``log_result`` (bench/orchestrate/session.py). One tracker
run per trial, grouped by sweep:

- ``tensorboard``: event files in ``<run>/tb/<trial_id>/``; ``tensorboard --logdir <run>/tb``
  shows every trial of the sweep side by side. Each trial's folder is also an HParams
  session: its hyperparameters (``hparams_of``: method, task, model, seed, phase, the
  method config and the train settings) are written when it starts, so the HParams
  view tabulates a sweep (a tuning run's points) against its scalars (``test/score``,
  ``final/loss``, ``eval/dev_loss``). Needs the ``tensorboard`` package.
- ``wandb``: one W&B run per trial, ``group`` = the run directory's name, ``name`` = the
  trial id, files under ``<run>/wandb``. Offline (``mode="offline"``, ``wandb sync``
  later) when WANDB_MODE is unset and api.wandb.ai cannot be reached. Needs ``wandb``.
- ``none`` (the default): nothing.

The choice reaches the worker as an argument of ``run_trial``, not as a field of the
trial spec: it changes where numbers are copied, not what the trial computes, so it
must not change the trial id.
"""

from __future__ import annotations

import importlib.util
import math
import os
import socket
from pathlib import Path
from typing import Any

from bench.format import flatten
from bench.train.hooks import Hook, LoopState

TRACKERS = ("none", "tensorboard", "wandb")
# The package each tracker imports, and the extra that installs it (pyproject).
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


class TrackerError(ValueError):
    """An unknown tracker, or one whose package is not installed."""


def check_tracker(name: str) -> None:
    """Fail before anything runs when `name` is unknown or its package is missing."""
    if name not in TRACKERS:
        raise TrackerError(f"unknown tracker {name!r}; choose one of {', '.join(TRACKERS)}")
    package = _PACKAGES.get(name)
    if package and importlib.util.find_spec(package) is None:
        raise TrackerError(
            f"--tracker {name} needs the {package!r} package: "
            f"pip install 'hizfo-bench[{name}]' (or pip install {package})"
        )


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    """The finite numeric fields of a dict (bools and strings left out)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def _final_training(state: LoopState) -> dict[str, float]:
    record = state.record
    seconds = state.clock.seconds
    figures = {
        "final/loss": record.curve[-1]["loss"] if record.curve else None,
        "final/train_seconds": seconds,
        "final/steps": state.step,
        "final/steps_per_second": state.step / seconds if state.step and seconds else None,
        "final/tokens_per_second": state.tokens / seconds if state.step and seconds else None,
    }
    return _numbers(figures)


def hparams_of(spec: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """A trial's hyperparameters for TensorBoard's HParams view, from its spec (a
    ``TrialSpec.to_dict()``): the identity (method, task, model, seed, phase), every
    ``method_config`` field as ``method_config.<key>`` and the train settings as
    ``train.<key>``. Unset values (None) are left out, lists and other values become
    strings (the view takes numbers, strings and booleans)."""
    values: dict[str, Any] = {
        k: spec.get(k) for k in ("method", "task", "model", "seed", "phase") if k in spec
    }
    values.update(flatten(spec.get("method_config") or {}, "method_config"))
    values.update(flatten(spec.get("train") or {}, "train"))
    out: dict[str, bool | int | float | str] = {}
    for key, value in values.items():
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        out[key] = value if isinstance(value, bool | int | float | str) else str(value)
    return out


def _result_figures(record: dict[str, Any]) -> dict[str, float]:
    """The test figures of a finished trial record, as tracker scalars."""
    figures = {"test/score": record.get("score"), "test/eval_seconds": record.get("eval_seconds")}
    figures.update({f"test/{k}": v for k, v in (record.get("metrics") or {}).items()})
    figures["final/peak_memory_bytes"] = record.get("peak_memory_bytes")
    figures["final/total_seconds"] = record.get("total_seconds")
    return _numbers(figures)


class TensorBoardTracker(Hook):
    """Scalars into ``<run>/tb/<trial_id>/`` with torch's SummaryWriter, and the trial's
    hyperparameters as an HParams session there (when `hparams` is given).

    The session carries no experiment summary of its own: TensorBoard then builds the
    experiment from every session under the log dir (the union of their hyperparameters,
    their scalar tags as metrics), so methods with different config fields share a view.
    """

    def __init__(
        self,
        log_dir: Path,
        hparams: dict[str, bool | int | float | str] | None = None,
        trial_id: str | None = None,
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        if hparams:
            from tensorboard.plugins.hparams import summary_v2

            session = summary_v2.hparams_pb(hparams, trial_id=trial_id or self.log_dir.name)
            self.writer.file_writer.add_summary(session)
            self.writer.flush()

    def on_log(self, state: LoopState, point: dict[str, Any]) -> None:
        self.writer.add_scalar("train/loss", float(point["loss"]), int(point["step"]))

    def on_eval_point(self, state: LoopState, point: dict[str, Any]) -> None:
        step = int(point.get("step", state.step))
        for key, value in _numbers(point).items():
            if key != "step":
                self.writer.add_scalar(f"eval/{key}", value, step)

    def on_end(self, state: LoopState) -> None:
        for key, value in _final_training(state).items():
            self.writer.add_scalar(key, value, state.step)
        # Closed here: a trial that fails in evaluation keeps its training curve.
        self.writer.close()


def wandb_mode() -> str | None:
    """W&B mode to use: WANDB_MODE if set, else "offline" when the service is out of reach."""
    if os.environ.get("WANDB_MODE"):
        return None  # wandb reads it itself
    try:
        socket.create_connection(("api.wandb.ai", 443), timeout=2).close()
    except OSError:
        return "offline"
    return None


class WandbTracker(Hook):
    """One W&B run per trial, grouped by sweep (the run directory's name)."""

    def __init__(self, run_dir: Path, trial_id: str, config: dict[str, Any]) -> None:
        import wandb

        folder = Path(run_dir) / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "hizfo-bench"),
            group=Path(run_dir).resolve().name,
            name=trial_id,
            id=trial_id.replace("__", "-")[:128],
            config=config,
            dir=str(folder),
            mode=wandb_mode(),
            resume="allow",
            reinit=True,
        )

    def on_log(self, state: LoopState, point: dict[str, Any]) -> None:
        self.run.log({"train/loss": float(point["loss"])}, step=int(point["step"]))

    def on_eval_point(self, state: LoopState, point: dict[str, Any]) -> None:
        step = int(point.get("step", state.step))
        numbers = {f"eval/{k}": v for k, v in _numbers(point).items() if k != "step"}
        self.run.log(numbers, step=step)

    def on_end(self, state: LoopState) -> None:
        self.run.summary.update(_final_training(state))


def tracker_hooks(
    tracker: str, run_dir: Path | None, trial_id: str, config: dict[str, Any]
) -> list[Hook]:
    """The hook `tracker` adds to a trial's loop ([] for none).

    Without a run directory (a trial run by hand, a unit test) there is nowhere to
    write, so nothing is tracked.
    """
    check_tracker(tracker)
    if run_dir is None or tracker == "none":
        return []
    run_dir = Path(run_dir)
    if tracker == "tensorboard":
        return [TensorBoardTracker(run_dir / "tb" / trial_id, hparams_of(config), trial_id)]
    return [WandbTracker(run_dir, trial_id, config)]


def log_result(tracker: str, run_dir: Path | None, record: dict[str, Any]) -> None:
    """After evaluation: the test score and metrics into the trial's tracker run.

    TensorBoard: a second event file in the same folder (readers merge them). W&B: the
    run the hook opened (each trial opens and finishes its own run), finished here.
    """
    if run_dir is None or tracker == "none":
        return
    figures = _result_figures(record)
    step = int(record.get("steps") or 0)
    if tracker == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(Path(run_dir) / "tb" / record["trial_id"]))
        for key, value in figures.items():
            writer.add_scalar(key, value, step)
        writer.close()
    elif tracker == "wandb":
        import wandb

        run = wandb.run
        if run is None:  # the trial failed before its loop: a run for the result alone
            WandbTracker(Path(run_dir), record["trial_id"], record.get("config") or {})
            run = wandb.run
        run.summary.update({**figures, "status": record.get("status")})
        run.finish()
