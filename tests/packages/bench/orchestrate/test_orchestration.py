"""Orchestration that holds up: reproducible, measured trials; failures that lose nothing."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO
from helpers.plugins import install_plugin
from helpers.specs import make_spec

from bench import store
from bench.measure.environment import environment
from bench.orchestrate import session
from bench.orchestrate.session import _worker_env
from bench.orchestrate.sweep import run_sweep
from bench.spec import EvalConfig, TrainConfig, TrialSpec
from bench.train.recipe import run_trial


def _spec(method, config, steps=6):
    return make_spec(method, config, steps=steps)


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_same_seed_gives_the_same_curve_and_score(torch_threads):
    # Workers get one thread per CPU slot; the tiny model's tensors are small enough
    # that the thread count does not change a single bit of the losses either.
    spec = _spec("fo-adamw", {"lr": 1e-3})
    torch_threads(1)
    a = run_trial(spec)
    torch_threads(2)
    b = run_trial(spec)
    assert a["status"] == b["status"] == "ok", (a["error"], b["error"])
    assert [p["loss"] for p in a["curve"]] == [p["loss"] for p in b["curve"]]
    assert a["score"] == b["score"] and a["metrics"] == b["metrics"]
    changed = run_trial(TrialSpec.from_dict({**spec.to_dict(), "seed": 1}))
    assert [p["loss"] for p in changed["curve"]] != [p["loss"] for p in a["curve"]]


def test_timings_and_memory_breakdown_add_up():
    fo = run_trial(_spec("fo-adamw", {"lr": 1e-3}))
    assert fo["status"] == "ok", fo["error"]
    parts = ("load_seconds", "setup_seconds", "train_seconds", "eval_seconds")
    assert fo["total_seconds"] >= sum(fo[k] for k in parts)
    assert fo["steps_per_second"] == pytest.approx(6 / fo["train_seconds"])
    assert fo["tokens_per_second"] > fo["steps_per_second"]
    b = fo["memory"]["breakdown"]
    params = b["gradients_bytes"]  # every tensor trains under fo-adamw
    assert 0 < params <= b["weights_bytes"]
    # AdamW: exp_avg and exp_avg_sq per parameter, plus a scalar step per tensor.
    assert 2 * params <= b["optimizer_state_bytes"] <= 2 * params + 1024
    assert b["activations_and_other_bytes"] >= 0 and b["estimate"] is True

    zo = run_trial(_spec("mezo", {"lr": 1e-3}))
    assert zo["status"] == "ok", zo["error"]
    b = zo["memory"]["breakdown"]
    assert b["gradients_bytes"] == 0 and b["optimizer_state_bytes"] == 0  # inference memory


def test_environment_records_the_commit_of_this_clone():
    repo = REPO
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    env = environment(torch.device("cpu"))
    assert env["git_commit"] == (head or None)
    assert env["packages"]["torch"] and env["device"] == "cpu"


# A plugin that SIGKILLs its own worker on its first `die_times` attempts. Ray workers
# are separate processes, so a monkeypatch here cannot reach them: the plugin is a
# real distribution on the workers' PYTHONPATH, found through the entry-point group.
_PLUGIN = """
import os
import signal
from dataclasses import dataclass


@dataclass
class DyingConfig:
    attempts_file: str = ""
    die_times: int = 0


class Dying:
    config_class = DyingConfig
    trains = False

    def __init__(self, config):
        # Dies before the model loads, to keep the test short.
        self.config = config
        with open(config.attempts_file, "a") as f:
            f.write(f"{os.getpid()}\\n")
        with open(config.attempts_file) as f:
            attempts = len(f.read().splitlines())
        if attempts <= config.die_times:
            os.kill(os.getpid(), signal.SIGKILL)

    def setup(self, model, ctx):
        return model

    def step(self, batch, step):
        raise AssertionError("does not train")

    def trainable_parameters(self):
        return []

    def state_dict(self):
        return {}

    def summary(self):
        return {}
