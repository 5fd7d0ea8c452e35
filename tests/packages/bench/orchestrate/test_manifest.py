"""A run directory that says how it was made: run.json, suite.yaml, and a resume by
another suite refused before anything runs (issue 35, bench/orchestrate/manifest.py)."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from bench.orchestrate import plan
from bench.orchestrate.manifest import (
    ResumeMismatch,
    check_resume,
    new_manifest,
    read_manifest,
    write_manifest,
)
from bench.orchestrate.sweep import Sweep
from bench.suite import load_suite


def _suite(folder: Path, name: str = "mine", steps: int = 2, **extra) -> Path:
    suite = {
        "name": name,
        "models": ["tiny"],
        "tasks": ["math-mini"],
        "methods": ["none", "fo-adamw"],
        "train": {"steps": steps, "batch_size": 2, "max_length": 48},
        "eval": {"limit": 2, "batch_size": 2, "max_gen_toks": 4},
        **extra,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{steps}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _manifest(path: Path, overrides=(), only=None) -> dict:
    name, specs = load_suite(str(path), overrides=list(overrides), only=only)
    return new_manifest(
        name, path, path.read_text(), specs, overrides=overrides, filters=only, argv=["x"]
    )


def test_run_json_and_suite_yaml_say_how_the_run_was_made(tmp_path):
    path = _suite(tmp_path)
    manifest = _manifest(path, overrides=["train.steps=2"], only={"methods": ["fo-adamw"]})
    run = tmp_path / "run"
    write_manifest(run, manifest)
    data = json.loads((run / "run.json").read_text())
    assert data["suite"] == "mine" and data["suite_file"] == str(path)
    assert data["suite_text"] == path.read_text() == (run / "suite.yaml").read_text()
    assert data["set"] == ["train.steps=2"] and data["filters"] == {"methods": ["fo-adamw"]}
    assert data["command"] == "x" and data["started"]
    assert "git_commit" in data  # the commit, or None outside a checkout
    assert list(data["trials"]) == ["fo-adamw/math-mini/tiny/0"]
    write_manifest(run, _manifest(path))  # a resume: one entry more, the first kept
    again = read_manifest(run)
    assert again["filters"] == {"methods": ["fo-adamw"]} and len(again["resumes"]) == 1


def test_a_resume_by_another_suite_is_refused_naming_both(tmp_path):
    run = tmp_path / "run"
    write_manifest(run, _manifest(_suite(tmp_path)))
    check_resume(run, _manifest(_suite(tmp_path)))  # the same suite: fine
    check_resume(run, _manifest(_suite(tmp_path), only={"methods": ["none"]}))  # a subset
    with pytest.raises(ResumeMismatch) as info:
        check_resume(run, _manifest(_suite(tmp_path, name="other")))
    assert "'mine'" in str(info.value) and "'other'" in str(info.value)
    with pytest.raises(ResumeMismatch, match="other settings: 2 cells differ"):
        check_resume(run, _manifest(_suite(tmp_path, steps=3)))
    check_resume(run, _manifest(_suite(tmp_path, steps=3)), force=True)


def test_cli_refuses_a_resume_by_another_suite_in_one_line_exit_2(tmp_path, capsys):
    run = tmp_path / "run"
    write_manifest(run, _manifest(_suite(tmp_path)))
    before = sorted(p.name for p in run.iterdir())
    other = _suite(tmp_path, steps=3)
    code = main(["run", "--suite", str(other), "--out", str(run)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"--out {run} was made by suite 'mine'" in err and "--force-resume" in err
    assert sorted(p.name for p in run.iterdir()) == before  # nothing ran, nothing written


def test_a_run_writes_its_manifest_and_its_lm_eval_tasks(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plan, "run_sweep", lambda specs, run_dir, **kw: Sweep())
    path, run = _suite(tmp_path), tmp_path / "run"
    with contextlib.suppress(KeyError):  # no trial ran: the table has no columns
        main(["run", "--suite", str(path), "--out", str(run), "--set", "eval.limit=2"])
    data = read_manifest(run)
    assert data is not None and data["set"] == ["eval.limit=2"]
    assert "--set eval.limit=2" in data["command"]
    assert (run / "suite.yaml").read_text() == path.read_text()
    assert (run / "lm_eval_tasks" / "math-mini" / "hizfo_math_mini.yaml").is_file()


def test_jsonl_trial_ids_do_not_depend_on_where_the_data_lies(tmp_path):
    rows = [json.dumps({"prompt": f"{a}+1=", "target": str(a + 1)}) for a in range(4)]
    ids = []
    for where in ("one", "two/deeper"):
        folder = tmp_path / where
        (folder / "data").mkdir(parents=True)
        for split in ("train", "dev", "test"):
            (folder / "data" / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
        entry = {"type": "jsonl", **{s: f"data/{s}.jsonl" for s in ("train", "dev", "test")}}
        _, specs = load_suite(str(_suite(folder, tasks={"sums": entry})))
        ids.append([s.trial_id for s in specs])
        assert str(folder) in specs[0].task_config["test"]  # the paths still travel
    assert ids[0] == ids[1]
    shutil.rmtree(tmp_path / "one")
