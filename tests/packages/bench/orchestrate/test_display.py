"""The live display's phase label and sweep-level ETA (bench/orchestrate/display.py)."""

from __future__ import annotations

import io

import pytest

from bench.orchestrate.display import SweepDisplay, phase_label, sweep_eta


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _training(step: int, total: int, train_seconds: float) -> dict:
    return {"phase": "training", "step": step, "total_steps": total, "train_seconds": train_seconds}


def test_phase_labels():
    assert phase_label(["tune", "tune"]) == "tuning"
    assert phase_label(["final"]) == "final"
    assert phase_label(["target"]) == "target setting"
    assert phase_label(["final", "tune"]) == "tuning + final"
    assert phase_label([]) is None


def test_sweep_eta_from_finished_trials():
    # 4 queued trials of 100 s each and one running 30 s into its 100, on 2 slots:
    # (70 + 4 * 100) / 2 = 235 s.
    assert sweep_eta([(30.0, None)], 4, [90.0, 110.0], 2) == pytest.approx(235.0)
    # A running trial's own ETA wins when it is longer than the typical rest.
    assert sweep_eta([(30.0, 500.0)], 0, [100.0], 2) == pytest.approx(500.0)
    # Never shorter than the longest running remainder, however many slots.
    assert sweep_eta([(0.0, None), (90.0, None)], 0, [100.0], 8) == pytest.approx(100.0)


def test_sweep_eta_before_any_trial_finished():
    # Typical trial: elapsed + train ETA of the running ones, (10 + 30 + 30 + 10) / 2 = 40.
    assert sweep_eta([(10.0, 30.0), (30.0, 10.0)], 2, [], 2) == pytest.approx(
        (30.0 + 10.0 + 2 * 40.0) / 2
    )
    assert sweep_eta([(10.0, None)], 3, [], 2) is None  # nothing to go on yet


def test_tally_names_the_phase_and_the_sweep_eta():
    clock = Clock()
    stream = io.StringIO()
    display = SweepDisplay(4, stream=stream, phase="tuning", slots=2, clock=clock)
    display.update({"a": {"phase": "loading"}, "b": None, "c": None, "d": None})
    tally = display.tally()
    assert tally.startswith("tuning trials: 0/4 finished (0 ok, 0 failed), 1 running, 3 queued")
    assert "ETA" not in tally  # nothing measured yet
    clock.now += 10
    # 10 s in, 5 of 10 steps in 20 s of train clock: 20 s left, so a trial is ~30 s.
    display.update({"a": _training(5, 10, 20.0), "b": None, "c": None, "d": None})
    assert display.eta() == pytest.approx((20.0 + 3 * 30.0) / 2)
    clock.now += 30
    display.finished("a", {"status": "ok", "score": 0.5})  # took 40 s
    assert display.eta() == pytest.approx(3 * 40.0 / 2)
    assert display.tally().endswith("sweep ETA ~01:00")
    display.update({"b": {"phase": "loading"}, "c": {"phase": "loading"}, "d": None})
    clock.now += 40
    for trial_id in "bcd":  # d finished between two looks: it never showed as running
        display.finished(trial_id, {"status": "ok", "score": 0.5})
    display.close()
    last = stream.getvalue().splitlines()[-1]
    assert last.startswith("tuning trials: 4/4 finished") and "ETA" not in last


def test_slots_default_to_the_most_trials_seen_running_at_once():
    clock = Clock()
    display = SweepDisplay(6, stream=io.StringIO(), clock=clock)
    display.update({t: _training(1, 2, 10.0) for t in "abc"})  # each: 10 s left
    clock.now += 5
    # typical trial: 5 s elapsed + 10 s ETA = 15 s; 3 running (10 s left each), 3 queued
    assert display.eta() == pytest.approx((3 * 10.0 + 3 * 15.0) / 3)
    assert display.tally().startswith("trials: 0/6")  # no phase given: no label


# ---- issue 35: phase names that read right, phases after training, 80 columns --------

