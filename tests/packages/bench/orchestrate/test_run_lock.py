"""The run-directory lock covers the whole `run`: tuning, target setting, targets.json,
the final trials and the annotation, with no gap between them for a second run."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest
from helpers.specs import make_spec

from bench import store
from bench.orchestrate import plan, runlock
from bench.orchestrate.sweep import Sweep, run_sweep


def _locked(run_dir: Path) -> bool:
    """Whether someone holds the run dir's lock (a second open file conflicts with it,
    in this process too)."""
    if not (run_dir / ".lock").exists():
        return False
    with open(run_dir / ".lock") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_the_lock_is_held_from_the_first_write_of_run_to_the_last(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    seen: list[tuple[str, bool]] = []
    final = make_spec("none", steps=0)
    stage = make_spec("none", steps=0, seed=7, phase="target")

    def fake_sweep(specs, folder, **kwargs):
        seen.append((f"sweep {specs[0].phase}", _locked(folder)))
        return Sweep()

    def fake_set_targets(records, targets):
        seen.append(("set targets", _locked(run_dir)))
        return {"math-mini": {"value": 1.0}}

    def fake_annotate(records, targets, resolved):
        seen.append(("annotate", _locked(run_dir)))
        return []

    monkeypatch.setattr(plan, "run_sweep", fake_sweep)
    monkeypatch.setattr(plan, "target_specs", lambda specs, targets: [stage])
    monkeypatch.setattr(plan, "set_targets", fake_set_targets)
    monkeypatch.setattr(plan, "annotate", fake_annotate)

    plan.run_plan([final], run_dir, targets={"math-mini": {"seeds": [7]}})

    assert seen == [
        ("sweep target", True),
        ("set targets", True),
        ("annotate", True),
        ("sweep final", True),
    ] or seen == [
        ("sweep target", True),
        ("set targets", True),
        ("sweep final", True),
        ("annotate", True),
    ]
    assert (run_dir / "targets.json").is_file()
    assert not _locked(run_dir)  # released at the end


def test_a_run_is_refused_while_another_holds_the_lock(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    ran = []
    monkeypatch.setattr(plan, "run_sweep", lambda *a, **k: ran.append(1) or Sweep())
    run_dir.mkdir()
    with open(run_dir / ".lock", "w") as f:  # another run's lock
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(store.RunDirBusyError):
            plan.run_plan([make_spec("none", steps=0)], run_dir)
        fcntl.flock(f, fcntl.LOCK_UN)
    assert not ran  # refused before anything ran or was written


def test_a_sweep_inside_the_plan_joins_its_lock(tmp_path):
    run_dir = tmp_path / "run"
    with runlock.held(run_dir):
        sweep = run_sweep([], run_dir, progress=False)  # no RunDirBusyError from itself
        assert _locked(run_dir)
    assert sweep.records == [] and not _locked(run_dir)
