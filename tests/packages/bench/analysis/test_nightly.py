"""The nightly check on real runs (tiny model, in-process): it catches an injected 1.5x
slower MeZO step and a wrong-sign update, and passes unchanged re-runs on this box."""

from __future__ import annotations

import os
import time
from importlib.metadata import EntryPoint

import pytest

from baselines.mezo import MeZO
from bench import registry, store
from bench.analysis import history, regress
from bench.spec import EvalConfig, TrainConfig, TrialSpec
from bench.train.recipe import run_trial

STEPS, LOG_EVERY = 120, 4  # 30 windows: 29 step-time samples per run


class SlowMeZO(MeZO):
    """MeZO whose step costs 1.5x: after the real step, half its time again (busy)."""

    def step(self, batch, step):
        t0 = time.perf_counter()
        stats = super().step(batch, step)
        extra = (time.perf_counter() - t0) / 2
        end = time.perf_counter() + extra
        while time.perf_counter() < end:
            pass
        return stats


class AscendingMeZO(MeZO):
    """A deliberately wrong update: the SPSA step with the sign of the learning rate
    flipped, so the loss climbs instead of falling."""

    def step(self, batch, step):
        self.config.lr = -abs(self.config.lr)
        return super().step(batch, step)


class _Loaded:
    """Stands in for an entry point: what registry.load_method needs of one."""

    def __init__(self, cls: type) -> None:
        self.cls, self.value, self.dist = cls, f"{cls.__module__}:{cls.__name__}", None

    def load(self) -> type:
        return self.cls


@pytest.fixture
def mezo_is(monkeypatch):
    """Registers a class under the name "mezo" for in-process trials of this test."""
    eps: dict[str, EntryPoint] = dict(registry._entry_points())

    def use(cls: type) -> None:
        eps["mezo"] = _Loaded(cls)  # type: ignore[assignment]
        monkeypatch.setattr(registry, "_entry_points", lambda: eps)

    return use


def spec() -> TrialSpec:
    return TrialSpec(
        method="mezo",
        task="math-mini",
        model="tiny",
        seed=0,
        method_config={"lr": 1e-3, "eps": 1e-3},
        train=TrainConfig(
            steps=STEPS, batch_size=4, max_length=64, train_examples=64, log_every=LOG_EVERY
        ),
        eval=EvalConfig(limit=2, batch_size=2, max_gen_toks=4),
    )


def run(path):
    record = run_trial(spec())
    assert record["status"] == "ok", record["error"]
    store.write_trial(path, record)
    return path


def verdict(reference, current, root):
    records = regress.load_records(current)
    key = history.run_machine_key(records)
    return regress.compare(
        regress.load_records(reference),
        records,
        baseline=history.baselines(root, key),
        history_name=str(root),
    )


def test_wrong_sign_update_is_a_loss_regression(tmp_path, mezo_is):
    ref = run(tmp_path / "ref")
    again = run(tmp_path / "again")
    # bit-reproducible on one platform: the tight tolerance rests on this
    ref_curve = regress.load_records(ref)[0]["curve"]
    assert [p["loss"] for p in regress.load_records(again)[0]["curve"]] == [
        p["loss"] for p in ref_curve
    ]
    mezo_is(AscendingMeZO)
    bad = run(tmp_path / "bad")
    v = regress.compare(regress.load_records(ref), regress.load_records(bad))
    (t,) = v.regressions
    check = t.check("final training loss")
    assert check.status == "regression" and check.current > check.reference
    assert "same platform" in check.evidence
    assert regress.compare(regress.load_records(ref), regress.load_records(again)).passed


@pytest.mark.integration
def test_unchanged_reruns_pass_and_a_slower_mezo_step_is_flagged(tmp_path, mezo_is, capsys):
    root = tmp_path / "history"
    reference = run(tmp_path / "reference")
    # The history of this machine: three earlier runs (asv keeps several per machine).
    for i in range(3):
        history.add_run(run(tmp_path / f"base{i}"), root, name=f"base{i}")
    ratios, false_alarms = [], 0
    for i in range(5):
        v = verdict(reference, run(tmp_path / f"unchanged{i}"), root)
        t = v.trials[0].check("step time")
        ratios.append((round(t.details["ratio"], 3), [round(x, 3) for x in t.details["interval"]]))
        false_alarms += not v.passed
    mezo_is(SlowMeZO)
    slow = verdict(reference, run(tmp_path / "slow"), root)
    t = slow.trials[0].check("step time")
    with capsys.disabled():
        print(f"\nunchanged: ratio [95% CI] {ratios}; false alarms {false_alarms}/5")
        print(f"1.5x slower MeZO: {t.status}: {t.sentence()}")
    assert false_alarms == 0, ratios
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    if t.status != "regression" and load > 2:
        # Wall-clock steps of a few ms cannot separate 1.5x from the load of a box with
        # more than two runnable processes per core (unchanged runs then spread by
        # 0.6-1.6x); the decision itself is tested on synthetic samples in test_regress.
        pytest.skip(f"box too loaded ({load:.1f} runnable per core) for a 1.5x wall-clock test")
    assert not slow.passed and t.status == "regression", t.sentence()
    assert t.details["ratio"] > 1.3
