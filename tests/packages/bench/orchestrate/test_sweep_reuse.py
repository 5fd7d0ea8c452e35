"""Workers that serve several trials, and the longest-first submission order."""

import json
import subprocess
import sys

import pytest

from bench.orchestrate.sweep import estimated_cost, longest_first
from bench.spec import DevConfig, EvalConfig, TrainConfig, TrialSpec


def _spec(method, steps=10, limit=10, max_gen_toks=16, **kw):
    return TrialSpec(
        method=method,
        task="math-mini",
        model="tiny",
        seed=kw.pop("seed", 0),
        train=TrainConfig(steps=steps, batch_size=4, max_length=64),
        eval=EvalConfig(limit=limit, max_gen_toks=max_gen_toks),
        **kw,
    )


def test_longest_first_orders_by_steps_method_cost_and_eval():
    none = _spec("none", steps=1000)  # trains=False: its steps cost nothing
    fo = _spec("fo-adamw", steps=10)
    mezo_long = _spec("mezo", steps=100)
    hizfo = _spec("hizfo", steps=10)  # a Hi-ZFO step costs more than an AdamW step
    full_eval = _spec("fo-adamw", steps=10, limit=None, seed=1)  # whole test set
    ordered = longest_first([none, fo, mezo_long, hizfo, full_eval])
    assert ordered == [mezo_long, full_eval, hizfo, fo, none]
    # A variant costs what its method costs; an unknown method (a plugin) as an AdamW step.
    assert estimated_cost(_spec("hizfo[zo-off]")) == estimated_cost(_spec("hizfo"))
    assert estimated_cost(_spec("some-plugin")) == estimated_cost(_spec("fo-adamw"))
    # Dev points add their forward passes.
    with_dev = _spec("mezo", steps=100, dev=DevConfig(eval_every=10, batches=4))
    assert estimated_cost(with_dev) > estimated_cost(mezo_long)
    # Ties keep the suite's order (a stable sort).
    a, b = _spec("fo-adamw", seed=0), _spec("fo-adamw", seed=1)
    assert longest_first([b, a]) == [b, a]


_TRIALS_IN_ONE_PROCESS = """
import json, sys, torch
from bench.measure.memory import MemoryMeter
from bench.orchestrate import session

def trial():
    meter = MemoryMeter(torch.device("cpu"))
    meter.start(0)
    held = [torch.ones(256 * 1024) for _ in range(48)]  # 48 x 1 MiB, from the heap
    added = meter.read()["added_bytes"]
    del held
    return added

# A freed 32 MiB tensor raises glibc's mmap threshold: later 1 MiB tensors come from
# the heap, whose freed pages stay resident unless trimmed.
big = torch.ones(8 << 20)
del big
added = []
for _ in range(3):
    session._release_memory()  # what the worker does between trials
    added.append(trial())
print(json.dumps(added))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="VmHWM and malloc_trim are Linux/glibc")
def test_each_trial_of_a_reused_worker_sees_its_own_memory():
    # In a fresh interpreter: the heap's history is the point. Without the trim between
    # trials the third trial reuses the pages the first two left resident and reports
    # about nothing; MemoryMeter.start re-reads the baseline and resets the peak each time.
    done = subprocess.run(
        [sys.executable, "-c", _TRIALS_IN_ONE_PROCESS], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    added = json.loads(done.stdout)
    assert all(a >= 40 << 20 for a in added), [a >> 20 for a in added]


def test_worker_setup_is_idempotent_across_trials(tmp_path):
    # A reused worker sets up logging and quiet bars once per trial: nothing may stack up,
    # and each trial's lines go to its own log only.
    code = f"""
import logging
from pathlib import Path
from tqdm import std
from bench.orchestrate import session
root = logging.getLogger()
for trial in ("t1", "t2"):
    handler = session._trial_logging(Path({str(tmp_path)!r}), trial)
    session._quiet_library_output()
    logging.getLogger("hizfo_bench.train").info(trial + " step 1/1")
    root.removeHandler(handler)
    handler.close()
init = std.tqdm.__init__
assert getattr(init, "_hizfo_quiet", False)
assert not getattr(init.__closure__[0].cell_contents, "_hizfo_quiet", False), "wrapped twice"
for h in root.handlers:
    assert len(h.filters) == len(set(h.filters)) == 2, h.filters
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    t1 = (tmp_path / "logs" / "t1.log").read_text()
    t2 = (tmp_path / "logs" / "t2.log").read_text()
    assert "t1 step 1/1" in t1 and "t2" not in t1
    assert "t2 step 1/1" in t2 and "t1 step" not in t2


def test_trials_per_worker_must_be_positive():
    from bench.orchestrate import session

    res = session.Resources(num_gpus=0, num_cpus=1, slots=1)
    with pytest.raises(ValueError, match="trials_per_worker"):
        session.remote_trial(res, 0, trials_per_worker=0)
