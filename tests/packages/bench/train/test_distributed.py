"""Trials over several devices (bench/train/distributed.py): the FSDP2 path run on CPU with
two gloo processes gives the single-process trial's losses, and the placement plan."""

from __future__ import annotations

import pytest
import torch
from helpers.specs import make_spec

from bench.spec import DevConfig, ResourcesConfig
from bench.train.distributed import Placement, PlacementError, plan, run_placed_trial
from bench.train.recipe import run_trial


def test_two_gloo_processes_give_the_single_process_losses() -> None:
    # fo-adamw, 4 steps of 4 examples (2 per process) with a loss point every step: the
    # curve after each update depends on the weights, so equal curves mean equal training.
    # Tolerance: relative 1e-6 (float32; measured: 1.5e-7). Without the global-mean
    # scaling of each rank's loss (its slice holds fewer or more target tokens) the
    # curves differ by about 8e-5 relative, so the check can fail.
    common = dict(steps=4, log_every=1, limit=2, dev=DevConfig(eval_every=2, batches=1))
    single = run_trial(make_spec("fo-adamw", {"lr": 1e-3}, **common))
    sharded = run_placed_trial(
        make_spec("fo-adamw", {"lr": 1e-3}, resources=ResourcesConfig(processes=2), **common)
    )
    assert single["status"] == sharded.status == "ok", sharded.error
    losses = [p["loss"] for p in sharded.curve]
    assert len(losses) == 4
    assert losses == pytest.approx([p["loss"] for p in single["curve"]], rel=1e-6, abs=0)
    # Evaluation points (steps 0, 2, 4): the dev loss of the whole dev batch.
    dev = [p["dev_loss"] for p in sharded.eval_curve]
    assert len(dev) == 3
    assert dev == pytest.approx([p["dev_loss"] for p in single["eval_curve"]], rel=1e-6, abs=0)
    assert sharded.placement == {
        "strategy": "fsdp2",
        "processes": 2,
        "devices": ["cpu", "cpu"],
        "backend": "gloo",
    }
    # Rank 0 evaluated the gathered (unsharded) model on the test split.
    assert sharded.eval_samples == single["eval_samples"] == 2
    assert sharded.passes == single["passes"]


def test_a_one_device_trial_says_so() -> None:
    record = run_placed_trial(make_spec("none", limit=1))
    assert record.ok
    assert record.placement == {
        "strategy": "single",
        "processes": 1,
        "devices": ["cpu"],
        "backend": None,
    }


def test_plan_follows_the_method_and_the_machine() -> None:
    two = ResourcesConfig(gpus=2)
    assert plan(make_spec("fo-adamw", resources=two), cuda_devices=2) == Placement(
        "fsdp2", 2, ("cuda:0", "cuda:1"), "nccl"
    )
    # MeZO declares no sharding and runs no backward: spread over the GPUs, one process.
    assert plan(make_spec("mezo", resources=two), cuda_devices=4) == Placement(
        "device_map", 1, ("cuda:0", "cuda:1")
    )
    assert plan(make_spec("mezo"), cuda_devices=4).strategy == "single"
    # CPU only: processes stand in for GPUs; gpus alone means one process.
    assert plan(make_spec("fo-adamw", resources=two), cuda_devices=0).strategy == "single"
    cpu2 = ResourcesConfig(processes=2)
    assert plan(make_spec("fo-adamw", resources=cpu2), cuda_devices=0).backend == "gloo"


@pytest.mark.parametrize(
    ("method", "resources", "cuda", "dev", "message"),
    [
        ("lora", ResourcesConfig(gpus=2), 2, None, "one device only"),
        ("fo-adamw", ResourcesConfig(gpus=4), 2, None, "4 GPUs asked for, 2 visible"),
        ("mezo", ResourcesConfig(processes=2), 0, None, "none here"),
        ("fo-adamw", ResourcesConfig(gpus=2), 2, DevConfig(eval_every=2, score=True), "dev.score"),
        ("fo-adamw", ResourcesConfig(gpus=2, processes=3), 2, None, "processes is for CPU"),
    ],
)
def test_requests_that_cannot_be_met(method, resources, cuda, dev, message) -> None:
    spec = make_spec(method, resources=resources, dev=dev)
    with pytest.raises(PlacementError, match=message):
        plan(spec, cuda_devices=cuda)


def test_resources_join_the_trial_id_only_when_set() -> None:
    plain = make_spec("fo-adamw")
    assert make_spec("fo-adamw", resources=ResourcesConfig()).trial_id == plain.trial_id
    assert make_spec("fo-adamw", resources=ResourcesConfig(gpus=2)).trial_id != plain.trial_id
    again = type(plain).from_dict(
        make_spec("fo-adamw", resources=ResourcesConfig(gpus=2)).to_dict()
    )
    assert again.resources.gpus == 2


def test_an_unplaceable_trial_is_a_failed_record() -> None:
    spec = make_spec("lora", resources=ResourcesConfig(processes=2))
    record = run_placed_trial(spec)
    assert record.status == "failed" and record.placement is None
    assert record.error.startswith("PlacementError: lora runs on one device only")
    assert torch.get_num_threads() >= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fsdp2_on_one_gpu_gives_the_plain_trial_losses() -> None:
    # The sharded path on CUDA with one nccl process (what one GPU can prove of point 1):
    # the same recipe, sharded with fully_shard, gathered and evaluated on rank 0.
    from bench.train.distributed import run_sharded_trial

    # bf16-mixed (the GPU default) in both; one rank: the loss scale is exactly 1.
    spec = make_spec("fo-adamw", {"lr": 1e-3}, steps=4, log_every=1, limit=2)
    single = run_trial(spec)
    sharded = run_sharded_trial(spec, Placement("fsdp2", 1, ("cuda:0",), "nccl"))
    assert single["status"] == sharded.status == "ok", sharded.error
    assert [p["loss"] for p in sharded.curve] == pytest.approx(
        [p["loss"] for p in single["curve"]],
        rel=1e-4,
        abs=0,  # bf16 autocast kernels
    )