"""


def _install_plugin(folder: Path) -> None:
    install_plugin(folder, "hizfo_dying_plugin", "dying", "Dying", _PLUGIN)


def _dying_spec(attempts_file: Path, die_times: int) -> TrialSpec:
    return TrialSpec(
        method="dying",
        task="math-mini",
        model="tiny",
        seed=0,
        method_config={"attempts_file": str(attempts_file), "die_times": die_times},
        train=TrainConfig(steps=0, batch_size=2, max_length=64, train_examples=4),
        eval=EvalConfig(limit=2, batch_size=2, max_gen_toks=4),
    )


@pytest.mark.integration
def test_dead_workers_are_retried_a_bounded_number_of_times(ray_cluster, tmp_path, monkeypatch):
    _install_plugin(tmp_path / "plugins")
    worker_env = _worker_env()
    worker_env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path / "plugins"), os.environ.get("PYTHONPATH", "")]
    )
    monkeypatch.setattr(session, "_worker_env", lambda: worker_env)
    recovers = _dying_spec(tmp_path / "recovers.txt", die_times=1)
    never = _dying_spec(tmp_path / "never.txt", die_times=99)

    sweep = run_sweep([recovers, never], tmp_path / "run", max_retries=1, progress=False)

    records = {r.trial_id: r.to_dict() for r in store.read_trials(tmp_path / "run")}
    assert records[recovers.trial_id]["status"] == "ok", records[recovers.trial_id]["error"]
    assert len((tmp_path / "recovers.txt").read_text().splitlines()) == 2  # died, then ran
    failed = records[never.trial_id]
    assert failed["status"] == "failed"
    assert failed["error"].startswith("worker died, 2 attempts: ")
    assert len((tmp_path / "never.txt").read_text().splitlines()) == 2  # 1 + max_retries
    assert len(sweep.records) == 2 and ray_cluster.is_initialized()
    # Each trial file lists its attempts: the killed one, then the one that ran.
    died_pid = int((tmp_path / "recovers.txt").read_text().splitlines()[0])
    attempts = records[recovers.trial_id]["attempts"]
    assert attempts["count"] == 2
    first, second = attempts["each"]
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert first["outcome"] == "worker died: WorkerCrashedError" and second["outcome"] == "ok"
    assert first["worker"]["pid"] == died_pid
    assert second["worker"]["pid"] == records[recovers.trial_id]["worker"]["pid"] != died_pid
    assert first["start"] <= first["end"] <= second["start"] <= second["end"]
    assert attempts["lost_seconds"] == pytest.approx(first["end"] - first["start"])
    # total_seconds is the final attempt's own: shorter than that attempt's span
    assert records[recovers.trial_id]["total_seconds"] <= second["end"] - second["start"]
    assert [a["outcome"] for a in failed["attempts"]["each"]] == [
        "worker died: WorkerCrashedError"
    ] * 2
    # Lost attempts count in the sweep's overhead figures.
    over = sweep.overhead()
    assert over["lost_attempts"] == 3
    assert over["lost_seconds"] == pytest.approx(
        attempts["lost_seconds"]
        + failed["attempts"]["lost_seconds"]
        + failed["attempts"]["each"][-1]["seconds"]
    )


def _suite_file(tmp_path: Path) -> Path:
    suite = {
        "name": "killed",
        "models": ["tiny"],
        "tasks": ["math-mini"],
        "methods": ["none"],
        "seeds": [0, 1, 2],
        "eval": {"limit": 2, "batch_size": 2, "max_gen_toks": 4},
    }
    path = tmp_path / "killed.yaml"
    path.write_text(json.dumps(suite))  # JSON is YAML
    return path


def _cli() -> str:
    return shutil.which("hizfo-bench", path=str(Path(sys.executable).parent)) or "hizfo-bench"


@pytest.mark.integration
def test_resume_after_sigkill_of_the_driver(tmp_path):
    suite, out = _suite_file(tmp_path), tmp_path / "run"
    cmd = [_cli(), "run", "--suite", str(suite), "--out", str(out), "--num-cpus", "2"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Its own session, so one killpg takes the driver, its Ray cluster and its workers.
    first = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 240
        while not list((out / "trials").glob("*.json")) and time.time() < deadline:
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    before = {
        p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "trials").glob("*.json")
    }
    assert 1 <= len(before) < 3, "the sweep must be killed halfway for this test to mean much"
    # Processes of the killed sweep can linger for a moment; let the kernel reap them.
    for _ in range(100):
        try:
            os.killpg(first.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{len(before)} of 3 trials already finished" in second.stderr
    files = sorted((out / "trials").iterdir())
    assert len(files) == 3 and all(p.suffix == ".json" for p in files)  # no temp files
    for p in files:
        record = json.loads(p.read_text())
        assert record["status"] == "ok", record["error"]
        if p.name in before:  # finished before the kill: not run again, not rewritten
            assert (p.stat().st_mtime_ns, p.read_bytes()) == before[p.name]
    # The trials of the second sweep ran in its own workers, not in leftovers of the first.
    old_pids = {json.loads(p.read_text())["worker"]["pid"] for p in files if p.name in before}
    new_pids = {json.loads(p.read_text())["worker"]["pid"] for p in files if p.name not in before}
    assert new_pids and not new_pids & old_pids


_BASE = {"models": ["tiny"], "tasks": ["math-mini"], "methods": ["none"], "seeds": [0]}


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"tasks": {"math-mini": {"config": {"lr": 1}}}}, "unknown key(s) config"),
        ({"methods": {"none": {"train": 5}}}, "methods.none.train: expected a mapping"),
        ({"train": [1]}, "suite.train: expected a mapping"),
        ({"seeds": [0, 0]}, "repeats a seed"),
        ({"seeds": [True]}, "list of integers"),
        ({"models": ["tiny", "tiny"]}, "the same trial appears twice"),
    ],
)
def test_suite_mistakes_fail_before_anything_runs(patch, message):
    from bench.config import ConfigError
    from bench.suite import expand

    with pytest.raises(ConfigError) as info:
        expand({**_BASE, **patch})
    assert message in str(info.value)


# ---- the live display and its progress files ------------------------------------------


def test_progress_file_round_trip_and_clear(tmp_path):
    from bench.train.progress import clear_progress, read_progress, write_progress

    assert read_progress(tmp_path, "t1") is None  # not started
    write_progress(tmp_path, "t1", phase="training", step=3, total_steps=10, loss=2.5)
    write_progress(tmp_path, "t1", phase="training", step=6, total_steps=10, loss=2.0)
    got = read_progress(tmp_path, "t1")
    assert (got["step"], got["loss"], got["pid"]) == (6, 2.0, os.getpid())  # the latest write
    assert [p.name for p in (tmp_path / "progress").iterdir()] == ["t1.json"]  # no temp left
    clear_progress(tmp_path, ["t1", "t2"])
    assert read_progress(tmp_path, "t1") is None


def test_trial_line_eta_from_the_train_clock():
    from bench.orchestrate.display import trial_line

    training = {"phase": "training", "step": 10, "total_steps": 40, "loss": 1.23456}
    # 2 s per step so far, 30 steps left: one minute.
    assert trial_line("t", {**training, "train_seconds": 20.0}) == (
        "t  step 10/40  loss 1.2346  ETA 01:00"
    )
    assert trial_line("t", {"phase": "evaluating", "step": 40, "total_steps": 40, "loss": 1.0})
    assert trial_line("t", {"phase": "loading"}) == "t  loading"


def test_display_on_a_pipe_prints_events_and_the_tally():
    import io

    from bench.orchestrate.display import SweepDisplay

    stream = io.StringIO()  # not a terminal: one line per event, no cursor moves
    display = SweepDisplay(3, stream=stream)
    display.update({"a": {"phase": "loading"}, "b": None, "c": None})
    display.update({"a": {"phase": "training", "step": 1, "total_steps": 2}, "b": None, "c": None})
    assert display.tally().startswith("trials: 0/3 finished (0 ok, 0 failed), 1 running, 2 queued")
    display.finished("a", {"status": "ok", "score": 0.5})
    display.finished("b", {"status": "failed", "error": "DivergenceError: nan"})
    display.close()
    lines = stream.getvalue().splitlines()
    assert lines[:3] == ["started: a", "done: a  score 0.5000", "failed: b: DivergenceError: nan"]
    assert lines[-1].startswith("trials: 2/3 finished (1 ok, 1 failed), 0 running, 1 queued")
    assert "\x1b[" not in stream.getvalue()
    quiet = io.StringIO()
    hidden = SweepDisplay(1, stream=quiet, enabled=False)
    hidden.update({"a": {"phase": "loading"}})
    hidden.finished("a", {"status": "ok", "score": 1.0})
    hidden.close()
    assert quiet.getvalue() == ""


def test_worker_logging_sends_warnings_to_the_trial_log_not_the_console(tmp_path):
    # In a fresh interpreter: the worker's logging setup changes process-wide state.
    code = f"""
