"""Checkpoints that recover: written to the disk before they claim to be complete, and a
damaged one skipped (named in a warning) for the newest one that loads, or step 0, with
the losses of an uninterrupted run bit for bit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.spec import DevConfig, EvalConfig, TrainConfig, TrialSpec
from bench.train import checkpoint
from bench.train.checkpoint import LOOP_STATE, META, METHOD_STATE
from bench.train.hooks import Hook
from bench.train.recipe import run_trial

STEPS = 6


class Killed(Exception):
    pass


class KillAfter(Hook):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_step(self, state, stats) -> None:
        if state.step == self.at:
            raise Killed(f"killed after step {state.step}")


def _spec() -> TrialSpec:
    return TrialSpec(
        method="fo-adamw",
        task="math-mini",
        model="tiny",
        seed=3,
        method_config={"lr": 1e-3},
        train=TrainConfig(
            steps=STEPS, batch_size=2, max_length=64, train_examples=12, log_every=1, save_every=2
        ),
        dev=DevConfig(eval_every=3, batches=1),
        eval=EvalConfig(limit=1, batch_size=1, max_gen_toks=2),
        phase="tune",  # dev only: no test scoring, a shorter test
    )


def _torn(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# What is damaged, in which checkpoint, and the step the resumed trial starts from.
DAMAGE = {
    "half-written weights": ([("step-00000004", "model.safetensors", _torn)], 2),
    "checkpoint.json of {": (
        [("step-00000004", META, lambda p: p.write_text("{"))],
        2,
    ),
    "both damaged": (
        [
            ("step-00000004", "model.safetensors", _torn),
            ("step-00000002", METHOD_STATE, _torn),
        ],
        0,
    ),
    "torn loop state": ([("step-00000004", LOOP_STATE, _torn)], 2),
}


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    record = run_trial(_spec(), run_dir=tmp_path_factory.mktemp("whole"))
    assert record["status"] == "ok", record["error"]
    return record


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_skipped_for_the_newest_that_loads(tmp_path, whole, damage):
    spec = _spec()
    killed = run_trial(spec, run_dir=tmp_path, hooks=[KillAfter(5)])
    assert killed["checkpoint"]["saved_steps"] == [2, 4]
    folder = tmp_path / "checkpoints" / spec.trial_id
    damaged, start = DAMAGE[damage]
    for name, file, spoil in damaged:
        spoil(folder / name / file)

    resumed = run_trial(spec, run_dir=tmp_path)

    assert resumed["status"] == "ok", resumed["error"]
    assert resumed["checkpoint"]["resumed_from_step"] == (start or None)
    warnings = resumed["warnings"] or []
    for name, file, _ in damaged:
        # One warning per damaged checkpoint, naming its folder and file.
        assert any(str(folder / name / file) in w for w in warnings), warnings
    assert all(w.startswith(f"{spec.trial_id}: skipping a checkpoint: ") for w in warnings)
    # Bit for bit the losses of the run that was never interrupted.
    assert [p["loss"] for p in resumed["curve"]] == [p["loss"] for p in whole["curve"]]
    assert [p["dev_loss"] for p in resumed["eval_curve"]] == [
        p["dev_loss"] for p in whole["eval_curve"]
    ]


def test_checkpoint_files_and_folders_reach_the_disk_before_checkpoint_json(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def recording_replace(src, dst):
        events.append(("replace", str(dst)))
        return replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "fsync", recording_fsync)
    monkeypatch.setattr(checkpoint.os, "replace", recording_replace)
    spec = _spec()
    run_trial(spec, run_dir=tmp_path, hooks=[KillAfter(3)])  # one checkpoint, at step 2

    target = tmp_path / "checkpoints" / spec.trial_id / "step-00000002"
    written = [p for p in target.rglob("*") if p.name != META]
    assert written  # weights, tokenizer, method and loop state
    # Built in step-00000002.tmp, renamed into place: fsynced under the temporary name.
    building = target.with_name(target.name + ".tmp")
    done = [e for e in events if e == ("replace", str(building / META))]
    assert done, events
    before = {path for kind, path in events[: events.index(done[0])] if kind == "fsync"}
    for p in written:
        assert str(building / p.relative_to(target)) in before, p
    assert str(building) in before  # the folder itself
    after = {path for kind, path in events[events.index(done[0]) :] if kind == "fsync"}
    assert str(building) in after  # checkpoint.json's entry in it
    assert str(target.parent) in after  # the rename into place
