"""The sandbox that scores generated code: it must contain hostile programs, not just wrong ones.

These tests never skip: CI installs bubblewrap through scripts/ensure-sandbox.sh, and a machine
without a working sandbox must fail loudly here rather than score code unguarded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
from helpers import REPO

from bench import sandbox
from bench.sandbox import SandboxLimits, SandboxResult, SandboxUnavailable, run

try:
    sandbox.check_available()
except SandboxUnavailable as exc:  # pragma: no cover - only on a broken setup
    pytest.fail(f"the code sandbox does not work on this machine: {exc}", pytrace=False)


def assert_failed_and_sandbox_still_works(result: SandboxResult) -> None:
    assert not result.passed
    assert result.reason
    follow_up = run("print('still here')", timeout_s=10)
    assert follow_up.passed, follow_up
    assert follow_up.stdout == "still here\n"


def processes_with(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(entry.name)
            except OSError:
                pass
    return found


def test_passing_program_passes() -> None:
    result = run(
        "def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('ok')", timeout_s=10
    )
    assert result == SandboxResult(True, None, 0, "ok\n", "", result.seconds)


def test_failing_assertion_fails_with_the_error() -> None:
    result = run("assert 1 + 1 == 3, 'arithmetic is broken'", timeout_s=10)
    assert not result.passed
    assert result.returncode == 1
    assert result.reason == "AssertionError: arithmetic is broken"
    assert 'File "main.py", line 1' in result.stderr


def test_standard_library_and_exit_work() -> None:
    code = "import collections, hashlib, math, re\nprint(math.gcd(12, 18))\nexit(0)"
    assert run(code, timeout_s=10).stdout == "6\n"
    assert run("import sys\nsys.exit(3)", timeout_s=10).reason == "exit code 3"
    pool = "import multiprocessing as mp\nwith mp.Pool(2) as pool:\n    print(pool.map(abs, [-1]))"
    assert run(pool, timeout_s=10).stdout == "[1]\n"


def test_endless_loop_times_out_and_the_whole_sandbox_is_killed() -> None:
    marker = f"sandbox-test-{uuid.uuid4().hex}"
    code = (
        "import os, sys\n"
        "if os.fork() == 0:\n"
        f"    os.execv(sys.executable, [sys.executable, '-c', 'while True: pass', {marker!r}])\n"
        "while True:\n"
        "    pass\n"
    )
    start = time.monotonic()
    result = run(code, timeout_s=1)
    assert time.monotonic() - start < 5
    assert result.reason.startswith("timeout")
    assert result.returncode is None
    deadline = time.monotonic() + 5
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []
    assert_failed_and_sandbox_still_works(result)


def test_cpu_limit() -> None:
    result = run("while True: pass", timeout_s=20, limits=SandboxLimits(cpu_seconds=1))
    assert result.reason == "killed by signal 24 (CPU time limit)"
    assert result.seconds < 10
    assert_failed_and_sandbox_still_works(result)


def test_fork_bomb_hits_the_process_limit() -> None:
    counted = (
        "import os, time\n"
        "children = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        children += 1\n"
        "finally:\n"
        "    print(children)\n"
    )
    result = run(counted, timeout_s=10, limits=SandboxLimits(max_processes=16))
    assert "BlockingIOError" in result.reason
    assert int(result.stdout) < 16
    assert_failed_and_sandbox_still_works(result)

    bomb = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    assert_failed_and_sandbox_still_works(run(bomb, timeout_s=1))


def test_allocating_all_memory_fails() -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(32 << 20))\n"
    result = run(code, timeout_s=10, limits=SandboxLimits(memory_mb=256))
    assert result.reason == "MemoryError"
    assert_failed_and_sandbox_still_works(run("bytearray(1 << 40)", timeout_s=10))


def test_big_files_and_output_are_capped() -> None:
    result = run("open('big', 'wb').write(bytes(17 << 20))", timeout_s=10)
    assert "File too large" in result.reason
    result = run("print('x' * (1 << 20))\nraise SystemExit(1)", timeout_s=10)
    assert len(result.stdout) < 10_000
    assert "bytes cut" in result.stdout


@pytest.mark.parametrize("where", ["repo", "tmp_path", "host_tmp"])
def test_cannot_write_outside_its_directory(tmp_path: Path, where: str) -> None:
    name = f"escaped-{uuid.uuid4().hex}"
    target = {
        "repo": REPO / name,
        "tmp_path": tmp_path / name,
        "host_tmp": Path("/tmp") / name,
    }[where]
    # makedirs succeeds for paths under /tmp, but only inside the sandbox's own tmpfs
    code = (
        "import os\n"
        f"os.makedirs(os.path.dirname({str(target)!r}), exist_ok=True)\n"
        f"open({str(target)!r}, 'w').write('pwned')\n"
        "raise SystemExit('wrote it')\n"
    )
    try:
        result = run(code, timeout_s=10)
        assert not target.exists()
        assert_failed_and_sandbox_still_works(result)
    finally:
        target.unlink(missing_ok=True)


def test_cannot_read_files_it_has_no_business_reading(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    for path in (secret, REPO / "pyproject.toml", Path(sandbox.__file__), Path("/etc/shadow")):
        result = run(f"print(open({str(path)!r}).read())", timeout_s=10)
        assert "FileNotFoundError" in result.reason, (path, result)
        assert "TOPSECRET" not in result.stdout
    assert_failed_and_sandbox_still_works(result)


def test_has_no_network() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        result = run(
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).send(b'x')",
            timeout_s=10,
        )
        assert "ConnectionRefusedError" in result.reason
        with pytest.raises(BlockingIOError):
            listener.accept()
    result = run(
        "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)", timeout_s=10
    )
    assert "unreachable" in result.reason
    assert_failed_and_sandbox_still_works(result)


@pytest.mark.parametrize(
    "attack",
    [
        "os.kill(os.getppid(), signal.SIGKILL)",
        "os.kill(-1, signal.SIGKILL)",
        "os.killpg(os.getpgid(0), signal.SIGKILL)",
        "os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)",
    ],
)
def test_cannot_kill_the_scorer(attack: str) -> None:
    # After the attack the program goes for the scorer's real pid, which its PID namespace hides.
    code = f"import os, signal, time\n{attack}\ntime.sleep(0.1)\nos.kill({os.getpid()}, 9)\n"
    result = run(code, timeout_s=10)
    blocked = ("PermissionError", "ProcessLookupError", "killed by signal 9")
    assert any(word in result.reason for word in blocked), result
    assert_failed_and_sandbox_still_works(result)


def test_missing_bwrap_refuses_to_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    marker = tmp_path / "ran"
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        run(f"open({str(marker)!r}, 'w')", timeout_s=10)
    with pytest.raises(SandboxUnavailable):
        sandbox.check_available()
    assert not marker.exists()


def test_broken_bwrap_refuses_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "_find_bwrap", lambda: shutil.which("false"))
    with pytest.raises(SandboxUnavailable, match="cannot start a sandbox"):
        run("print('unguarded')", timeout_s=10)


def _program_processes(marker: str) -> list[str]:
    """The sandboxed Python processes carrying `marker` (bwrap's own carry it too)."""
    return [
        pid
        for pid in processes_with(marker)
        if not Path("/proc", pid, "cmdline").read_bytes().split(b"\0")[0].endswith(b"bwrap")
    ]


def _beside_a_full_sandbox() -> SandboxResult:
    """The crosstalk case: one completion forks to its process limit and waits, and a correct
    one that runs a subprocess is scored beside it (two code trials score at once)."""
    limits = SandboxLimits(max_processes=8, memory_mb=333)  # 333 MiB: a marker in the cmdline
    marker = str(333 << 20)
    forker = (
        "import os, time\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(600)\n"
        "            os._exit(0)\n"
        "except OSError:\n"
        "    time.sleep(600)\n"
    )
    results: list[SandboxResult] = []
    thread = threading.Thread(
        target=lambda: results.append(run(forker, timeout_s=120, limits=limits))
    )
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(_program_processes(marker)) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_program_processes(marker)) == 8, "the forker never filled its sandbox"
        return run(
            "import subprocess\nsubprocess.run(['true'], check=True)\nprint('forked')",
            timeout_s=30,
            limits=SandboxLimits(max_processes=8),
        )
    finally:
        for pid in processes_with(marker):
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)
        thread.join(timeout=60)
        assert results and not results[0].passed


