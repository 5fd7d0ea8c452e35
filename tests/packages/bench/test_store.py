"""Result files: atomic writes under failure and SIGKILL, tolerant reading, the run lock."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers.records import bare_record as _record

from bench import store


def test_failure_mid_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "trials" / "a.json"
    store.write_json_atomic(path, {"version": 1})

    def dump_half_then_fail(data, f, **kwargs):
        f.write('{"version": 2, "curve": [')  # a torn document, as a crash would leave
        f.flush()
        raise OSError("disk full")

    monkeypatch.setattr(store.json, "dump", dump_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        store.write_json_atomic(path, {"version": 2})
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


_WRITER = """
import sys
from pathlib import Path
from bench.store import write_json_atomic
path = Path(sys.argv[1])
big = {"curve": [{"step": i, "loss": i / 7, "seconds": i * 0.1} for i in range(40000)]}
print("ready", flush=True)
n = 0
while True:
    n += 1
    write_json_atomic(path, {"n": n, **big})
"""


def test_sigkill_during_writes_leaves_a_whole_file(tmp_path):
    path = tmp_path / "trials" / "t.json"
    for delay in (0.05, 0.2, 0.35, 0.5):  # kills land at different points of a write
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout.readline().strip() == "ready"
            deadline = time.time() + 60
            while not path.exists() and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        record = json.loads(path.read_text())  # complete, never torn
        assert record["n"] >= 1 and len(record["curve"]) == 40000
    # A temp file of a killed write may remain: hidden, so readers ignore it, and the
    # runner clears it before a sweep.
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert all(n.startswith(".t.json.") and n.endswith(".tmp") for n in leftovers), leftovers
    store.remove_temp_files(tmp_path)
    assert [p.name for p in path.parent.iterdir()] == ["t.json"]


def test_read_trials_skips_unreadable_files(tmp_path):
    store.write_trial(tmp_path, _record("good"))
    store.write_trial(tmp_path, _record("bad", status="failed"))
    (tmp_path / "trials" / "torn.json").write_text('{"trial_id": "torn", ')
    (tmp_path / "trials" / ".good.json.x1.tmp").write_text("{")
    assert [r.trial_id for r in store.read_trials(tmp_path)] == ["bad", "good"]
    assert store.finished_ids(tmp_path) == {"good"}  # failed trials run again on resume


def test_write_trial_checks_the_contract(tmp_path):
    with pytest.raises(ValueError, match="lacks .*curve"):
        store.write_trial(tmp_path, {"trial_id": "x", "status": "ok"} | {"schema": 1})


def test_run_dir_lock_is_exclusive_and_dies_with_its_process(tmp_path):
    with (
        store.run_dir_lock(tmp_path),
        pytest.raises(store.RunDirBusyError, match="in use"),
        store.run_dir_lock(tmp_path),
    ):
        pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from bench.store import run_dir_lock\n"
            "with run_dir_lock(sys.argv[1]):\n print('locked', flush=True); time.sleep(600)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(store.RunDirBusyError), store.run_dir_lock(tmp_path):
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with store.run_dir_lock(tmp_path):  # a SIGKILLed sweep never blocks the resume
        pass
