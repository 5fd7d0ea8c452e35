"""--set and the filters: they change the resolved specs, and mistakes stop before a run."""

import json

import pytest

from bench.cli import main
from bench.config import ConfigError
from bench.overrides import parse_assignment
from bench.suite import load_suite

SUITE = {
    "name": "steer",
    "models": ["tiny"],
    "tasks": ["math-mini"],
    "methods": ["none", "mezo"],  # a list: --set must still reach methods.mezo.config
    "seeds": [0, 1],
    "train": {"steps": 3, "batch_size": 2},
    "eval": {"limit": 4},
}


@pytest.fixture
def suite_file(tmp_path):
    path = tmp_path / "steer.yaml"
    path.write_text(json.dumps(SUITE))  # JSON is YAML
    return path


def test_values_are_yaml_scalars():
    assert parse_assignment("train.steps=50") == (["train", "steps"], 50)
    assert parse_assignment("eval.limit=null") == (["eval", "limit"], None)
    assert parse_assignment("seeds=[0, 2]") == (["seeds"], [0, 2])
    assert parse_assignment("methods.mezo.config.lr=1e-5")[1] in ("1e-5", 1e-5)


def test_set_changes_the_resolved_specs(suite_file):
    _, before = load_suite(str(suite_file))
    _, after = load_suite(
        str(suite_file),
        overrides=[
            "methods.mezo.config.lr=1e-5",
            "train.steps=50",
            "tasks.math-mini.eval.limit=10",
            "methods.mezo.train.steps=7",  # method beats suite, as in the YAML
        ],
    )
    mezo = [s for s in after if s.method == "mezo"]
    none = [s for s in after if s.method == "none"]
    assert all(s.method_config.lr == pytest.approx(1e-5) for s in mezo)  # "1e-5" coerced
    assert all(s.train.steps == 7 for s in mezo) and all(s.train.steps == 50 for s in none)
    assert all(s.eval.limit == 10 and s.train.batch_size == 2 for s in after)
    # Changed settings are new trials (resume must not reuse the old results) ...
    assert not {s.trial_id for s in after} & {s.trial_id for s in before}
    # ... and a trial re-runs from its spec alone: the spec holds the resolved values.
    assert mezo[0].to_dict()["method_config"]["lr"] == pytest.approx(1e-5)
    assert suite_file.read_text() == json.dumps(SUITE)  # the file is not touched


@pytest.mark.parametrize(
    "override, message",
    [
        ("trian.steps=3", "unknown key 'trian'"),
        ("train.stepz=3", "unknown key(s) stepz"),  # leaf checked like the YAML
        ("train.steps=many", "steps: 'many' is not allowed: must be an integer"),
        ("methods.lora.config.lr=1", "method 'lora' is not in the suite"),
        ("methods.mezo.lr=1", "key one of"),
        ("methods.mezo.config.lrr=1", "unknown key(s) lrr"),
        ("tasks.gsm8k.eval.limit=3", "task 'gsm8k' is not in the suite"),
        ("train=5", "expected a mapping"),
        ("train.steps", "expected KEY=VALUE"),
    ],
)
def test_bad_overrides_are_errors(suite_file, override, message):
    with pytest.raises(ConfigError) as info:
        load_suite(str(suite_file), overrides=[override])
    assert message in str(info.value)


def test_filters_select_trials(suite_file):
    _, specs = load_suite(str(suite_file), only={"methods": ["mezo"], "seeds": [1]})
    assert [(s.method, s.seed) for s in specs] == [("mezo", 1)]
    _, specs = load_suite(str(suite_file), only={"tasks": ["math-mini"], "models": ["tiny"]})
    assert len(specs) == 4
    # Filters apply after --set: a seed added by --set can be selected.
    _, specs = load_suite(str(suite_file), overrides=["seeds=[0, 1, 5]"], only={"seeds": [5]})
    assert {s.seed for s in specs} == {5}


@pytest.mark.parametrize(
    "only, message",
    [
        ({"methods": ["lora"]}, "--methods: lora not in the suite (none, mezo)"),
        ({"seeds": [3]}, "--seeds: 3 not in the suite (0, 1)"),
        ({"models": ["smollm2-135m"]}, "--models: smollm2-135m not in the suite"),
    ],
)
def test_a_filter_naming_something_else_is_an_error(suite_file, only, message):
    with pytest.raises(ConfigError) as info:
        load_suite(str(suite_file), only=only)
    assert message in str(info.value)


