import pytest

from bench.config import ConfigError, settings
from bench.spec import TrialSpec
from bench.suite import expand, load_suite

BASE = {
    "models": ["tiny"],
    "tasks": ["math-mini"],
    "methods": {"none": {}, "fo-adamw": {"config": {"lr": "1e-4"}, "train": {"steps": 9}}},
    "seeds": [0, 1],
    "train": {"steps": 3, "batch_size": 2},
    "eval": {"limit": 4},
}


def test_expansion_and_precedence():
    specs = expand(BASE)
    assert len(specs) == 4  # 1 model x 1 task x 2 methods x 2 seeds
    fo = [s for s in specs if s.method == "fo-adamw"]
    assert all(s.train.steps == 9 and s.train.batch_size == 2 for s in fo)  # method wins
    assert all(s.method_config.lr == pytest.approx(1e-4) for s in fo)  # "1e-4" coerced
    none = [s for s in specs if s.method == "none"]
    assert all(s.train.steps == 3 and s.eval.limit == 4 for s in none)
    assert len({s.trial_id for s in specs}) == 4


def test_by_task_sets_a_method_config_per_task():
    """`by_task` (values tuned per task) goes over the method's `config` on that task
    only; the other task keeps `config`."""
    raw = {
        **BASE,
        "tasks": ["math-mini", "docstring-summary"],
        "methods": {
            "fo-adamw": {
                "config": {"lr": 1e-4, "warmup_steps": 2},
                "by_task": {"docstring-summary": {"lr": 3e-5}},
            }
        },
    }
    by = {s.task: settings(s.method_config) for s in expand(raw)}
    assert by["math-mini"]["lr"] == pytest.approx(1e-4)
    assert by["docstring-summary"]["lr"] == pytest.approx(3e-5)
    assert by["math-mini"]["warmup_steps"] == by["docstring-summary"]["warmup_steps"] == 2


def test_trial_id_is_derived_from_the_spec():
    a, b = expand(BASE)[:2]
    assert TrialSpec.from_dict(a.to_dict()).trial_id == a.trial_id
    changed = TrialSpec.from_dict({**a.to_dict(), "seed": 7})
    assert changed.trial_id != a.trial_id


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"modles": ["tiny"]}, "unknown key(s) modles"),
        ({"tasks": ["no-such-task"]}, "unknown task 'no-such-task'"),
        ({"methods": ["no-such-method"]}, "unknown method 'no-such-method'"),
        ({"methods": {"fo-adamw": {"config": {"learning_rate": 1}}}}, "learning_rate"),
        ({"methods": {"fo-adamw": {"config": {"lr": "fast"}}}}, "must be a number"),
        ({"methods": {"fo-adamw": {"steps": 3}}}, "unknown key(s) steps"),
        ({"train": {"stepz": 3}}, "unknown key(s) stepz"),
        ({"seeds": "0"}, "list of integers"),
        ({"models": ["/no/such/folder/or/hub-id"]}, "HF_HUB_OFFLINE"),
        ({"methods": []}, "'methods' is required"),
        (
            {"methods": {"fo-adamw": {"by_task": {"docstring-summary": {"lr": 1e-5}}}}},
            "by_task: docstring-summary not among the suite's tasks",
        ),
        ({"methods": {"fo-adamw": {"by_task": {"math-mini": {"lr": -1}}}}}, "by_task.math-mini"),
        ({"tasks": {"math-mini": {"by_task": {}}}}, "unknown key(s) by_task"),
        ({"tuning": {"trails": 8}}, "suite.tuning: unknown key(s) trails; valid keys: "),
        ({"tuning": {"trials": 0}}, "suite.tuning.trials: 0 is not allowed: must be >= 1"),
    ],
)
def test_bad_suites_fail_before_running(patch, message):
    with pytest.raises(ConfigError, match=None) as info:
        expand({**BASE, **patch})
    assert message in str(info.value)


def test_bundled_suites_load():
    for name in ("smoke", "mini"):
        suite_name, specs = load_suite(name)
        assert suite_name == name and specs


def test_unknown_suite_lists_bundled():
    with pytest.raises(ConfigError, match="bundled suites: .*mini"):
        load_suite("nope")


def test_a_spec_carries_the_methods_built_config_and_ships_its_plain_form():
    from bench.registry import load_method

    fo = next(s for s in expand(BASE) if s.method == "fo-adamw")
    assert isinstance(fo.method_config, load_method("fo-adamw").config_class)
    assert fo.to_dict()["method_config"] == settings(fo.method_config)  # what Ray ships
    again = TrialSpec.from_dict(fo.to_dict())  # a worker builds it from the plain form
    assert again == fo and again.trial_id == fo.trial_id
