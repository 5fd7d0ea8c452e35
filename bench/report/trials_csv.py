"""report/trials.csv: one row per trial of a run, flat columns, for pandas, R or a
spreadsheet.

Every trial file of the run is a row, tuning and target-setting trials included (the
``phase`` column tells them apart; the report's tables show only final ones). Nested
fields become dotted columns (``metrics.exact_match,strict-match``,
``memory.breakdown.optimizer_state_bytes``, ``config.method_config.lr``,
``passes.forward``); lists inside ``config`` become JSON text, other lists (the
profiling history in ``method_summary``, for one) are left out, as are the per-step
series (``curve``, ``eval_curve``, ``step_extra``: they live in the trial file and
``metrics/``) and the traceback. A few derived columns sit beside them: the last
training loss and the last dev loss and score. Columns are the union over the run's
trials (methods have different config fields); a trial without a column leaves it empty.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from bench import store
from bench.format import flatten
from bench.record import TrialRecord

# Left out: per-step series (in the trial file and metrics/), the traceback, and what
# this version does not know.
_DROPPED = ("curve", "eval_curve", "step_extra", "traceback", "extra", "schema")
# First columns, in this order; the rest follow sorted by name.
LEADING = (
    "run",
    "trial_id",
    "method",
    "task",
    "model",
    "seed",
    "phase",
    "status",
    "error",
    "score",
    "train_seconds",
    "eval_seconds",
    "peak_memory_bytes",
    "steps",
    "final_loss",
    "final_dev_loss",
    "final_dev_score",
)


def trial_row(record: TrialRecord, run: str = "") -> dict[str, Any]:
    """One trial record (its file's object) as a flat row (see the module docstring)."""
    row: dict[str, Any] = {"run": run}
    written = record.to_dict()
    for key in record.read_keys or written:  # what the file holds, in its order
        value = written.get(key)
        if key not in _DROPPED:
            row.update(flatten(value, key, lists="json" if key == "config" else "drop"))
    row["phase"] = record.config.get("phase", "final")
    row["final_loss"] = record.curve[-1].get("loss") if record.curve else None
    for metric in ("dev_loss", "dev_score"):
        values = [p[metric] for p in record.eval_curve if p.get(metric) is not None]
        row[f"final_{metric}"] = values[-1] if values else None
    return row


def trial_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The leading columns present, then the rest by name."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return [c for c in LEADING if c in seen] + sorted(set(seen) - set(LEADING))


def write_trials_csv(run_dir: Path, out_dir: Path) -> Path:
    """``out_dir/trials.csv`` over every trial file of `run_dir`; returns its path.

    Written with the csv module, not pandas: a column that is empty for some trials
    keeps its integers as integers."""
    run_dir = Path(run_dir)
    records = sorted(store.read_run(run_dir).records, key=lambda r: r.trial_id)
    rows = [trial_row(r, run_dir.name) for r in records]
    path = Path(out_dir) / "trials.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=trial_columns(rows), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path
