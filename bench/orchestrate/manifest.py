"""A run directory that says how it was made: ``<run>/run.json`` and ``<run>/suite.yaml``.

``run.json`` holds the suite's name and file, the file's text, every ``--set`` and
filter, the command line, the code's git commit (when the code is a git checkout) and
the start time, and the trial id of every (method, task, model, seed) cell the suite
resolved to: the trial id hashes the cell's whole resolved spec, so the cells and their
ids are the resolved settings. ``suite.yaml`` is a copy of the suite file as it was.
A resume adds one entry to ``resumes`` (its command line, time, commit, sets and
filters) and keeps the first run's fields.

A resume into a run directory made by another suite (another name, or a cell both
suites have with other settings) is refused before anything runs (``check_resume``),
naming both; ``--force-resume`` resumes anyway, and the entry records the suite's text.
Cells only one of the two suites has are no difference: a filtered run (``--methods``)
and the whole suite resume into each other.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MANIFEST = "run.json"
SUITE_COPY = "suite.yaml"


class ResumeMismatch(Exception):
    """A resume into a run directory made by another suite (one line)."""


def git_commit(where: Path | None = None) -> str | None:
    """The commit of the git checkout holding `where` (default: this code), with
    ``-dirty`` when it has uncommitted changes; None outside a checkout or without git."""
    folder = Path(where) if where is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def cell_key(spec: Any) -> str:
    """``method/task/model/seed``: one cell of a suite."""
    return f"{spec.method}/{spec.task}/{spec.model}/{spec.seed}"


def new_manifest(
    name: str,
    suite_file: Path | None,
    suite_text: str | None,
    specs: Sequence[Any],
    *,
    overrides: Sequence[str] = (),
    filters: Mapping[str, Any] | None = None,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """What ``run.json`` says about this invocation (see the module docstring)."""
    return {
        "suite": name,
        "suite_file": str(suite_file) if suite_file is not None else None,
        "suite_text": suite_text,
        "set": list(overrides),
        "filters": {k: list(v) for k, v in (filters or {}).items()},
        "command": shlex.join(list(argv if argv is not None else sys.argv)),
        "cwd": os.getcwd(),
        "git_commit": git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "trials": {cell_key(s): s.trial_id for s in specs},
    }


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The run directory's ``run.json``, or None when it has none (or it does not parse)."""
    try:
        data = json.loads((Path(run_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def mismatch(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """What makes `new` another suite than the one that made the run (`old`): another
    name, or a cell both have with another trial id (other settings); None when none."""
    if old.get("suite") != new.get("suite"):
        return f"suite {old.get('suite')!r} there, {new.get('suite')!r} now"
    before, now = old.get("trials") or {}, new.get("trials") or {}
    changed = sorted(c for c in before.keys() & now.keys() if before[c] != now[c])
    if changed:
        n = len(changed)
        return (
            f"suite {new.get('suite')!r} with other settings: {n} cell"
            f"{'s differ' if n > 1 else ' differs'}, e.g. {changed[0]} ({before[changed[0]]} there, {now[changed[0]]} now)"
        )
    return None


def check_resume(run_dir: Path, manifest: Mapping[str, Any], *, force: bool = False) -> None:
    """Refuse (ResumeMismatch) a resume into `run_dir` when its ``run.json`` was written
    by another suite, unless `force`; a run directory without one is not checked."""
    old = read_manifest(run_dir)
    if old is None or force:
        return
    why = mismatch(old, manifest)
    if why:
        made_by = old.get("suite_file") or old.get("suite")
        raise ResumeMismatch(
            f"--out {run_dir} was made by suite {old.get('suite')!r} ({made_by}); this is "
            f"{why}: not resumed, nothing ran (use another --out, or --force-resume to "
            "resume anyway)"
        )


def write_manifest(run_dir: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``run.json`` (and ``suite.yaml``) for a new run directory, or add this
    invocation to ``resumes`` of an existing one; returns the ``run.json`` path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / MANIFEST
    old = read_manifest(run_dir)
    if old is None:
        data: dict[str, Any] = {"schema": 1, **manifest, "resumes": []}
        if manifest.get("suite_text") is not None and not (run_dir / SUITE_COPY).exists():
            (run_dir / SUITE_COPY).write_text(str(manifest["suite_text"]))
    else:
        data = old
        entry = {k: manifest.get(k) for k in ("command", "cwd", "git_commit", "started", "set")} | {
            "filters": manifest.get("filters")
        }
        if mismatch(old, manifest):  # forced: keep what this suite was
            entry |= {k: manifest.get(k) for k in ("suite", "suite_file", "suite_text")}
            entry["trials"] = manifest.get("trials")
        data.setdefault("resumes", []).append(entry)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path
