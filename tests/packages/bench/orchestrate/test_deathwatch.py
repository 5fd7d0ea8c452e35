"""Trial workers die with their driver, before they write another checkpoint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from bench.orchestrate import deathwatch


def _wait(proc: subprocess.Popen, seconds: float = 300) -> int | None:
    deadline = time.time() + seconds  # polling, generous: a busy shared box
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    return proc.poll()


def _fake_driver() -> tuple[subprocess.Popen, dict]:
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    identity = {
        "host": socket.gethostname(),
        "pid": driver.pid,
        "start": deathwatch._start_ticks(driver.pid),
    }
    return driver, identity


def test_a_driver_is_alive_until_it_dies_even_unreaped():
    assert deathwatch.driver_alive(deathwatch.driver_identity())
    driver, identity = _fake_driver()
    assert deathwatch.driver_alive(identity)
    driver.kill()
    deadline = time.time() + 60
    while deathwatch.driver_alive(identity) and time.time() < deadline:
        time.sleep(0.1)  # a zombie until reaped: already dead for the watch
    assert not deathwatch.driver_alive(identity)
    driver.wait()
    assert not deathwatch.driver_alive(identity)
    # A reused pid is another process: its start time differs.
    assert not deathwatch.driver_alive({**deathwatch.driver_identity(), "start": 1})
    # Another host's driver cannot be seen from here: Ray's owner-death handling applies.
    assert deathwatch.driver_alive({"host": "elsewhere", "pid": 1, "start": 1})


_WORKER = """
import json, sys, time
from bench.orchestrate import deathwatch
deathwatch.INTERVAL_S = 0.1
deathwatch.watch(json.loads(sys.argv[1]))
print("watching", flush=True)
while True:  # a trial that keeps training
    time.sleep(0.05)
"""


def test_a_worker_exits_when_its_driver_is_killed():
    driver, identity = _fake_driver()
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, json.dumps(identity)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout.readline().strip() == "watching"
        time.sleep(0.5)
        assert worker.poll() is None  # the driver runs: so does the worker
        os.kill(driver.pid, signal.SIGKILL)
        assert _wait(worker) == deathwatch.EXIT_STATUS
    finally:
        for p in (driver, worker):
            if p.poll() is None:
                p.kill()
            p.wait()


_CHECKPOINT = """
import json, sys
from bench.orchestrate import deathwatch
from bench.orchestrate.session import _watch_driver
from bench.train.checkpoint import TrialCheckpoints

deathwatch.INTERVAL_S = 3600  # only the guard before the write can stop it
_watch_driver(json.loads(sys.argv[1]))
ckpt = TrialCheckpoints(sys.argv[2], "t", save_every=1, final=False)
ckpt.write(1, None, None, None, {}, final=False)  # reached only with a live driver
"""


def test_no_checkpoint_is_begun_after_the_driver_died(tmp_path):
    driver, identity = _fake_driver()
    driver.kill()
    driver.wait()
    worker = subprocess.run(
        [sys.executable, "-c", _CHECKPOINT, json.dumps(identity), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert worker.returncode == deathwatch.EXIT_STATUS, worker.stderr[-2000:]
    assert not (tmp_path / "checkpoints").exists()
