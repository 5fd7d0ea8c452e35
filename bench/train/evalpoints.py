"""Evaluation points: dev loss (and optionally dev score) every ``eval_every`` steps.

Each point pauses the train clock (AlgoPerf counts evaluation outside the submission's
time too), so ``train_seconds`` and every point's ``seconds`` are training only; the
point's own cost is ``eval_seconds``. A point holds:

    step, seconds (train clock so far), eval_seconds (this point), forward, backward
    (passes so far), dev_loss (mean target-token cross-entropy over the fixed dev
    batches), dev_score (the task's primary metric on the fixed dev documents, or None)

The dev batches and documents are fixed for the whole trial (the first ones of the
task's dev split), so points are comparable along a run and across methods. Test
documents are never read here. Random-number states (Python, NumPy, torch, CUDA) are
saved before and restored after each point: lm-eval reseeds the global generators, and
an evaluation must not change what the training that follows draws.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from bench.method import Batch
from bench.train.hooks import Hook, LoopState


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Leave every global random generator as it was found."""
    import numpy as np

    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@torch.no_grad()
def dev_loss(
    model: torch.nn.Module,
    batches: list[Batch],
    loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor],
) -> float:
    """Mean loss over `batches`, in eval mode (dropout off); the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        losses = [float(loss_fn(model, b)) for b in batches]
    finally:
        model.train(was_training)
    return sum(losses) / len(losses)


class DevEvaluator:
    """Measures an evaluation point on the fixed dev batches (and documents) when the
    loop asks (every ``eval_every`` steps and at step 0), and appends it to the record's
    ``eval_curve``. `score` is None (dev loss only) or a callable returning the dev score.
    """

    def __init__(
        self,
        every: int,
        model_ref: Callable[[], torch.nn.Module],
        batches: list[Batch],
        loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor],
        score: Callable[[], float] | None = None,
    ) -> None:
        self.every = every
        self.model_ref, self.batches, self.loss_fn = model_ref, batches, loss_fn
        self.score = score

    def due(self, state: LoopState) -> bool:
        """Whether the loop has reached an evaluation point (the last step always is)."""
        return state.step % self.every == 0 or state.step == state.total_steps

    def measure(self, state: LoopState) -> dict[str, Any]:
        # Read the clock before the pause: inside it, the pause so far is not yet
        # subtracted, and the point would count its own evaluation as training time.
        seconds = state.clock.seconds
        with state.clock.paused(), preserved_rng():
            t0 = time.perf_counter()
            model = self.model_ref()
            loss = dev_loss(model, self.batches, self.loss_fn)
            score = self.score() if self.score is not None else None
            point = {
                "step": state.step,
                "seconds": seconds,
                "eval_seconds": time.perf_counter() - t0,
                "forward": state.passes["forward"],
                "backward": state.passes["backward"],
                "dev_loss": loss,
                "dev_score": score,
            }
        state.record.eval_curve.append(point)
        return point


class MetricsFile(Hook):
    """Appends every loss point and evaluation point to ``<run>/metrics/<trial_id>.jsonl``
    as it happens, so a long run can be watched with ``tail -f``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")  # a rerun of the trial starts a fresh file

    def _write(self, kind: str, point: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"kind": kind, **point}) + "\n")

    def on_log(self, state: LoopState, point: dict[str, Any]) -> None:
        self._write("train", point)

    def on_eval_point(self, state: LoopState, point: dict[str, Any]) -> None:
        self._write("eval", point)

    def on_end(self, state: LoopState) -> None:
        self._write("end", {"step": state.step, "seconds": state.clock.seconds})
