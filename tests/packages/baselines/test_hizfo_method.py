"""`hizfo` as a bench method (baselines/hizfo.py): profiling batches, passes, trial record."""

from __future__ import annotations

import json
import math

import pytest
import torch

from baselines.hizfo import HiZFOMethod
from bench.data import collate
from bench.method import TrainContext
from bench.spec import EvalConfig, TrainConfig, TrialSpec
from bench.tasks import get_task
from bench.train.recipe import run_trial
from hizfo.optimizer import HiZFOConfig


@pytest.fixture
def batches(tiny):
    _, tokenizer = tiny
    examples = get_task("math-mini").train_examples()[:16]
    return [collate(examples[i : i + 4], tokenizer, 96) for i in range(0, 16, 4)]


class _Sampler:
    """ctx.sample_batches that records every request."""

    def __init__(self, batches):
        self.batches, self.calls = batches, []

    def __call__(self, n):
        self.calls.append(n)
        return self.batches[:n]


def _ctx(sampler, steps=10):
    return TrainContext(
        total_steps=steps, seed=0, device=torch.device("cpu"), sample_batches=sampler
    )


def test_profiles_in_setup_and_again_when_due(tiny_fresh, batches):
    model, _ = tiny_fresh
    sampler = _Sampler(batches[1:])
    method = HiZFOMethod(HiZFOConfig(profile_batches=2, reprofile_every=3, fo_lr=1e-3))
    method.setup(model, _ctx(sampler))
    assert sampler.calls == [2] and method.setup_passes == {"forward": 2, "backward": 2}
    passes = [method.step(batches[0], s) for s in range(7)]
    assert sampler.calls == [2, 2, 2]  # setup, then before steps 3 and 6
    fo_set = bool(method.hizfo.fo_names) and bool(method.hizfo.zo_names)
    assert fo_set, "rho 0.5 on tiny should split the tensors"
    plain = (1 + 2, 1)  # FO forward+backward, two SPSA forwards
    for s, stats in enumerate(passes):
        extra = 2 if s in (3, 6) else 0
        assert (stats.forward_passes, stats.backward_passes) == (plain[0] + extra, 1 + extra)
    assert [h["step"] for h in method.hizfo.history] == [0, 3, 6]


def test_rho_zero_draws_no_profiling_batches(tiny_fresh, batches):
    model, _ = tiny_fresh
    sampler = _Sampler(batches)
    method = HiZFOMethod(HiZFOConfig(rho=0.0, reprofile_every=2))
    method.setup(model, _ctx(sampler))
    stats = [method.step(batches[0], s) for s in range(3)]
    assert sampler.calls == [] and method.hizfo.fo_names == []
    assert all((s.forward_passes, s.backward_passes) == (2, 0) for s in stats)


def test_no_profiling_batches_is_a_clear_error(tiny_fresh):
    model, _ = tiny_fresh
    with pytest.raises(ValueError, match="no profiling batches"):
        HiZFOMethod(HiZFOConfig()).setup(model, _ctx(lambda n: []))


def test_trial_record_has_importance_history_and_counts():
    steps, every = 30, 10
    spec = TrialSpec(
        method="hizfo",
        task="math-mini",
        model="tiny",
        seed=0,
        method_config={"fo_lr": 1e-3, "zo_lr": 1e-4, "reprofile_every": every},
        train=TrainConfig(steps=steps, batch_size=4, max_length=96, train_examples=4, log_every=5),
        eval=EvalConfig(limit=4, batch_size=4, max_gen_toks=8),
    )
    record = run_trial(spec)
    assert record["status"] == "ok", record["error"]
    # One fixed batch of 4 (as tests/packages/bench/train/test_trial.py): the FO part makes the drop quick.
    first, last = record["curve"][0]["loss"], record["curve"][-1]["loss"]
    assert last < first - 0.05, record["curve"]

    summary = record["method_summary"]
    assert summary["fo_parameters"] > 0 and summary["zo_parameters"] > 0
    assert summary["fo_parameters"] + summary["zo_parameters"] == record["model_info"]["parameters"]
    assert summary["config"]["reprofile_every"] == every and summary["config"]["rho"] == 0.5
    profiles = summary["profiles"]
    assert [p["step"] for p in profiles] == list(range(0, steps, every))
    n_tensors = len(profiles[0]["importance"])
    for p in profiles:
        assert len(p["importance"]) == n_tensors and max(p["importance"].values()) == 1.0
        assert p["fo"] and set(p["fo"]) <= set(p["importance"])
    assert profiles[-1]["fo_parameters"] == summary["fo_parameters"]
    assert summary["fo_tensors"] + summary["zo_tensors"] == n_tensors

    reprofiles = len(profiles) - 1
    k = summary["config"]["profile_batches"]
    passes = record["passes"]
    assert (passes["forward"], passes["backward"]) == (
        steps * 3 + reprofiles * k,
        steps + reprofiles * k,
    )
    # Honest costs: each step's backward stops at the deepest FO tensor (rho = 0.5), and
    # the two-sided SPSA step draws z three times (perturb, flip, restore + update).
    assert 0 < passes["backward_equivalent"] < steps
    assert passes["z_draws"] == 3 * steps
    assert record["step_extra"]["projected_grad"] and len(record["step_extra"]["z_draws"]) == steps
    json.dumps(summary, allow_nan=False)  # the trial file stays plain JSON
    assert all(math.isfinite(v) for p in profiles for v in p["importance"].values())


@pytest.mark.parametrize("strategy", ["random", "reverse", "random-greedy"])
def test_an_ablation_records_its_fo_set_and_the_overlap_with_the_real_one(
    tiny_fresh, batches, strategy
):
    from hizfo.selection import select_fo_tensors

    model, _ = tiny_fresh
    config = HiZFOConfig(profile_batches=1, fo_lr=1e-3, selection=strategy)
    method = HiZFOMethod(config)
    method.setup(model, _ctx(_Sampler(batches)))
    summary = method.summary()
    profile = method.hizfo.history[-1]
    real = select_fo_tensors(profile["importance"], method.hizfo.costs, budget=config.rho)
    fo = set(method.hizfo.fo_names)
    numel = {n: p.numel() for n, p in model.named_parameters()}
    assert summary["selection"] == strategy
    assert summary["fo_tensors"] == len(fo) > 0
    assert summary["fo_parameters"] == sum(numel[n] for n in fo)
    assert summary["reference_fo_tensors"] == len(real)
    assert summary["reference_fo_parameters"] == sum(numel[n] for n in real)
    assert summary["overlap_tensors"] == len(fo & real)
    assert summary["overlap_parameters"] == sum(numel[n] for n in fo & real)
    assert summary["profiles"][-1]["reference"]["overlap_tensors"] == len(fo & real)
    json.dumps(summary)


def test_the_real_selection_records_no_reference(tiny_fresh, batches):
    model, _ = tiny_fresh
    method = HiZFOMethod(HiZFOConfig(profile_batches=1, fo_lr=1e-3))
    method.setup(model, _ctx(_Sampler(batches)))
    summary = method.summary()
    assert summary["selection"] == "dp"
    assert "reference_fo_parameters" not in summary
    assert "reference" not in summary["profiles"][-1]
