"""Faults are recorded, not crashes: a full disk stops the sweep with one line, keeps every
finished trial and leaves the interrupted one for the resume."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest
from helpers.specs import make_spec

from bench import store
from bench.orchestrate.session import ResourceError
from bench.orchestrate.sweep import ResultWriteError, run_sweep


@contextlib.contextmanager
def small_filesystem(folder: Path, size: str = "8m"):
    """A tmpfs of `size` mounted on `folder` (root only; the test is skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write files until the filesystem is full (the kernel says ENOSPC), in ever smaller
    pieces down to one byte: a 64 KiB write that fails can leave room for a trial file,
    which made the count of kept trials depend on where the last big write ended."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 512, 64, 1):
            chunk = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    f.write(chunk)
    return filler


@pytest.mark.integration
def test_a_full_disk_stops_the_sweep_in_one_line_and_the_resume_completes(
    ray_cluster, tmp_path, monkeypatch
):
    specs = [make_spec("none", seed=s, steps=0, limit=2) for s in range(3)]
    with small_filesystem(tmp_path / "small") as disk:
        run_dir = disk / "run"
        write_trial = store.write_trial
        fillers = []

        def write_then_fill(folder, record):  # the disk fills up after the first result
            if fillers:  # and stays full: the sweep frees a progress file after each
                fill(disk)  # result, room enough for a small trial file (a flaky count)
            path = write_trial(folder, record)
            fillers.append(fill(disk))
            return path

        monkeypatch.setattr(store, "write_trial", write_then_fill)
        with pytest.raises(ResultWriteError) as info:
            run_sweep(specs, run_dir, progress=False)
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"cannot write {store.trials_dir(run_dir)}/")
        assert "No space left on device" in message and "MiB free" in message
        assert "1 finished trial(s) of it are kept, run it again to resume" in message
        kept = store.read_trials(run_dir)
        assert [r.status for r in kept] == ["ok"]
        before = (store.trials_dir(run_dir) / f"{kept[0].trial_id}.json").read_bytes()
        assert not list(store.trials_dir(run_dir).glob(".*.tmp"))  # nothing torn

        # Room again: the resume runs the interrupted trial and the rest, once each.
        fillers[0].unlink()
        monkeypatch.setattr(store, "write_trial", write_trial)
        sweep = run_sweep(specs, run_dir, progress=False)
        assert sweep.skipped == 1 and len(sweep.records) == 2
        records = store.read_trials(run_dir)
        assert sorted(r.trial_id for r in records) == sorted(s.trial_id for s in specs)
        assert all(r.ok for r in records)
        assert (store.trials_dir(run_dir) / f"{kept[0].trial_id}.json").read_bytes() == before


@pytest.mark.integration
def test_a_cluster_too_small_for_one_trial_leaves_no_run_directory(ray_cluster, tmp_path):
    # The existing cluster (2 CPUs) is only known once connected: the error still comes
    # before any trial, and the run directory the sweep made is gone again.
    run_dir = tmp_path / "run"
    with pytest.raises(ResourceError, match="64 CPUs per trial, but the largest node has 2"):
        run_sweep([make_spec("none", steps=0)], run_dir, cpus_per_trial=64, progress=False)
    assert not run_dir.exists()


def test_any_other_file_a_run_cannot_write_is_one_line_too(tmp_path, capsys, monkeypatch):
    import errno
    import json

    from bench.cli import main
    from bench.orchestrate import plan

    target = tmp_path / "run" / "targets.json"

    def disk_full(*args, **kwargs):  # as plan.run_plan writing targets.json on a full disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(plan, "run_plan", disk_full)
    suite = tmp_path / "s.yaml"
    suite.write_text(json.dumps({"models": ["tiny"], "tasks": ["math-mini"], "methods": ["none"]}))
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "run")]) == 1
    started, err = capsys.readouterr().err.strip().splitlines()  # the suite line, the error
    assert started.startswith("suite s: 1 trials")
    assert err.startswith(f"hizfo-bench: error: cannot write {target}: No space left on device (")
    assert "MiB free); finished trials are kept, run again to resume" in err