def test_a_sandbox_at_its_process_limit_leaves_another_sandbox_its_own() -> None:
    correct = _beside_a_full_sandbox()
    assert correct.passed, correct
    assert correct.stdout == "forked\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes share a uid only as root")
def test_the_crosstalk_case_catches_sandboxes_that_share_a_uid(monkeypatch) -> None:
    # The check of the test above: with every sandbox one uid (nobody, as before), the
    # forker's processes count against the correct program, which cannot fork.
    shared = contextlib.contextmanager(lambda: iter([65534]))
    monkeypatch.setattr(sandbox, "_own_uid", shared)
    correct = _beside_a_full_sandbox()
    assert not correct.passed and "BlockingIOError" in correct.reason, correct


@pytest.mark.skipif(os.geteuid() != 0, reason="unprivileged, the user namespace counts per sandbox")
def test_root_without_a_uid_of_its_own_refuses_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # A host (say a user namespace mapping only a few uids) where the sandbox cannot run as a
    # uid of its own cannot give it its own process limit: code tasks are refused, as without bwrap.
    monkeypatch.setattr(sandbox, "UID_BASE", 2**32 - 1)  # the invalid uid
    monkeypatch.setattr(sandbox, "UID_SLOTS", 1)
    sandbox._probe.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match="no per-sandbox process limit"):
            run("print('unguarded')", timeout_s=10)
    finally:
        sandbox._probe.cache_clear()