import logging, warnings
from pathlib import Path
from bench.orchestrate import session
session._trial_logging(Path({str(tmp_path)!r}), "t1")
session._quiet_library_output()
warnings.warn("old API", FutureWarning)
warnings.warn("odd input", UserWarning)
logging.getLogger("hizfo_bench.train").info("t1 step 1/2 loss 3.0")
logging.getLogger("lm_eval").warning("lm-eval says")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "logs" / "t1.log").read_text()
    for line in ("FutureWarning: old API", "UserWarning: odd input", "t1 step 1/2", "lm-eval says"):
        assert line in log
    assert "FutureWarning" not in done.stderr and "lm-eval says" not in done.stderr
    # Other warnings and the trial's own lines still reach the console (seen with -v).
    assert "UserWarning: odd input" in done.stderr and "t1 step 1/2" in done.stderr


def test_display_redraws_in_place_only_on_a_terminal_without_forwarding():
    import io

    from bench.orchestrate.display import SweepDisplay

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for redraw, expect_ansi in ((True, True), (False, False)):
        stream = Terminal()
        display = SweepDisplay(2, stream=stream, redraw=redraw)
        display.update({"a": {"phase": "training", "step": 2, "total_steps": 4, "loss": 1.0}})
        display.finished("a", {"status": "ok", "score": 1.0})
        display.close()
        text = stream.getvalue()
        assert ("\x1b[" in text) == expect_ansi
        final = text.split("\x1b[J")[-1].splitlines()
        assert final[-1].startswith("trials: 1/2 finished (1 ok, 0 failed), 0 running, 1 queued")
        # The block is erased before the final tally: no running-trial line after it.
        assert not any(line.startswith("  a  step") for line in final)
