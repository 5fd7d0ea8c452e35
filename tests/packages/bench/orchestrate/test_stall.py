"""The stall limit: a trial without progress is stopped and recorded failed, the display
marks it before that, and the sweep goes on."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
import torch
from helpers.plugins import HANGING_METHOD, install_plugin
from helpers.specs import make_spec

from bench import store
from bench.orchestrate import session, stall
from bench.orchestrate.display import SweepDisplay, trial_line
from bench.orchestrate.sweep import run_sweep
from bench.spec import EvalConfig, TrainConfig, TrialSpec
from bench.train import progress as progress_module
from bench.train.progress import Heartbeat


def test_the_limit_is_the_setting_or_derived_from_the_trials_step_time():
    spec = make_spec("none")
    assert stall.stall_limit(spec, None) == stall.STALL_FLOOR_S  # before the first step
    fast = {"step": 10, "train_seconds": 5.0}  # 0.5 s per step: the floor
    assert stall.stall_limit(spec, fast) == stall.STALL_FLOOR_S
    slow = {"step": 2, "train_seconds": 60.0}  # 30 s per step: 50 steps' worth
    assert stall.stall_limit(spec, slow) == pytest.approx(stall.STALL_STEPS * 30.0)
    spec.train.stall_timeout_s = 7.5
    assert stall.stall_limit(spec, {**slow, "phase": "training"}) == 7.5
    # Imports and model loading make no forward passes: the floor holds while loading.
    assert stall.stall_limit(spec, {"phase": "loading", "step": 0}) == stall.STALL_FLOOR_S
    assert stall.stall_error(12.4, {"step": 3}) == "TimeoutError: no progress for 12 s at step 3"


def test_the_setting_is_checked_and_leaves_the_trial_id_alone():
    from bench.config import ConfigError, build

    plain = make_spec("none")
    watched = make_spec("none")
    watched.train.stall_timeout_s = 30.0
    assert plain.trial_id == watched.trial_id
    with pytest.raises(ConfigError, match=r"train\.stall_timeout_s"):
        build(TrainConfig, {"stall_timeout_s": 0}, "train")


def test_the_display_marks_a_silent_trial_before_it_is_stopped():
    base = {"phase": "training", "step": 3, "total_steps": 20, "train_seconds": 3.0}
    busy = {**base, "silent_seconds": 1.0, "stall_limit": 600.0}
    silent = {**base, "silent_seconds": 200.0, "stall_limit": 600.0}
    assert "STALLED" not in trial_line("a", busy)
    assert trial_line("b", silent).endswith("STALLED: no progress for 03:20 (stopped at 10:00)")
    out = io.StringIO()
    display = SweepDisplay(3, stream=out, redraw=False, slots=2)
    display.update({"a": busy, "b": silent, "c": None})
    display.update({"a": busy, "b": silent, "c": None})  # marked once on a pipe
    assert "1 running" not in display.tally() and "2 running (1 stalled)" in display.tally()
    lines = out.getvalue().splitlines()
    assert [line for line in lines if line.startswith("stalled: ")] == [
        "stalled: b  step 3/20  ETA 00:17  STALLED: no progress for 03:20 (stopped at 10:00)"
    ]


def test_the_heartbeat_counts_forward_passes_outside_the_steps_only(tmp_path, tiny_fresh):
    model, _ = tiny_fresh
    now = [0.0]
    writes: list[dict] = []
    beat = Heartbeat(tmp_path, "t", clock=lambda: now[0])
    beat.write(phase="loading")
    original = progress_module.write_progress
    progress_module.write_progress = lambda run_dir, trial_id, **f: writes.append(f)
    try:
        beat.attach(model)
        ids = torch.tensor([[1, 2, 3]])
        now[0] += 0.5
        model(input_ids=ids)  # within a second of the last write: no rewrite
        assert writes == []
        now[0] += 1.0
        model(input_ids=ids)  # loading, set-up, evaluation, scoring: progress
        assert len(writes) == 1
        beat.armed = False  # the training steps: only a finished step counts
        now[0] += 5.0
        model(input_ids=ids)
        assert len(writes) == 1
        with beat.forwards_count():  # an evaluation point inside the loop
            model(input_ids=ids)
        assert len(writes) == 2 and beat.armed is False
    finally:
        progress_module.write_progress = original


def test_a_trial_refreshes_its_heartbeat_while_it_trains_and_scores(tmp_path, monkeypatch):
    from bench.train.recipe import run_trial

    seen: list[tuple[str, int]] = []
    write = progress_module.write_progress

    def recording(run_dir, trial_id, **fields):
        seen.append((fields["phase"], fields["step"]))
        write(run_dir, trial_id, **fields)

    monkeypatch.setattr(progress_module, "write_progress", recording)
    monkeypatch.setattr(progress_module, "BEAT_SECONDS", 0.0)  # every beat writes
    record = run_trial(make_spec("fo-adamw", {"lr": 1e-3}, steps=4, log_every=4), run_dir=tmp_path)
    assert record["status"] == "ok", record["error"]
    phases = [phase for phase, _ in seen]
    assert ("training", 0) in seen  # the loop started
    assert [s for p, s in seen if p == "training"] == sorted(s for p, s in seen if p == "training")
    assert {("training", s) for s in (1, 2, 3)} <= set(seen)  # every step, not only the log
    assert phases.count("scoring") > 2  # the scoring's forward passes beat too


def _install_plugin(folder: Path) -> None:
    install_plugin(folder, "hizfo_hanging_plugin", "hanging", "Hanging", HANGING_METHOD)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.integration
def test_a_hung_trial_is_stopped_and_recorded_failed_and_the_sweep_goes_on(
    ray_cluster, tmp_path, monkeypatch
):
    _install_plugin(tmp_path / "plugins")
    worker_env = session._worker_env()
    worker_env["PYTHONPATH"] = os.pathsep.join(
        [str(tmp_path / "plugins"), os.environ.get("PYTHONPATH", "")]
    )
    monkeypatch.setattr(session, "_worker_env", lambda: worker_env)
    pid_file = tmp_path / "hanging.pid"
    hung = TrialSpec(
        method="hanging",
        task="math-mini",
        model="tiny",
        seed=0,
        method_config={"pid_file": str(pid_file)},
        train=TrainConfig(
            steps=3, batch_size=2, max_length=64, train_examples=4, stall_timeout_s=4
        ),
        eval=EvalConfig(limit=2, batch_size=2, max_gen_toks=4),
    )
    fine = make_spec("none", steps=0, limit=2)
    run_dir = tmp_path / "run"

    sweep = run_sweep([hung, fine], run_dir, progress=False, max_retries=0)

    records = {r.trial_id: r.to_dict() for r in store.read_trials(run_dir)}
    assert records[fine.trial_id]["status"] == "ok", records[fine.trial_id]["error"]
    failed = records[hung.trial_id]
    assert failed["status"] == "failed"
    assert failed["error"].startswith("TimeoutError: no progress for ")
    assert failed["error"].endswith(" s at step 0")
    seconds = int(failed["error"].split("no progress for ")[1].split(" s")[0])
    assert seconds >= 4
    assert "over the stall limit of 4 s (train.stall_timeout_s)" in failed["traceback"]
    assert [a["outcome"] for a in failed["attempts"]["each"]] == ["stalled"]
    assert len(sweep.records) == 2
    # The hung worker was killed, not left running beside the next sweep.
    pid = int(pid_file.read_text())
    deadline = time.time() + 120
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.5)
    assert not _alive(pid)
