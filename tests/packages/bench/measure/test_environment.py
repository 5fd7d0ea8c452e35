"""The record's environment names how the installed versions differ from the lock."""

from __future__ import annotations

import hashlib
from importlib import metadata

import torch

from bench.measure.environment import LOCK_FILE, environment, lock_status


def test_lock_status_lists_the_locked_packages_installed_at_another_version(tmp_path):
    torch_version = metadata.version("torch")  # e.g. 2.13.0+cpu: the local label is ignored
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "# a comment==1.0\n"
        f"torch=={torch_version.split('+')[0]}\n"
        "PyYAML==0.0.1\n"
        "no-such-package-xyz==1.0\n"
    )
    status = lock_status.__wrapped__(lock)
    assert status == {
        "file": "requirements.lock",
        "sha1": hashlib.sha1(lock.read_bytes()).hexdigest(),
        "differs": {
            "PyYAML": {"locked": "0.0.1", "installed": metadata.version("pyyaml")},
            "no-such-package-xyz": {"locked": "1.0", "installed": None},
        },
    }
    assert lock_status.__wrapped__(tmp_path / "none.lock") is None


def test_the_record_s_environment_holds_the_clone_s_lock():
    status = lock_status()
    assert status is not None and status["file"] == "requirements.lock"
    assert status["sha1"] == hashlib.sha1(LOCK_FILE.read_bytes()).hexdigest()
    assert environment(torch.device("cpu"))["lock"] == status
