"""The `jsonl` task type: a suite names the user's own files, bad files stop the run with
one line naming file, line and field, and the files are scored by the real lm-eval path."""

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from lm_eval.models.huggingface import HFLM

from bench import sandbox
from bench.cli import main
from bench.config import ConfigError
from bench.evaluate import evaluate
from bench.spec import TrialSpec
from bench.suite import load_suite
from bench.tasks import TaskDataError, TaskError, get_task, registry, task_types
from bench.tasks.lm_eval_functions import final_number

ROWS = [
    {"question": f"What is {a} plus {b}?", "answer": str(a + b)}
    for a, b in [(1, 8), (6, 4), (6, 2), (3, 3), (2, 5), (7, 1), (4, 4), (9, 2)]
]


def _write(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def files(tmp_path):
    data = tmp_path / "data"
    _write(data / "train.jsonl", ROWS[:4])
    _write(data / "dev.jsonl", ROWS[4:6])
    _write(data / "test.jsonl", ROWS[6:])
    return data


def _suite(tmp_path, **task) -> Path:
    entry = {
        "type": "jsonl",
        "train": "data/train.jsonl",  # relative to the suite file
        "dev": "data/dev.jsonl",
        "test": "data/test.jsonl",
        "metric": "exact_match",
        "fields": {"prompt": "question", "target": "answer"},
        **task,
    }
    suite = {
        "name": "mine",
        "models": ["tiny"],
        "tasks": {"sums": entry},
        "methods": {"none": {}, "fo-adamw": {"config": {"lr": 1e-3}}},
        "train": {"steps": 2, "batch_size": 2, "max_length": 48, "log_every": 1},
        "eval": {"limit": 2, "batch_size": 2, "max_gen_toks": 4},
    }
    path = tmp_path / "suite.yaml"
    path.write_text(json.dumps(suite))
    return path


def test_jsonl_is_a_registered_task_type():
    assert "jsonl" in task_types()
    with pytest.raises(TaskError, match="task types: jsonl"):
        get_task("x", {"type": "csv"})


def test_a_suite_names_its_files_relative_to_itself(tmp_path, files, monkeypatch):
    monkeypatch.chdir("/")  # not the suite's folder
    _, specs = load_suite(str(_suite(tmp_path)))
    assert [s.task for s in specs] == ["sums", "sums"]
    cfg = specs[0].task_config
    assert cfg["type"] == "jsonl" and cfg["test"] == str(files / "test.jsonl")
    assert cfg["fields"] == {"prompt": "question", "target": "answer"}
    task = get_task(specs[0].task, cfg)  # what a worker does with the spec
    assert task.train_examples()[0].prompt == "What is 1 plus 8?"
    assert task.train_examples()[0].target == " 9"  # lm-eval's target delimiter
    assert [d["target"] for d in task.eval_documents()] == ["8", "11"]
    assert len(task.dev_documents()) == 2 and task.metric == "exact_match,none"
    # The spec round-trips through a trial file.
    assert TrialSpec.from_dict(specs[0].to_dict()).trial_id == specs[0].trial_id


def test_changed_data_is_a_new_trial_and_a_worker_refuses_stale_files(tmp_path, files):
    _, before = load_suite(str(_suite(tmp_path)))
    _write(files / "test.jsonl", ROWS[5:])
    _, after = load_suite(str(_suite(tmp_path)))
    assert before[0].trial_id != after[0].trial_id  # resume never reuses other data's results
    with pytest.raises(TaskDataError, match="changed after the suite was read"):
        get_task("sums", before[0].task_config)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"question": "q"', "test.jsonl:2: not valid JSON"),
        ('["q", "a"]', "test.jsonl:2: expected a JSON object, got list"),
        ('{"question": "q"}', "test.jsonl:2: field 'answer' (target) is missing"),
        ('{"question": "q", "answer": ""}', "test.jsonl:2: field 'answer' (target) must be"),
        ('{"question": null, "answer": "a"}', "test.jsonl:2: field 'question' (prompt) must be"),
    ],
)
def test_a_bad_line_names_file_line_and_field(tmp_path, files, line, message):
    _write(files / "test.jsonl", [ROWS[6], line])
    with pytest.raises(ConfigError, match="sums") as info:
        load_suite(str(_suite(tmp_path)))
    assert message in str(info.value)


