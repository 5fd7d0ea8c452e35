"""The paper-lite suite: one GPU, offline, whole test sets, every method of the paper suite."""

from bench.cli import main
from bench.config import settings
from bench.orchestrate.sweep import estimated_cost
from bench.suite import load_plan

METHODS = {
    "none",
    "fo-adamw",
    "mezo",
    "lora",
    "hizfo",
    "hizfo[zo-off]",
    "hizfo[random]",
    "hizfo[zo-lr=2.55e-5]",
    "mezo[zo-part]",
    "addax",
    "mezo-gv",  # plugins/mezo-gv at MeZO's tuned rate and steps
    "mezo-greedy",
}
TASKS = {"math-mini", "humaneval", "docstring-summary"}


def test_paper_lite_dry_run_lists_every_trial(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing in it needs the hub
    assert main(["run", "--suite", "paper-lite", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("suite paper-lite: 108 trials")
    trials = [
        line.split()[-1]
        for line in out
        if line.strip().startswith("[todo]") and "target" not in line
    ]
    assert len(trials) == 108  # 12 methods x 3 tasks x 3 seeds
    assert {t.split("__")[0] for t in trials} == METHODS
    assert {t.split("__")[1] for t in trials} == TASKS
    assert {t.split("__")[2] for t in trials} == {"smollm2_135m"}
    assert {t.split("__")[3] for t in trials} == {"s0", "s1", "s2"}


def test_paper_lite_settings():
    suite = load_plan("paper-lite")
    specs = suite.specs
    assert {s.task for s in specs} == TASKS
    for s in specs:
        assert s.eval.limit is None  # the whole test set
        assert s.train.dtype == "bfloat16"  # bf16-mixed: fp32 master weights + autocast
        assert s.dev.eval_every > 0 and s.measure.sharpness
    steps = {s.method: s.train.steps for s in specs}
    assert steps["mezo"] >= 500  # a ZO method needs hundreds of steps to move
    assert all(steps[m] >= 100 for m in METHODS - {"none"})
    zo_off = next(s for s in specs if s.method == "hizfo[zo-off]")
    assert zo_off.method_config.zo_enabled is False
    assert next(s for s in specs if s.method == "hizfo[random]").method_config.selection == "random"
    # The ablations and control rows are tied to hizfo's and mezo's tuned rates, per task.
    by = {(s.method, s.task): settings(s.method_config) for s in specs}
    for task in TASKS:
        hizfo = by["hizfo", task]
        for ablation in ("hizfo[zo-off]", "hizfo[random]", "hizfo[zo-lr=2.55e-5]"):
            assert by[ablation, task]["fo_lr"] == hizfo["fo_lr"]
        assert by["hizfo[random]", task]["zo_lr"] == hizfo["zo_lr"]
        assert by["mezo[zo-part]", task]["lr"] == hizfo["zo_lr"]
        # Hi-ZFO's ZO part runs at MeZO's tuned rate (issue 30), the sweep's point below it.
        assert hizfo["zo_lr"] == by["mezo", task]["lr"]
        assert by["hizfo[zo-lr=2.55e-5]", task]["zo_lr"] == 2.55e-5 < hizfo["zo_lr"]
        for pool in ("mezo-gv", "mezo-greedy"):  # MeZO's tuned rate and eps, a pool of 4
            assert by[pool, task]["lr"] == by["mezo", task]["lr"]
            assert by[pool, task]["eps"] == by["mezo", task]["eps"]
            assert by[pool, task]["candidates"] == 4
    assert set(suite.targets) == TASKS
    assert {t.method for t in suite.targets.values()} == {"fo-adamw"}
    # MeZO's 1000 steps make the ZO rows' trials the longest, submitted first: the pool
    # methods' (M + 2 = 6 forwards a step, at MeZO's steps) and then mezo's.
    assert steps["mezo-gv"] == steps["mezo-greedy"] == steps["mezo"]
    order = sorted(specs, key=estimated_cost, reverse=True)
    assert order[0].method in {"mezo-gv", "mezo-greedy"}
    rest = [s for s in order if s.method not in {"mezo-gv", "mezo-greedy"}]
    assert rest[0].method == "mezo"
