"""Result files: one JSON per trial, written atomically, loaded into pandas.

The fields are a contract (bench/record.py, docs/results.md) that reports, regression
checks and outside tools read.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.record import (  # SCHEMA and the columns stay importable from here
    FRAME_COLUMNS,
    NUMERIC_COLUMNS,
    REQUIRED_FIELDS,
    SCHEMA,
    ContractError,
    TrialRecord,
    validate_record,
)

__all__ = [
    "FRAME_COLUMNS",
    "REQUIRED_FIELDS",
    "SCHEMA",
    "ContractError",
    "TrialRecord",
    "validate_record",
]

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("hizfo_bench.store")

# The contract lives in bench/record.py; these names stay importable from here.
_TEMP_SUFFIX = ".tmp"


class RunDirBusyError(RuntimeError):
    """Another process is running a sweep in the same run directory."""


def free_space(path: Path | str) -> str:
    """What is free on the filesystem of `path` (or of its nearest existing parent), as
    ``"12.3 MiB free"``; ``"free space unknown"`` when even that cannot be read."""
    import shutil

    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free"
    except OSError:
        return "free space unknown"


def trials_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "trials"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temp file in the same folder, fsync, rename: a reader sees all or nothing.

    A kill at any moment leaves either the old file (or none) or the new one, plus at
    worst a hidden ``.<name>.*.tmp`` that readers ignore and `remove_temp_files` clears.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from other readers
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself must reach the disk too, or a power cut could undo it.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def remove_temp_files(run_dir: Path) -> list[Path]:
    """Delete temp files a killed writer left behind; call only under `run_dir_lock`."""
    folder = trials_dir(run_dir)
    stale = sorted(folder.glob(f".*{_TEMP_SUFFIX}")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on a run directory for one sweep.

    Two sweeps in the same directory would run trials twice; the kernel drops the
    lock when its process dies, even by SIGKILL, so a killed sweep never blocks a resume.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirBusyError(
                f"{run_dir} is in use by another hizfo-bench run; wait for it or use another --out"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_trial(run_dir: Path, record: TrialRecord | dict[str, Any]) -> Path:
    """Write one trial file atomically; a dict is checked against the contract first."""
    if not isinstance(record, TrialRecord):
        record = TrialRecord.from_dict(record)
    path = trials_dir(run_dir) / f"{record.trial_id}.json"
    write_json_atomic(path, record.to_dict())
    return path


@dataclass
class TrialFiles:
    """A run's trial files as read: the records that keep the contract, and one line per
    file that does not (``<path>: field 'memory': ...``), which readers skip."""

    records: list[TrialRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def read_trial(path: Path) -> TrialRecord:
    """One trial file as a TrialRecord, checked once against the contract
    (`validate_record`); ContractError (its message starting with the path) when it does
    not parse or breaks it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ContractError(f"{path}: unreadable ({e})") from None
    try:
        return validate_record(data)
    except ContractError as e:
        raise ContractError(f"{path}: {e}", newer=e.newer) from None


def read_run(run_dir: Path) -> TrialFiles:
    """Every complete trial file of a run that keeps the contract (temp files of an
    interrupted write are ignored); a file that does not parse or breaks the contract is
    named in ``skipped`` with the field, so reports skip it and resume runs that trial
    again. A file of a newer schema raises ContractError: nothing here may read it."""
    folder = trials_dir(run_dir)
    files = TrialFiles()
    if not folder.is_dir():
        return files
    for p in sorted(folder.glob("*.json")):
        try:
            files.records.append(read_trial(p))
        except ContractError as e:
            if e.newer:
                raise
            files.skipped.append(str(e))
    return files


_warned: set[str] = set()


def read_trials(run_dir: Path) -> list[TrialRecord]:
    """The records of `read_run`; each skipped file is logged once per process with its
    reason (edited by hand, damaged, or written by other code), and resume runs it again."""
    files = read_run(run_dir)
    for line in files.skipped:
        if line not in _warned:
            _warned.add(line)
            log.warning("skipping trial file %s", line)
    return files.records


def finished_ids(run_dir: Path) -> set[str]:
    """Trials that completed successfully and keep the contract; failed ones and files that
    break it are run again on resume."""
    return {t.trial_id for t in read_trials(run_dir) if t.ok}


def records_frame(records: Iterable[TrialRecord], run: str = "") -> pd.DataFrame:
    """Trial records as a pandas DataFrame, one row per trial (FRAME_COLUMNS): the one
    place a frame is built from records."""
    import pandas as pd

    frame = pd.DataFrame([r.to_row(run) for r in records], columns=FRAME_COLUMNS)
    for c in NUMERIC_COLUMNS:
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    frame["started_at"] = pd.to_datetime(frame["started_at"], errors="coerce", utc=True)
    return frame


def load_frame(run_dir: Path) -> pd.DataFrame:
    """All trials of a run as a pandas DataFrame, one row per trial."""
    return records_frame(read_trials(run_dir), run=Path(run_dir).name)
