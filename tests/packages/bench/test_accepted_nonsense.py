"""Settings that used to be accepted and then failed in a worker, or did something else than
asked (issue 31, "accepted nonsense"): each is refused before anything starts, in one line
with exit status 2; and a resume with settings that differ from the run dir's trials says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers.records import make_record

from bench import store
from bench.cli import main
from bench.config import ConfigError
from bench.suite import load_suite

SUITE = {"models": ["tiny"], "tasks": ["math-mini"], "methods": ["none"], "train": {"steps": 2}}


def _suite(tmp_path: Path, text: str | None = None, **patch) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(text if text is not None else yaml.safe_dump({**SUITE, **patch}))
    return str(path)


def _dry_run(tmp_path: Path, suite: str, capsys) -> tuple[int, str]:
    code = main(["run", "--suite", suite, "--out", str(tmp_path / "run"), "--dry-run"])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    "patch, message",
    [
        (
            {"name": "../../../../tmp/x"},
            "s.yaml.name: '../../../../tmp/x' is not a plain file name",
        ),
        ({"name": "a/b"}, "s.yaml.name: 'a/b' is not a plain file name"),
        ({"name": ""}, "s.yaml.name: '' is not a plain file name"),
        ({"name": ".."}, "s.yaml.name: '..' is not a plain file name"),
        ({"name": 3}, "s.yaml.name: 3 is not a plain file name"),
        (
            {"seeds": [10**30]},
            "s.yaml.seeds: expected a list of integers in 0..9223372036854775807",
        ),
        ({"seeds": [2**63]}, "expected a list of integers in 0..9223372036854775807"),
        ({"seeds": []}, "s.yaml.seeds: must name at least one seed"),
        (
            {"methods": {"mezo": {"config": {"eps": 0}}}},
            "methods.mezo.config.eps: 0 is not allowed: must be > 0",
        ),
        (
            {"methods": {"mezo": {"search": {"eps": [1e-3, 0.0]}}}},
            "methods.mezo.search.eps: 0.0 is not allowed: must be > 0",
        ),
    ],
)
def test_nonsense_is_refused_before_the_start(tmp_path, capsys, patch, message):
    code, err = _dry_run(tmp_path, _suite(tmp_path, **patch), capsys)
    assert (code, err.count("\n")) == (2, 0), err
    assert message in err, err
    assert not (tmp_path / "run").exists()


def test_the_largest_seed_is_accepted(tmp_path, capsys):
    assert _dry_run(tmp_path, _suite(tmp_path, seeds=[0, 2**63 - 1]), capsys)[0] == 0


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "models: [tiny]\ntasks: [math-mini]\nmethods:\n  fo-adamw: {}\n  fo-adamw:\n"
            "    config: {lr: 1.0e-3}\n",
            "s.yaml:5:3: invalid YAML: duplicate key 'fo-adamw' (first at line 4)",
        ),
        (
            "models: [tiny]\ntasks: [math-mini]\nmethods: [none]\nmodels: [smollm2-135m]\n",
            "s.yaml:4:1: invalid YAML: duplicate key 'models' (first at line 1)",
        ),
    ],
)
def test_duplicate_yaml_keys_are_errors(tmp_path, capsys, text, message):
    code, err = _dry_run(tmp_path, _suite(tmp_path, text), capsys)
    assert (code, err.count("\n")) == (2, 0), err
    assert message in err, err


def test_a_duplicate_key_in_a_set_value_is_an_error(tmp_path, capsys):
    argv = ["run", "--suite", _suite(tmp_path), "--dry-run", "--out", str(tmp_path / "r")]
    assert main([*argv, "--set", "train={steps: 2, steps: 3}"]) == 2
    assert "duplicate key 'steps'" in capsys.readouterr().err


def _jsonl_suite(tmp_path: Path, test_rows: list[str] | None = None, test: str = "test.jsonl"):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    rows = [json.dumps({"question": f"{a} plus 1?", "answer": str(a + 1)}) for a in range(4)]
    for split in ("train", "dev", "test"):
        (data / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    if test_rows is not None:
        (data / "test.jsonl").write_text("\n".join(rows[:1] + test_rows) + "\n")
    entry = {"type": "jsonl", "train": "data/train.jsonl", "dev": "data/dev.jsonl"}
    entry |= {"test": f"data/{test}", "fields": {"prompt": "question", "target": "answer"}}
    return _suite(tmp_path, tasks={"sums": entry})


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_in_jsonl_are_errors(tmp_path, constant):
    suite = _jsonl_suite(tmp_path, [f'{{"question": "q", "answer": {constant}}}'])
    with pytest.raises(ConfigError) as info:
        load_suite(suite)
    assert f"test.jsonl:2: not valid JSON ({constant} is not a JSON value)" in str(info.value)


def test_a_jsonl_split_that_is_a_directory_says_so(tmp_path):
    (tmp_path / "data" / "folder").mkdir(parents=True)
    with pytest.raises(ConfigError) as info:
        load_suite(_jsonl_suite(tmp_path, test="folder"))
    assert "is a directory, not a JSONL file" in str(info.value)
    assert "does not exist" not in str(info.value)


def test_a_resume_with_other_settings_says_so_in_one_line(tmp_path, capsys):
    _, (spec,) = load_suite(_suite(tmp_path))
    run = tmp_path / "run"
    done = make_record("none", digest="x").to_dict() | {
        "trial_id": spec.trial_id,
        "config": spec.to_dict(),
    }
    store.write_trial(run, done)
    code, err = _dry_run(tmp_path, _suite(tmp_path), capsys)  # same settings: nothing said
    assert (code, err) == (0, "")
    code, err = _dry_run(tmp_path, _suite(tmp_path, train={"steps": 3}), capsys)
    assert code == 0
    (line,) = err.splitlines()
    assert f"{run} holds 1 trial with other settings than this suite's" in line
    assert "train.steps: 2 there, 3 now" in line


def test_yaml_merge_keys_may_still_be_overridden():
    text = (
        "base: &base {steps: 2, batch_size: 2}\n"
        "models: [tiny]\ntasks: [math-mini]\nmethods: [none]\n"
        "train:\n  <<: *base\n  steps: 3\n"
    )
    from bench.config import load_yaml

    assert load_yaml(text)["train"] == {"steps": 3, "batch_size": 2}
    with pytest.raises(Exception, match="duplicate key 'steps'"):
        load_yaml("train:\n  <<: {batch_size: 2}\n  steps: 2\n  steps: 3\n")
