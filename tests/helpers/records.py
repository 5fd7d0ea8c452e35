"""Trial records with known contents, built through the one contract (bench/record.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import store
from bench.record import REQUIRED_FIELDS, SCHEMA, TrialRecord


def make_record(
    method: str,
    task: str = "math-mini",
    seed: int = 0,
    *,
    model: str = "tiny",
    score: float | None = 0.5,
    train_seconds: float | None = 100.0,
    peak_memory_bytes: float | None = 512 * 2**20,
    status: str = "ok",
    started_at: str = "2026-01-01T00:00:00+0000",
    steps: int = 20,
    **extra: Any,
) -> TrialRecord:
    """A contract-complete TrialRecord with plausible values."""
    curve = [
        {"step": s, "loss": 3.0 - 0.05 * s, "seconds": (train_seconds or 10) * s / steps}
        for s in range(5, steps + 1, 5)
    ]
    record = {
        "trial_id": f"{method}__{task}__{model}__s{seed}__{extra.pop('digest', 'abcd1234')}",
        "method": method,
        "task": task,
        "model": model,
        "seed": seed,
        "status": status,
        "error": None if status == "ok" else "RuntimeError: injected failure",
        "score": score if status == "ok" else None,
        "metrics": {}
        if score is None
        else {"exact_match,strict-match": score, "exact_match_stderr,strict-match": 0.05},
        "train_seconds": train_seconds,
        "eval_seconds": 5.0,
        "peak_memory_bytes": peak_memory_bytes,
        "memory": {"kind": "cpu_rss_added", "reported_bytes": peak_memory_bytes},
        "steps": steps,
        "curve": curve if method != "none" else [],
        "config": {"method": method, "task": task, "model": model, "seed": seed},
        "environment": {"device_name": "x86_64"},
        "method_summary": {},
        "started_at": started_at,
    }
    record.update(extra)
    return TrialRecord.from_dict({"schema": SCHEMA, **record})


def bare_record(trial_id: str, status: str = "ok", **extra: Any) -> dict[str, Any]:
    """A record with every required field present and as empty as the contract allows
    (numbers null, containers empty), as the store must still accept and resume from."""
    record: dict[str, Any] = {k: None for k in REQUIRED_FIELDS}
    record.update(method="m", task="t", model="tiny", seed=0, steps=0)
    record.update(metrics={}, curve=[], config={}, environment={})
    record.update(trial_id=trial_id, status=status, schema=SCHEMA, **extra)
    return record


def write_run(run_dir: Path, records: list[TrialRecord] | list[dict[str, Any]]) -> Path:
    """A run directory holding `records` as trial files."""
    for r in records:
        store.write_trial(run_dir, r)
    return run_dir
