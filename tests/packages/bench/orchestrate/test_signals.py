"""SIGTERM stops a run like Ctrl-C (same line, exit 143, finished trials kept, running
ones stopped), and SIGINT works even in a driver started with it ignored."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.plugins import HANGING_METHOD, install_plugin

from bench.orchestrate import signals


@pytest.fixture
def saved_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in before.items():
        signal.signal(s, handler)


def test_sigterm_raises_terminated_a_keyboard_interrupt(saved_handlers):
    signals.install()
    with pytest.raises(signals.Terminated) as info:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at the next bytecode
    assert isinstance(info.value, KeyboardInterrupt) and info.value.exit_code == 143


def test_an_ignored_sigint_is_restored(saved_handlers):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as inherited in a script's background
    signals.install()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ray_init_does_not_take_sigterm_over(saved_handlers):
    signals.install()

    def fake_ray_init():  # what ray.init does: a handler of its own
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
        return "started"

    assert signals.keeping_ours(fake_ray_init) == "started"
    assert signals.installed()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not ours before: left to the caller
    signals.keeping_ours(fake_ray_init)
    assert not signals.installed()


def test_the_cli_says_interrupted_and_exits_143_on_sigterm(monkeypatch, capsys):
    from bench import cli
    from bench.cli import run

    def stopped(args):
        raise signals.Terminated("SIGTERM")

    monkeypatch.setattr(run, "_cmd_run", stopped)
    assert cli.main(["run", "--suite", "smoke"]) == 143
    capsys.readouterr()
    # Ray's wait turns the handler's Terminated into a plain KeyboardInterrupt.
    monkeypatch.setattr(signals, "_received", [signal.SIGTERM])
    monkeypatch.setattr(run, "_cmd_run", lambda args: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert cli.main(["run", "--suite", "smoke"]) == 143
    capsys.readouterr()
    monkeypatch.setattr(signals, "_received", [])
    assert cli.main(["run", "--suite", "smoke"]) == 130  # Ctrl-C
    err = capsys.readouterr().err
    assert (
        err.strip() == "hizfo-bench: interrupted; finished trials are saved (run again to resume)"
    )


def _install_plugin(folder: Path) -> None:
    install_plugin(folder, "hizfo_hanging_sig", "hanging-sig", "Hanging", HANGING_METHOD)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.integration
def test_sigterm_mid_sweep_stops_it_like_ctrl_c(tmp_path):
    _install_plugin(tmp_path / "plugins")
    pid_file = tmp_path / "hanging.pid"
    suite = {
        "name": "terminated",
        "models": ["tiny"],
        "tasks": ["math-mini"],
        "methods": {"none": {}, "hanging-sig": {"config": {"pid_file": str(pid_file)}}},
        "seeds": [0],
        "train": {"steps": 3, "batch_size": 2, "max_length": 64, "train_examples": 4},
        "eval": {"limit": 2, "batch_size": 2, "max_gen_toks": 4},
    }
    (tmp_path / "s.yaml").write_text(json.dumps(suite))
    out = tmp_path / "run"
    cli = shutil.which("hizfo-bench", path=str(Path(sys.executable).parent)) or "hizfo-bench"
    cmd = [cli, "run", "--suite", str(tmp_path / "s.yaml"), "--out", str(out), "--num-cpus", "2"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "plugins"), env.get("PYTHONPATH", "")])
    driver = subprocess.Popen(
        cmd,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # Started as a script's background job would be: SIGINT ignored (restored at start).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        deadline = time.time() + 600  # a busy shared box: generous
        while time.time() < deadline:
            assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
            finished = list((out / "trials").glob("*.json")) if out.exists() else []
            if finished and pid_file.exists():
                break
            time.sleep(0.5)
        assert finished and pid_file.exists(), "the sweep never got going"
        worker = int(pid_file.read_text())
        kept = {p.name: p.read_bytes() for p in finished}
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    err = err.decode()
    assert driver.returncode == 143, err[-3000:]
    assert "hizfo-bench: interrupted; finished trials are saved (run again to resume)" in err
    assert "SIGABRT" not in err and "Aborted" not in err and "core dumped" not in err
    assert {p.name: p.read_bytes() for p in (out / "trials").glob("*.json")} == kept
    # The running trial's worker was stopped with the driver.
    deadline = time.time() + 120
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.5)
    assert not _alive(worker)
