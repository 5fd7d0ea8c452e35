"""Result files: one JSON per trial, written atomically, loaded into pandas.

The layout and fields are a contract (DESIGN.md §7) that reports, regression checks
and outside tools read; bump SCHEMA when a field changes meaning.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA = 1
REQUIRED_FIELDS = (
    "schema",
    "trial_id",
    "method",
    "task",
    "model",
    "seed",
    "status",
    "error",
    "score",
    "metrics",
    "train_seconds",
    "eval_seconds",
    "peak_memory_bytes",
    "steps",
    "curve",
    "config",
    "environment",
)


def trials_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "trials"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temp file in the same folder, fsync, rename: a reader sees all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_trial(run_dir: Path, record: dict[str, Any]) -> Path:
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        raise ValueError(f"trial record lacks {', '.join(missing)}")
    path = trials_dir(run_dir) / f"{record['trial_id']}.json"
    write_json_atomic(path, record)
    return path


def read_trials(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete trial file in a run (temp files of an interrupted write are ignored)."""
    folder = trials_dir(run_dir)
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def finished_ids(run_dir: Path) -> set[str]:
    """Trials that completed successfully; failed ones are run again on resume."""
    return {t["trial_id"] for t in read_trials(run_dir) if t.get("status") == "ok"}


def load_frame(run_dir: Path):
    """All trials of a run as a pandas DataFrame, one row per trial."""
    import pandas as pd

    rows = read_trials(run_dir)
    columns = [
        "trial_id",
        "method",
        "task",
        "model",
        "seed",
        "status",
        "error",
        "score",
        "train_seconds",
        "eval_seconds",
        "peak_memory_bytes",
        "steps",
    ]
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
