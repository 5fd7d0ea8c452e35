"""The run-directory lock of one `run`, held from its first write to its last.

``bench.store.run_dir_lock`` takes an exclusive ``flock`` on ``<run dir>/.lock``; a second
``flock`` on a new open file conflicts even inside one process, so a sweep inside a plan
that already holds the lock must not take it again. ``held`` is that lock, reentrant
within this process: the plan (tuning, target setting, targets.json, final trials,
annotation: bench/orchestrate/plan.py) takes it once, and every sweep it runs
(bench/orchestrate/sweep.py) joins it instead of releasing it between stages.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from bench import store

_lock = threading.Lock()
_depth: dict[Path, int] = {}  # run dirs this process holds -> nesting depth


def _key(run_dir: Path) -> Path:
    return Path(run_dir).resolve()


def holds(run_dir: Path) -> bool:
    """Whether this process holds the lock of `run_dir`."""
    with _lock:
        return _depth.get(_key(run_dir), 0) > 0


@contextlib.contextmanager
def held(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s lock for the block: taken on the outermost entry (RunDirBusyError
    when another process holds it), released when the outermost block ends."""
    key = _key(run_dir)
    with _lock:
        depth = _depth.get(key, 0)
        if depth:
            _depth[key] = depth + 1
    if depth:
        try:
            yield
        finally:
            with _lock:
                _depth[key] -= 1
        return
    with store.run_dir_lock(run_dir):
        with _lock:
            _depth[key] = 1
        try:
            yield
        finally:
            with _lock:
                del _depth[key]
