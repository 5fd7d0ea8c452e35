from bench.cli import main
from bench.tasks import available_tasks


def test_tasks_lists_every_task(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out[1:] if not line.startswith("type ")}
    assert set(rows) == set(available_tasks())
    assert [line.split()[1] for line in out if line.startswith("type ")] == ["jsonl:"]
    assert rows["humaneval"][1:6] == ["code", "offline", rows["humaneval"][3], "64/-", "164"]
    assert rows["math-mini"][4:6] == ["100/100", "200"]
    assert rows["gsm8k"][1:6] == ["math", "hub", "hub", "hub/hub", "hub"]
    assert rows["docstring-summary"][-1] == "rougeL,none"
    assert rows["squad"][-1] == "f1,none"


def test_hub_task_in_an_offline_suite_is_one_line_and_exit_2(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text("models: [tiny]\ntasks: [squad]\nmethods: [none]\n")
    out = tmp_path / "run"
    assert main(["run", "--suite", str(suite), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "HF_DATASETS_OFFLINE=0" in err
    assert not (out / "trials").exists() or not any((out / "trials").iterdir())


def test_verbose_works_before_and_after_the_subcommand(capsys):
    described = "SQuAD v1.1 (hub rajpurkar/squad)"
    for argv in (["tasks", "-v"], ["-v", "tasks"], ["tasks", "--verbose"]):
        assert main(argv) == 0
        assert described in capsys.readouterr().out, argv
    assert main(["tasks"]) == 0
    assert described not in capsys.readouterr().out