@pytest.mark.parametrize(
    "task, message",
    [
        ({"metric": "bleu"}, "metric 'bleu' is not one of"),
        ({"family": "poetry"}, "family 'poetry' is not one of"),
        ({"test": "data/nope.jsonl"}, "test file"),
        ({"dev": None}, "dev file(s) missing"),
        ({"fields": {"answer": "a"}}, "fields: unknown key(s) answer"),
        ({"colour": "red"}, "unknown key(s) colour"),
    ],
)
def test_bad_definitions_are_one_line(tmp_path, files, task, message):
    with pytest.raises(ConfigError) as info:
        load_suite(str(_suite(tmp_path, **task)))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_cli_bad_file_is_one_line_exit_2_and_writes_nothing(tmp_path, files, capsys):
    _write(files / "train.jsonl", [ROWS[0], ROWS[1], {"question": "q", "answr": "2"}])
    out = tmp_path / "run"
    assert main(["run", "--suite", str(_suite(tmp_path)), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"{files / 'train.jsonl'}:3: field 'answer' (target) is missing" in err
    assert not out.exists()


def test_a_task_type_plugin_registers_through_the_entry_point_group(tmp_path, files, monkeypatch):
    eps = dict(registry._entry_points())
    eps["my-jsonl"] = EntryPoint("my-jsonl", "bench.tasks.jsonl:JsonlTask", registry.GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: eps)
    _, specs = load_suite(str(_suite(tmp_path, type="my-jsonl")))
    assert specs[0].task_config["type"] == "my-jsonl"
    with pytest.raises(TaskError, match="is a registered task"):
        get_task("math-mini", {"type": "my-jsonl"})


# ---- scoring: generation replaced by chosen answers, lm-eval and the metrics real ---------


def _answer_with(monkeypatch, make_answer):
    monkeypatch.setattr(
        HFLM,
        "generate_until",
        lambda self, reqs, disable_tqdm=False: [make_answer(r.doc) for r in reqs],
    )


def _task(files, **cfg):
    base = {k: str(files / f"{k}.jsonl") for k in ("train", "dev", "test")}
    fields = {"prompt": "question", "target": "answer"}
    return get_task("sums", {"type": "jsonl", "fields": fields, **base, **cfg})


@pytest.mark.parametrize(
    "metric, key, expected",
    [
        ("exact_match", "exact_match,none", 0.5),
        ("f1", "f1,none", 0.5),
        ("rouge_l", "rougeL,none", 0.5),
    ],
)
def test_text_metrics_score_the_test_file(monkeypatch, tiny, files, metric, key, expected):
    # Right on the first test document, wrong on the second.
    _answer_with(monkeypatch, lambda d: f" {d['target']}\n" if d["target"] == "8" else " seven")
    result = evaluate(*tiny, _task(files, metric=metric), limit=2, batch_size=2, max_gen_toks=4)
    assert result.score == pytest.approx(expected) and result.metrics[key] == result.score
    assert [s["target"] for s in result.samples] == ["8", "11"]


def test_math_family_compares_final_numbers(monkeypatch, tiny, files):
    _answer_with(monkeypatch, lambda d: f" 4 + 4 makes {int(d['target']):,}.0 in all")
    result = evaluate(*tiny, _task(files, family="math"), limit=2, batch_size=2, max_gen_toks=4)
    assert result.score == 1.0  # the last number, thousands commas and ".0" dropped
    assert final_number("1,200.50 apples") == "1200.5" and final_number("none") is None


def test_code_family_pass_at_1_runs_in_the_sandbox(monkeypatch, tiny, tmp_path):
    try:
        sandbox.check_available()
    except sandbox.SandboxUnavailable as e:
        pytest.skip(str(e))
    row = {
        "prompt": "def add(a, b):\n",
        "target": "    return a + b\n",
        "test": "assert add(2, 3) == 5",
    }
    for split in ("train", "dev", "test"):
        _write(tmp_path / f"{split}.jsonl", [row, {**row, "test": "assert add(2, 2) == 5"}])
    task = get_task(
        "code",
        {
            "type": "jsonl",
            "family": "code",
            "metric": "pass@1",
            **{s: str(tmp_path / f"{s}.jsonl") for s in ("train", "dev", "test")},
        },
    )
    assert task.train_examples()[0].target == row["target"]  # code: no delimiter
    _answer_with(monkeypatch, lambda d: "    return a + b\n")
    result = evaluate(*tiny, task, limit=2, batch_size=2, max_gen_toks=4)
    assert result.score == 0.5 and result.metrics["pass@1,none"] == 0.5


# ---- end to end: `hizfo-bench run` on the tiny model ------------------------------------


@pytest.mark.integration
def test_a_suite_with_a_jsonl_task_runs_end_to_end(tmp_path, files):
    suite, out = _suite(tmp_path, metric="rouge_l"), tmp_path / "run"
    cli = shutil.which("hizfo-bench", path=str(Path(sys.executable).parent)) or "hizfo-bench"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    cmd = [cli, "run", "--suite", str(suite), "--out", str(out), "--num-cpus", "2"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420, cwd="/")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    records = [json.loads(p.read_text()) for p in sorted((out / "trials").glob("*.json"))]
    assert sorted(r["method"] for r in records) == ["fo-adamw", "none"]
    for record in records:
        assert record["status"] == "ok" and record["task"] == "sums", record["error"]
        assert {"rougeL,none", "f1,none", "exact_match,none"} <= set(record["metrics"])
        samples = (out / "samples" / f"{record['trial_id']}.jsonl").read_text().splitlines()
        scored = [json.loads(s) for s in samples]
        assert [s["target"] for s in scored] == ["8", "11"]  # the user's test file, in order
    trained = next(r for r in records if r["method"] == "fo-adamw")
    assert trained["steps"] == 2


def test_set_reaches_a_typed_task_and_plus_adds_one(tmp_path, files):
    suite = _suite(tmp_path)
    _, specs = load_suite(str(suite), overrides=["tasks.sums.metric=f1"])
    assert {s.task_config["metric"] for s in specs} == {"f1"}
    with pytest.raises(ConfigError, match="metric 'bleu' is not one of"):
        load_suite(str(suite), overrides=["tasks.sums.metric=bleu"])
    added = [
        "+tasks.more.type=jsonl",
        *(f"+tasks.more.{s}={files / f'{s}.jsonl'}" for s in ("train", "dev", "test")),
        "+tasks.more.fields={prompt: question, target: answer}",
    ]
    _, specs = load_suite(str(suite), overrides=added)
    assert sorted({s.task for s in specs}) == ["more", "sums"]


def test_a_broken_task_plugin_is_left_out_of_listings_and_named_when_used(monkeypatch, caplog):
    eps = dict(registry._entry_points())
    eps["broken"] = EntryPoint("broken", "no_such_module_xyz:Task", registry.GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: eps)
    assert "broken" not in registry.available_tasks() and "math-mini" in registry.available_tasks()
    assert "task plugin 'broken'" in caplog.text
    with pytest.raises(TaskError, match="failed to import: ModuleNotFoundError"):
        get_task("broken")


def test_reports_get_family_and_metric_from_the_spec_without_the_files(tmp_path, files):
    from bench.tasks import task_labels

    _, specs = load_suite(str(_suite(tmp_path, metric="rouge_l", family="math")))
    config = specs[0].task_config
    for path in files.iterdir():
        path.unlink()  # a report machine may not have the data
    assert task_labels("sums", config) == ("math", "rougeL,none")
    assert task_labels("math-mini") == ("math", "exact_match,strict-match")
    assert task_labels("sums") is None
