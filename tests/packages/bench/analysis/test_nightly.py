"""The nightly check on real runs (tiny model, in-process): it catches a MeZO step doing
twice the work and a wrong-sign update, and passes unchanged re-runs on this box."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from importlib.metadata import EntryPoint

import pytest

from baselines.mezo import MeZO
from bench import registry, store
from bench.analysis import history, regress
from bench.analysis.timing import TimeTolerance, compare_times, step_times
from bench.spec import EvalConfig, TrainConfig, TrialSpec
from bench.train.recipe import run_trial

STEPS, LOG_EVERY = 120, 4  # 30 windows: 29 step-time samples per run


class SlowMeZO(MeZO):
    """MeZO whose step does 2x the work: after the real step, its CPU time again (busy),
    so the slowdown is real work whatever else runs on the box. (1.5x the work in step()
    measured x1.30-x1.65 per step across runs, the rest of a step being unchanged: too
    close to the x1.25 threshold for a test that must pass every time.)"""

    def step(self, batch, step):
        t0 = time.process_time()
        stats = super().step(batch, step)
        end = time.process_time() + (time.process_time() - t0)
        while time.process_time() < end:
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
    ref_curve = regress.load_records(ref)[0].curve
    assert [p["loss"] for p in regress.load_records(again)[0].curve] == [
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


@pytest.fixture(scope="module")
def machine_history(tmp_path_factory):
    """A reference run and this machine's history of three earlier runs (asv keeps
    several per machine), made once for the timing tests of this module."""
    tmp = tmp_path_factory.mktemp("nightly")
    root = tmp / "history"
    reference = run(tmp / "reference")
    for i in range(3):
        history.add_run(run(tmp / f"base{i}"), root, name=f"base{i}")
    return tmp, reference, root


def step_check(reference, current, root):
    v = verdict(reference, current, root)
    check = v.trials[0].check("step time")
    return (
        v,
        check,
        (round(check.details["ratio"], 3), [round(x, 3) for x in check.details["interval"]]),
    )


@contextlib.contextmanager
def busy_processes(n: int = 2, seconds: float = 300.0):
    """`n` CPU-bound processes beside the test (each stops by itself after `seconds`, and
    is killed when the block ends)."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.integration
def test_unchanged_reruns_pass_and_a_slower_mezo_step_is_flagged(machine_history, mezo_is, capsys):
    tmp, reference, root = machine_history
    ratios, false_alarms = [], 0
    for i in range(3):
        v, check, ratio = step_check(reference, run(tmp / f"unchanged{i}"), root)
        assert check.details["clock"] == "cpu_seconds"  # the clock load does not stretch
        ratios.append(ratio)
        false_alarms += not v.passed
    mezo_is(SlowMeZO)
    slow, t, slow_ratio = step_check(reference, run(tmp / "slow"), root)
    with capsys.disabled():
        print(f"\nunchanged: CPU step-time ratio [95% CI] {ratios}; false alarms {false_alarms}/3")
        print(f"2x the work in MeZO's step: {slow_ratio}: {t.status}: {t.sentence()}")
    assert false_alarms == 0, ratios
    assert not slow.passed and t.status == "regression", t.sentence()


@pytest.mark.integration
def test_no_false_alarm_with_two_busy_processes_beside_it(machine_history, capsys):
    """The nightly check must not cry wolf when its machine is busy: two CPU-bound
    processes run beside the current runs (the history was made without them)."""
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load >= cpus:
        # Beside other work (a sweep, a parallel test run) two more busy processes put 3+
        # CPU-bound processes per core, where cache and memory-bandwidth contention stretch
        # CPU seconds too (x1.47 measured at load 5 on 2 cores): not the premise here.
        pytest.skip(f"the box is already busy (load {load:.1f} on {cpus} CPUs)")
    tmp, reference, root = machine_history
    base = [r for d in sorted(root.glob("*/base*")) for r in regress.load_records(d)]
    results = []
    with busy_processes(2) as procs:
        for i in range(3):
            current = run(tmp / f"loaded{i}")
            v, check, ratio = step_check(reference, current, root)
            # What the wall clock would have said, for the printout only.
            wall = compare_times(
                step_times(regress.load_records(current)[0], "seconds"),
                [step_times(r, "seconds") for r in base],
                TimeTolerance(),
            )
            results.append((v.passed, ratio, round(wall["ratio"], 2), check))
        assert all(p.poll() is None for p in procs), "the load ended before the runs did"
    with capsys.disabled():
        print(
            "\nwith 2 busy processes: CPU step-time ratio [95% CI] "
            f"{[r[1] for r in results]}; wall-clock ratio {[r[2] for r in results]}"
        )
    for passed, ratio, _, check in results:
        assert check.details["clock"] == "cpu_seconds"
        assert passed, (ratio, check.sentence())
