"""End to end through Ray: a small suite, trial files against the contract, resume."""

import json

import pytest

from bench import runner, store
from bench.cli import main
from bench.suite import expand

pytestmark = pytest.mark.integration

SUITE = {
    "models": ["tiny"],
    "tasks": ["math-mini"],
    "methods": {"none": {}, "fo-adamw": {"config": {"lr": 1e-3}}, "mezo": {}},
    "seeds": [0],
    "train": {"steps": 4, "batch_size": 4, "max_length": 96, "train_examples": 32, "log_every": 2},
    "eval": {"limit": 4, "batch_size": 4, "max_gen_toks": 8},
}


def test_suite_through_ray_writes_contract_files(ray_cluster, tmp_path):
    specs = expand(SUITE)
    records = runner.run_trials(specs, tmp_path, progress=False)
    assert len(records) == 3
    files = sorted((tmp_path / "trials").glob("*.json"))
    assert [f.stem for f in files] == sorted(s.trial_id for s in specs)
    for f in files:
        record = json.loads(f.read_text())
        assert set(store.REQUIRED_FIELDS) <= set(record)
        assert record["schema"] == store.SCHEMA and record["status"] == "ok", record["error"]
        assert record["environment"]["torch_threads"] == 1  # one CPU slot per trial
    assert not list((tmp_path / "trials").glob(".*"))  # no temp files left behind
    # resume: everything finished, nothing runs again
    assert runner.run_trials(specs, tmp_path, progress=False) == []
    frame = store.load_frame(tmp_path)
    assert set(frame["method"]) == {"none", "fo-adamw", "mezo"}


def test_cli_bad_suite_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [tiny]\ntasks: [nope]\nmethods: [none]\n")
    assert main(["run", "--suite", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown task 'nope'" in err[0]
    assert not (tmp_path / "run").exists()