def test_cli_unknown_key_is_one_line_and_writes_nothing(suite_file, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--suite", str(suite_file), "--out", str(out), "--set", "train.stepz=1"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key(s) stepz" in err[0]
    assert not out.exists()


def test_cli_filters_and_set_reach_the_dry_run(suite_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--suite", str(suite_file), "--out", str(out), "--dry-run"]
    assert main([*args, "--methods", "mezo", "--seeds", "0", "--set", "train.steps=9"]) == 0
    listed = [line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:]]
    _, expected = load_suite(
        str(suite_file), overrides=["train.steps=9"], only={"methods": ["mezo"], "seeds": [0]}
    )
    assert listed == [s.trial_id for s in expected] and len(listed) == 1
    assert main([*args, "--tasks", "nope"]) == 2
    assert "--tasks: nope not in the suite" in capsys.readouterr().err
    assert main([*args, "--seeds", "x"]) == 2


def test_cli_set_reaches_the_tuning_plan_and_targets(suite_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--suite", str(suite_file), "--out", str(out), "--dry-run"]
    # --set goes through the same checks as the file: tuning without a search space is
    # refused, and one given with --set is planned.
    assert main([*args, "--set", "tuning.trials=3"]) == 2
    assert "no method has a search space" in capsys.readouterr().err
    search = "methods.mezo.search.lr=[1.0e-4, 1.0e-3]"
    assert main([*args, "--set", search, "--set", "tuning.trials=2"]) == 0
    assert "after 2 tuning trials" in capsys.readouterr().out
    assert main([*args, "--set", "targets.math-mini.method=lora"]) == 2
    assert "not in the suite" in capsys.readouterr().err


def test_filters_prune_targets_they_leave_without_a_task_or_a_reference():
    from bench.overrides import apply_filters

    raw = {
        "tasks": ["a", "b"],
        "methods": {"fo-adamw": {}, "mezo": {}},
        "targets": {"a": {"method": "fo-adamw"}, "b": {"metric": "dev_loss", "value": 1.0}},
    }
    assert apply_filters(raw, {"tasks": ["b"]})["targets"] == {"b": raw["targets"]["b"]}
    assert apply_filters(raw, {"methods": ["mezo"]})["targets"] == {"b": raw["targets"]["b"]}
    assert apply_filters(raw, {"tasks": ["a"], "methods": ["mezo"]})["targets"] is None
    assert apply_filters(raw, {"methods": ["fo-adamw"]})["targets"] == raw["targets"]


def test_plus_adds_a_method_and_a_plain_key_says_how(suite_file):
    _, specs = load_suite(str(suite_file), overrides=["+methods.lora.config.rank=8"])
    lora = [s for s in specs if s.method == "lora"]
    assert len(lora) == 2 and all(s.method_config.rank == 8 for s in lora)
    _, specs = load_suite(str(suite_file), overrides=["+methods.fo-adamw="])
    assert {s.method for s in specs} == {"none", "mezo", "fo-adamw"}
    with pytest.raises(ConfigError, match=r"to add it, start the key with \+"):
        load_suite(str(suite_file), overrides=["methods.lora.config.rank=8"])
    with pytest.raises(ConfigError, match="unknown key"):  # an added entry is checked too
        load_suite(str(suite_file), overrides=["+methods.lora.config.rnak=8"])


def test_replacing_methods_keeps_the_settings_of_those_that_stay(tmp_path):
    suite = {
        **SUITE,
        "methods": {"none": {}, "mezo": {"config": {"lr": 1e-5}, "train": {"steps": 7}}},
    }
    path = tmp_path / "keep.yaml"
    path.write_text(json.dumps(suite))
    _, specs = load_suite(str(path), overrides=["methods=[mezo, fo-adamw]"])
    mezo = [s for s in specs if s.method == "mezo"]
    assert {s.method for s in specs} == {"mezo", "fo-adamw"}
    assert all(s.method_config.lr == pytest.approx(1e-5) and s.train.steps == 7 for s in mezo)
    # In a mapping, an entry with settings gets exactly those; {} keeps the suite's.
    _, specs = load_suite(str(path), overrides=["methods={mezo: {config: {lr: 2.0e-5}}, none: {}}"])
    mezo = [s for s in specs if s.method == "mezo"]
    assert all(s.method_config.lr == pytest.approx(2e-5) and s.train.steps == 3 for s in mezo)
    with pytest.raises(ConfigError, match="expected a non-empty list or mapping"):
        load_suite(str(path), overrides=["methods=[]"])


def test_set_of_a_config_key_reaches_every_task_over_by_task(tmp_path):
    """A suite's per-task rates (`by_task`) must not hide `--set methods.M.config.K`:
    the user asked for K on every task; by_task's other keys and tasks stay."""
    suite = {
        **SUITE,
        "tasks": ["math-mini", "docstring-summary"],
        "methods": {
            "hizfo": {
                "config": {"rho": 0.5},
                "by_task": {
                    "math-mini": {"fo_lr": 2e-4, "zo_lr": 1e-9},
                    "docstring-summary": {"fo_lr": 8e-5},
                },
            }
        },
    }
    path = tmp_path / "tuned.yaml"
    path.write_text(json.dumps(suite))

    def zo_fo(overrides: list[str]) -> dict[str, tuple[float, float]]:
        _, specs = load_suite(str(path), overrides=overrides)
        return {s.task: (s.method_config.zo_lr, s.method_config.fo_lr) for s in specs}

    default_zo = zo_fo([])["docstring-summary"][0]
    assert zo_fo([])["math-mini"] == pytest.approx((1e-9, 2e-4))  # by_task wins by default
    after = zo_fo(["methods.hizfo.config.zo_lr=1e-5"])
    assert after["math-mini"] == pytest.approx((1e-5, 2e-4))  # zo_lr replaced, fo_lr kept
    assert after["docstring-summary"] == pytest.approx((1e-5, 8e-5))
    assert default_zo != pytest.approx(1e-5)
    # A later by_task --set still goes over it on its own task.
    later = zo_fo(["methods.hizfo.config.zo_lr=1e-5", "methods.hizfo.by_task.math-mini.zo_lr=3e-6"])
    assert later["math-mini"][0] == pytest.approx(3e-6)
    assert later["docstring-summary"][0] == pytest.approx(1e-5)
    # The whole config mapping: each of its keys reaches every task.
    whole = zo_fo(["methods.hizfo.config={rho: 0.5, fo_lr: 1.0e-4}"])
    assert whole["math-mini"] == pytest.approx((1e-9, 1e-4))
    assert json.loads(path.read_text()) == suite  # the file is not touched
