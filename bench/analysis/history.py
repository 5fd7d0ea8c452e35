"""Result history kept per machine, asv-style: the baselines absolute times are judged by.

A train time means something only next to times taken on the same kind of machine: a
reference made on a developer's laptop says nothing about a CI runner. So runs are
filed under the machine's fingerprint key (bench/measure/environment.py,
``fingerprint_key``: CPU model, cores, architecture, GPUs, CUDA)::

    results/history/<machine_key>/machine.json          the fingerprint, for humans
    results/history/<machine_key>/<run name>/trials/*.json

and ``hizfo-bench compare --history results/history`` compares the current run's times
only with the last few runs filed under the current run's own key. A run is added with
``hizfo-bench history add RUN_DIR``; run names start with the run's start time, so they
sort oldest first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bench import store
from bench.analysis.regress import (
    UNKNOWN,
    UnusableInput,
    load_records,
    record_machine_key,
    trial_key,
)
from bench.record import TrialRecord

DEFAULT_ROOT = Path("results") / "history"


def run_machine_key(records: list[TrialRecord]) -> str:
    """The one machine key of a run's records; a run spread over several machines (a
    Ray cluster of different nodes) cannot be filed under one key."""
    keys = {record_machine_key(r) for r in records}
    if len(keys) > 1:
        raise UnusableInput(
            f"the run's trials ran on {len(keys)} different machines ({', '.join(sorted(keys))}); "
            "history is kept per machine"
        )
    return keys.pop()


def _run_name(records: list[TrialRecord]) -> str:
    started = min(str(r.started_at or "") for r in records)
    stamp = re.sub(r"[^0-9T]", "", started)[:15] or "undated"
    commits = {str(c) for r in records if (c := r.environment.get("git_commit")) is not None}
    commit = sorted(commits)[0][:8] if len(commits) == 1 else "mixed" if commits else "nogit"
    return f"{stamp}-{commit}"


def add_run(run_dir: Path | str, root: Path | str = DEFAULT_ROOT, name: str | None = None) -> Path:
    """Copy a run's trial records into the history of the machine it ran on.

    Returns the history run directory. Only successful trials are kept (a failed trial
    has no times to compare). Raises UnusableInput for a run without a machine
    fingerprint, or one that exists already under that name.
    """
    records = [r for r in load_records(run_dir) if r.ok]
    if not records:
        raise UnusableInput(f"{run_dir} holds no successful trial")
    key = run_machine_key(records)
    if key == UNKNOWN:
        raise UnusableInput(
            f"{run_dir}: its records carry no machine fingerprint (environment.machine_key); "
            "re-run it with this version of hizfo-bench"
        )
    machine_dir = Path(root) / key
    dest = machine_dir / (name or _run_name(records))
    if dest.exists():
        raise UnusableInput(f"{dest} exists already: this run is in the history")
    for r in records:
        store.write_trial(dest, r)
    fp = records[0].environment.get("machine")
    if fp and not (machine_dir / "machine.json").exists():
        store.write_json_atomic(machine_dir / "machine.json", fp)
    return dest


def history_runs(root: Path | str, machine_key: str) -> list[Path]:
    """The run directories filed under one machine key, oldest first."""
    machine_dir = Path(root) / machine_key
    if machine_key == UNKNOWN or not machine_dir.is_dir():
        return []
    return sorted(p for p in machine_dir.iterdir() if store.trials_dir(p).is_dir())


def baselines(
    root: Path | str,
    machine_key: str,
    *,
    last: int = 5,
    exclude: Path | str | None = None,
    match: str = "key",
) -> dict[tuple, list[TrialRecord]]:
    """Per trial key, the matching successful records of the last ``last`` history runs
    of this machine (oldest first). ``exclude`` leaves out a run that is itself in the
    history (comparing a run with itself proves nothing)."""
    runs = history_runs(root, machine_key)
    if exclude is not None:
        excluded = Path(exclude).resolve()
        runs = [r for r in runs if r.resolve() != excluded]
    out: dict[tuple, list[TrialRecord]] = {}
    for run in runs[-last:] if last > 0 else []:
        for r in load_records(run):
            if r.ok:
                out.setdefault(trial_key(r, match), []).append(r)
    return out


def describe(root: Path | str) -> list[dict[str, Any]]:
    """One entry per machine in the history: key, fingerprint and run names."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for machine_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        fp_file = machine_dir / "machine.json"
        fp = json.loads(fp_file.read_text()) if fp_file.exists() else None
        runs = [p.name for p in history_runs(root, machine_dir.name)]
        out.append({"machine_key": machine_dir.name, "machine": fp, "runs": runs})
    return out
