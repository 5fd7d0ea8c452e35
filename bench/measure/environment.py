"""Where a trial ran: versions (and how they differ from the lock), device, machine
fingerprint, git commit.

The fingerprint (CPU model, cores, GPU names and memory, CUDA and driver versions) is what
regression checks key absolute times on: a time is only comparable with one taken on a
machine with the same fingerprint.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch


def _git_commit(repo: Path) -> tuple[str | None, bool | None]:
    """Commit of the clone this package runs from; None when it is not a clone's root
    (an installed wheel inside some unrelated repository must not report its commit)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        top = git("rev-parse", "--show-toplevel")
        if not top or Path(top).resolve() != repo.resolve():
            return None, None
        commit = git("rev-parse", "HEAD") or None
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, dirty


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out else None


def machine() -> dict[str, Any]:
    """CPU model, core count and load average, for reading timings of a shared box."""
    try:
        load = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        load = None
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "loadavg": load}


def fingerprint() -> dict[str, Any]:
    """What decides how fast this machine is: CPU, cores, GPUs, CUDA and driver.

    Two results with equal fingerprints (``fingerprint_key``) may compare absolute times.
    """
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"name": props.name, "memory_bytes": int(props.total_memory)})
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "gpus": gpus,
        "cuda_version": torch.version.cuda if torch.cuda.is_available() else None,
        "driver_version": _nvidia_driver() if gpus else None,
    }


def fingerprint_key(fp: dict[str, Any] | None) -> str:
    """A short stable name for a fingerprint, e.g. for a history folder."""
    import hashlib
    import json

    if not fp:
        return "unknown"
    fields = {k: fp.get(k) for k in ("cpu_model", "cpu_count", "machine", "gpus", "cuda_version")}
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


# The clone's lock (scripts/lock.py); absent from an installed wheel.
LOCK_FILE = Path(__file__).resolve().parents[2] / "requirements.lock"


@functools.cache
def lock_status(path: Path = LOCK_FILE) -> dict[str, Any] | None:
    """The lock the clone installs from, against what this process has installed: the
    file's SHA-1 (the locked versions are the file at the record's git commit) and every
    locked package whose installed version differs, as {name: {"locked", "installed"}}
    (installed None when missing; local labels such as torch's "+cpu" ignored). None
    without a lock file."""
    import hashlib

    try:
        text = path.read_text()
    except OSError:
        return None
    installed = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            installed[re.sub(r"[-_.]+", "-", name).lower()] = dist.version.split("+")[0]
    differs = {}
    for line in text.splitlines():
        name, sep, version = line.strip().partition("==")
        if not sep or line.startswith("#"):
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        if installed.get(key) != version:
            differs[name] = {"locked": version, "installed": installed.get(key)}
    return {
        "file": path.name,
        "sha1": hashlib.sha1(text.encode()).hexdigest(),
        "differs": differs,
    }


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, device and machine of a trial (the record's ``environment``)."""
    versions = {}
    for dist in ("torch", "transformers", "lm_eval", "ray", "peft", "datasets", "hizfo-bench"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    commit, dirty = _git_commit(Path(__file__).resolve().parents[2])
    fp = fingerprint()
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = fp["cpu_model"] or platform.machine()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "lock": lock_status(),
        "device": str(device),
        "device_name": device_name,
        "torch_threads": torch.get_num_threads(),
        "machine": fp,
        "machine_key": fingerprint_key(fp),
        "git_commit": commit,
        "git_dirty": dirty,
        "hostname": platform.node(),
    }
