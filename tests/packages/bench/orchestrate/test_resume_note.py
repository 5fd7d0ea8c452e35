"""What the console says about checkpoints on resume and on interrupt (issue 35)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.orchestrate.resume_note import interrupt_note, resume_line, resume_steps
from bench.train.checkpoint import CHECKPOINTS, META
from bench.train.progress import write_progress


def _checkpoint(run: Path, trial_id: str, step: int, *, final: bool = False) -> None:
    folder = run / CHECKPOINTS / trial_id
    folder = folder if final else folder / f"step-{step:08d}"
    folder.mkdir(parents=True)
    (folder / META).write_text(json.dumps({"trial_id": trial_id, "step": step}))


def test_a_resume_names_the_trials_it_continues_and_their_steps(tmp_path):
    _checkpoint(tmp_path, "a", 100)
    _checkpoint(tmp_path, "a", 200)  # the newest counts
    _checkpoint(tmp_path, "b", 50)
    steps = resume_steps(tmp_path, ["a", "b", "c"])  # c has none
    assert steps == {"a": 200, "b": 50}
    assert resume_line(steps) == (
        "resuming 2 trials from a checkpoint: a from step 200, b from step 50"
    )
    assert resume_line({}) is None


def test_the_interrupt_note_names_each_running_trial_and_its_step(tmp_path):
    for trial_id in ("a", "b"):  # running: their progress files are there
        write_progress(tmp_path, trial_id, phase="training", step=250, total_steps=400)
    _checkpoint(tmp_path, "a", 200)
    note = interrupt_note(tmp_path)
    assert note.startswith("hizfo-bench: 2 running trials stopped: ")
    assert "a resume continues a from step 200" in note
    assert "1 left no checkpoint and restart from step 0 (b;" in note
    assert "\n" not in note
    assert interrupt_note(tmp_path / "nothing") == "hizfo-bench: no trial was running"


def test_a_resumed_sweep_says_which_trials_continue_from_which_step(tmp_path, monkeypatch, caplog):
    from helpers.specs import make_spec

    from bench.orchestrate import sweep as sweep_module

    spec = make_spec("fo-adamw", {"lr": 1e-3})
    _checkpoint(tmp_path, spec.trial_id, 4)

    class Stop(Exception):
        pass

    def no_cluster(*args, **kwargs):
        raise Stop  # what comes before the cluster is what this test is about

    monkeypatch.setattr(sweep_module.session, "start_ray", no_cluster)
    monkeypatch.setattr("bench.models.prepare", lambda model: None)
    caplog.set_level("WARNING", logger="hizfo_bench.sweep")
    with pytest.raises(Stop):
        sweep_module.run_sweep([spec], tmp_path, progress=False)
    assert f"resuming 1 trial from a checkpoint: {spec.trial_id} from step 4" in caplog.text


def test_an_interrupted_run_names_the_step_each_running_trial_resumes_from(
    tmp_path, monkeypatch, capsys
):
    import yaml

    from bench.cli import main
    from bench.orchestrate import plan

    suite = {
        "name": "mine",
        "models": ["tiny"],
        "tasks": ["math-mini"],
        "methods": ["none"],
        "train": {"steps": 2, "batch_size": 2},
        "eval": {"limit": 2, "batch_size": 2},
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    run = tmp_path / "run"

    def interrupted(specs, run_dir, **kwargs):
        (spec,) = specs
        write_progress(run_dir, spec.trial_id, phase="training", step=2, total_steps=2)
        _checkpoint(Path(run_dir), spec.trial_id, 1)
        raise KeyboardInterrupt

    monkeypatch.setattr(plan, "run_sweep", interrupted)
    code = main(["run", "--suite", str(path), "--out", str(run)])
    err = capsys.readouterr().err.splitlines()
    assert code == 130
    assert err[-2].startswith("hizfo-bench: 1 running trial stopped: left checkpoints")
    assert err[-2].endswith("from step 1")
    assert err[-1].startswith("hizfo-bench: interrupted")