LONG_ID = "hizfo[zo-off]__docstring-summary__smollm2_135m__s0__1a2b3c4d"


def test_the_final_phase_reads_as_final_trials_not_finished():
    display = SweepDisplay(2, stream=io.StringIO(), phase=phase_label(["final"]))
    assert display.tally().startswith("final trials: 0/2 finished")
    assert "final:" not in display.tally()


def test_sharpness_and_scoring_show_as_their_own_phases():
    from bench.orchestrate.display import trial_line

    done = {"step": 6, "total_steps": 6, "loss": 1.0}
    assert trial_line("t", {"phase": "sharpness", **done}) == (
        "t  measuring sharpness (6/6 steps  loss 1.0000)"
    )
    assert trial_line("t", {"phase": "scoring", **done}).startswith("t  scoring the test set")
    assert "evaluating" not in trial_line("t", {"phase": "evaluating", **done})


@pytest.mark.parametrize("columns", [80, 72])
def test_at_80_columns_no_eta_or_step_is_cut(columns):
    from bench.orchestrate.display import trial_line

    width = columns - 1
    clock = Clock()
    display = SweepDisplay(15, stream=io.StringIO(), phase="tuning + final", slots=2, clock=clock)
    progress = {"phase": "training", "step": 123, "total_steps": 1000, "loss": 1.23456}
    progress["train_seconds"] = 246.0  # 2 s per step: 877 steps left, 29:14
    stalled = {**progress, "silent_seconds": 200.0, "stall_limit": 600.0, "stalled": True}
    clock.now += 3700
    display.update({LONG_ID: progress, LONG_ID[:-1] + "e": stalled})
    lines = display.lines(width)
    assert all(len(line) <= width for line in lines)
    assert "ETA ~" in lines[0] and lines[0].startswith("tuning + final trials: 0/15")
    assert lines[0].endswith(display.tally().rsplit("ETA ~", 1)[1])  # the ETA whole
    for line in lines[1:]:
        assert "step 123/1000" in line and "ETA 29:14" in line
        assert line.strip().startswith("hizfo[zo-")  # the id shortened, not dropped
    assert "STALLED" in lines[2] or "STALLED" in lines[1]
    # Without a width (a pipe) nothing is shortened.
    assert trial_line(LONG_ID, progress).startswith(LONG_ID + "  step 123/1000  loss 1.2346")


def test_measuring_and_scoring_count_in_the_etas():
    """After a trial took 30 s measuring and scoring, a training trial's ETA adds that to
    its train-clock ETA, a scoring trial's ETA is what is left of it, and the sweep's ETA
    counts both; before any trial finished the after-training time is unknown (0)."""
    clock = Clock()
    display = SweepDisplay(3, stream=io.StringIO(), slots=2, clock=clock)
    display.update({"a": _training(5, 10, 10.0), "b": _training(5, 10, 10.0), "c": None})
    assert display.trial_eta("a") == pytest.approx(10.0)  # train clock only: nothing known
    clock.now += 10
    after = {"step": 10, "total_steps": 10, "loss": 1.0}
    display.update({"a": {"phase": "sharpness", **after}, "b": _training(5, 10, 10.0), "c": None})
    assert display.trial_eta("a") is None  # measuring, and no trial has finished it yet
    clock.now += 30
    display.finished("a", {"status": "ok", "score": 0.5})  # 30 s after training
    assert display.trial_eta("b") == pytest.approx(10.0 + 30.0)
    assert display.lines()[1].endswith("ETA 00:40")
    display.update({"b": {"phase": "scoring", **after}, "c": _training(1, 10, 1.0)})
    clock.now += 10
    assert display.trial_eta("b") == pytest.approx(20.0)
    assert "scoring the test set" in display.lines()[1] and display.lines()[1].endswith("00:20")
    assert display.trial_eta("c") == pytest.approx(9.0 + 30.0)
    # A failed trial's time after training is no measure of the others'.
    clock.now += 50
    display.finished("b", {"status": "failed", "error": "x"})
    assert display.trial_eta("c") == pytest.approx(9.0 + 30.0)
