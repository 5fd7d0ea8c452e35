"""Reading what `compare` compares: a run folder, a results JSON, a trial file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import store
from bench.record import TrialRecord


class UnusableInput(ValueError):
    """A path that cannot be compared: missing, without trials, or another schema."""


# ---- loading -------------------------------------------------------------------------


def _records_from_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UnusableInput(f"{path}: not a readable JSON file ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("trials"), list):
        return data["trials"]
    if isinstance(data, list):
        return data
    return [data]


def load_records(path: Path | str) -> list[TrialRecord]:
    """Trial records from a run dir (trials/*.json), a folder of trial JSONs, or one JSON
    file holding a record, a list of records or {"trials": [...]}; checked against the
    result-file contract."""
    path = Path(path)
    if not path.exists():
        raise UnusableInput(f"{path} does not exist")
    if store.trials_dir(path).is_dir():
        files = sorted(store.trials_dir(path).glob("*.json"))
    elif path.is_dir():
        files = sorted(path.glob("*.json"))
    else:
        files = [path]
    objects = [r for f in files for r in _records_from_json(f)]
    if not objects:
        raise UnusableInput(f"{path} holds no trial records")
    records = []
    for r in objects:  # the one contract check (bench.record.validate_record)
        try:
            records.append(store.validate_record(r))
        except store.ContractError as e:
            trial = r.get("trial_id", "?") if isinstance(r, dict) else "?"
            raise UnusableInput(f"{path}: trial {trial}: {e}") from None
    return records
