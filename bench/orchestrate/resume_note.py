"""What the console says about checkpoints when a run is resumed or interrupted.

A resumed sweep names the trials that continue from a checkpoint and the step of each
(``resume_line``); an interrupted run names the trials that were running and the step
each will resume from, or that it restarts from step 0 for want of a checkpoint
(``interrupt_note``). Steps come from the checkpoints' ``checkpoint.json``
(bench/train/checkpoint.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from bench import store
from bench.train.checkpoint import resume_step
from bench.train.progress import progress_dir

_SHOWN = 3  # trials named in one line; the rest counted


def resume_steps(run_dir: Path, trial_ids: Iterable[str]) -> dict[str, int]:
    """Trial id -> the step it resumes from, for the trials with a checkpoint past step 0."""
    steps = {t: resume_step(run_dir, t) for t in trial_ids}
    return {t: s for t, s in steps.items() if s}


def _named(steps: Mapping[str, int]) -> str:
    items = sorted(steps.items())
    text = ", ".join(f"{t} from step {s}" for t, s in items[:_SHOWN])
    return text + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def resume_line(steps: Mapping[str, int]) -> str | None:
    """``resuming N trials from a checkpoint: <id> from step S, ...``; None for none."""
    if not steps:
        return None
    n = len(steps)
    return f"resuming {n} trial{'s' if n > 1 else ''} from a checkpoint: {_named(steps)}"


def interrupt_note(run_dir: Path) -> str:
    """One line on the trials that were running when the run stopped: the step each
    resumes from (its newest checkpoint), or that it restarts from step 0."""
    run_dir = Path(run_dir)
    folder = progress_dir(run_dir)
    running = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    done = store.finished_ids(run_dir) if run_dir.is_dir() else set()
    running = [t for t in running if t not in done]
    if not running:
        return "hizfo-bench: no trial was running"
    steps = resume_steps(run_dir, running)
    fresh = [t for t in running if t not in steps]
    parts = []
    if steps:
        parts.append(f"left checkpoints, a resume continues {_named(steps)}")
    if fresh:
        n = len(fresh)
        parts.append(
            f"{n} left no checkpoint and restart from step 0 "
            f"({', '.join(fresh[:_SHOWN])}{' ...' if n > _SHOWN else ''}; "
            "train.save_every saves them)"
        )
    n = len(running)
    return f"hizfo-bench: {n} running trial{'s' if n > 1 else ''} stopped: " + "; ".join(parts)
