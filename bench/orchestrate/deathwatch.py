"""Trial workers die with their driver: a death watch on the driver's process.

After ``kill -9`` of the driver, Ray's workers kept training and checkpointing for a while
(issue 31), racing a resume on the same files once the run-dir lock was gone. The driver
passes its identity (host, pid, and the kernel's start time of that pid, so a reused pid
is not taken for it) to every trial; the worker starts a daemon thread that checks every
``INTERVAL_S`` whether that process still runs, and ends the worker (``os._exit``) as soon
as it does not. The same check runs before every checkpoint write
(bench/train/checkpoint.py's write guards), so no checkpoint is begun after the driver
died. On another host than the driver's the pid cannot be seen: there the watch stays
off and Ray's own owner-death handling ends the worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("hizfo_bench.sweep")

INTERVAL_S = 0.5  # how often a worker looks for its driver
EXIT_STATUS = 75  # what a worker whose driver died exits with


def _start_ticks(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), None if it is gone or a
    zombie (a killed driver not yet reaped by its parent)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def driver_identity() -> dict[str, Any]:
    """This process's identity, for its workers to watch."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _start_ticks(pid)}


def driver_alive(identity: dict[str, Any]) -> bool:
    """Whether the process `identity` names still runs (True when it cannot be told: on
    another host, or without /proc)."""
    if identity.get("host") != socket.gethostname() or identity.get("start") is None:
        return True
    return _start_ticks(int(identity["pid"])) == identity["start"]


def exit_if_orphaned(identity: dict[str, Any]) -> None:
    """End this worker at once when its driver is gone."""
    if not driver_alive(identity):
        log.error("driver pid %s is gone: this worker stops", identity.get("pid"))
        logging.shutdown()
        os._exit(EXIT_STATUS)


_watching: dict[str, Any] = {}


def watch(identity: dict[str, Any] | None) -> None:
    """Start (once per worker process and driver) the thread that ends this worker when
    the driver `identity` names dies. None: no watch."""
    if not identity or _watching.get("identity") == identity:
        return
    _watching["identity"] = identity

    def loop() -> None:
        while _watching.get("identity") == identity:
            exit_if_orphaned(identity)
            time.sleep(INTERVAL_S)

    threading.Thread(target=loop, name="hizfo-driver-watch", daemon=True).start()
