"""Trials on several devices: FO methods sharded with FSDP2, ZO methods spread over GPUs.

A trial asks for ``resources: {gpus: N}`` (bench.spec.ResourcesConfig). How it then runs
depends on what its method declares (``sharding``, a ClassVar read by method_sharding):

- ``"fsdp2"`` (first-order methods that change parameters only through autograd and a
  torch.optim optimizer: fo-adamw): N processes, one device each, inside the trial's one
  Ray task (torch.multiprocessing; nccl on GPUs, gloo on CPU). Every rank runs the
  recipe (bench/train/recipe.py) on the same model, sharded after loading with PyTorch's
  FSDP2 (``torch.distributed.fsdp.fully_shard`` on every decoder layer, then the root),
  so weights, gradients and the AdamW moments are split N ways. Each rank trains on its
  contiguous slice of every batch; the loss is scaled so that FSDP's gradient average
  is the gradient of the whole batch's mean over target tokens (GlobalMeanLoss), and
  the step's loss is averaged over ranks, so the loss curve is the single-process
  curve to rounding. After training the full weights are gathered to rank 0
  (``get_model_state_dict(full_state_dict=True)``), which measures and evaluates the
  unsharded model and writes the record; the other ranks write nothing.
- ``"device_map"`` (methods that need only inference memory: MeZO, the zero-shot
  model): one process; the model is spread over the N GPUs by accelerate's
  ``infer_auto_device_map`` / ``dispatch_model`` (whole decoder layers per GPU), after
  loading on the first GPU (so the weights must fit there once: the per-step memory,
  activations and SPSA buffers, is what spreads). GPU only: with one CPU there is
  nothing to spread over, and accelerate plans no device map without GPUs.
- anything else runs on one device; a trial asking for more is refused (one line).

On a machine without GPUs, ``resources: {processes: N}`` runs the fsdp2 path with N gloo
processes on the CPU: the same code, for tests and proofs. Every record says where it
ran (its ``placement``: strategy, processes, devices, backend).

Evaluation points during training measure the dev loss the same way (each rank on its
slice of each dev batch, scaled and averaged: the whole batch's loss); the dev score
(generation on dev documents, ``dev.score``) is refused. Not yet written on a sharded
trial: checkpoints and the
saved final model (train.save: not written), and grad_accumulation > 1 being equal to
the single process (micro-batches are then cut from each rank's slice, a different
grouping; the same objective when every example has the same number of target tokens).
The record's timing and memory are rank 0's (tokens_per_second counts rank 0's slice).
"""

from __future__ import annotations

import json
import logging
import socket
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bench import models
from bench.measure.memory import release_freed_memory
from bench.method import Batch, StepStats
from bench.record import TrialRecord
from bench.spec import TrialSpec
from bench.train.recipe import TrialRecipe, failed_record, run_trial

log = logging.getLogger("hizfo_bench.train")

STRATEGIES = ("single", "fsdp2", "device_map")


class PlacementError(ValueError):
    """A trial asks for devices its method or this machine cannot use (one line)."""


@dataclass(frozen=True)
class Placement:
    """Where one trial runs: `strategy` (STRATEGIES), `processes`, the device of each
    process (fsdp2) or the devices the one process spreads the model over (device_map),
    and the collective backend (fsdp2 only)."""

    strategy: str = "single"
    processes: int = 1
    devices: tuple[str, ...] = ()
    backend: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "devices": list(self.devices)}


def method_sharding(cls: type) -> str | None:
    """How a method class runs on several devices: its ``sharding`` ClassVar ("fsdp2" or
    "device_map"); without one, "device_map" for a method that never runs a backward
    (MethodTraits.step_passes, zero-shot included), else None (one device only).

    Read from the class itself, not inherited: a subclass that changes which parameters
    train (LoRA, a subclass of fo-adamw, adds adapters after the model is sharded, whose
    gradients FSDP would not reduce) runs sharded only if it says so itself."""
    from bench.method import method_traits

    declared = vars(cls).get("sharding")
    if declared is not None:
        if declared not in ("fsdp2", "device_map"):
            raise PlacementError(f"{cls.__name__}.sharding must be fsdp2 or device_map")
        return declared
    return "device_map" if method_traits(cls).step_passes[1] == 0 else None


def plan(spec: TrialSpec, cuda_devices: int | None = None) -> Placement:
    """The placement of `spec` on this machine (`cuda_devices` GPUs visible to the task:
    default torch.cuda.device_count()). Raises PlacementError for a request that cannot
    be met."""
    from bench.registry import load_method

    cuda = torch.cuda.device_count() if cuda_devices is None else cuda_devices
    res = spec.resources
    wanted = res.gpus if cuda else (res.processes or 1)
    if cuda and res.processes not in (None, res.gpus):
        raise PlacementError("resources.processes is for CPU-only machines (gloo); use gpus")
    if wanted <= 1:
        return Placement("single", 1, ("cuda:0" if cuda else "cpu",))
    if cuda and wanted > cuda:
        raise PlacementError(f"{wanted} GPUs asked for, {cuda} visible to this trial")
    strategy = method_sharding(load_method(spec.method))
    if strategy is None:
        raise PlacementError(
            f"{spec.method} runs on one device only (it declares no sharding); "
            f"resources asks for {wanted}"
        )
    if spec.dev.eval_every and spec.dev.score:
        raise PlacementError("dev.score is not supported on a trial over several devices")
    if strategy == "device_map":
        if not cuda:
            raise PlacementError(f"{spec.method} spreads over GPUs (device_map): none here")
        return Placement("device_map", 1, tuple(f"cuda:{i}" for i in range(wanted)))
    if cuda:
        return Placement("fsdp2", wanted, tuple(f"cuda:{i}" for i in range(wanted)), "nccl")
    return Placement("fsdp2", wanted, ("cpu",) * wanted, "gloo")


# ---- fsdp2: one recipe per rank ---------------------------------------------------------


def _target_tokens(batch: Batch) -> torch.Tensor:
    """Target tokens of a causal-LM batch: labels != -100 after the one-token shift."""
    return (batch["labels"][:, 1:] != -100).sum()


@dataclass
class GlobalMeanLoss:
    """A rank's loss scaled so that the average over ranks of its gradient (FSDP's
    reduce-scatter) is the gradient of the whole batch's mean over target tokens:
    loss_rank x tokens_rank x world / tokens_all."""

    loss_fn: Any
    world: int

    def __call__(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        import torch.distributed as dist

        mine = _target_tokens(batch).to(torch.float64)
        total = mine.clone()
        dist.all_reduce(total)
        return self.loss_fn(model, batch) * float(mine * self.world / total)


class _AveragedLoss:
    """The method, with each step's reported loss averaged over ranks (with
    GlobalMeanLoss that is the whole batch's loss). Everything else is the method's."""

    def __init__(self, method: Any, world: int) -> None:
        self._method, self._world = method, world

    def step(self, batch: Batch, step: int) -> StepStats:
        import torch.distributed as dist

        stats = self._method.step(batch, step)
        loss = torch.tensor([stats.loss], dtype=torch.float64)
        dist.all_reduce(loss)
        stats.loss = float(loss) / self._world
        return stats

    def __getattr__(self, name: str) -> Any:
        return getattr(self._method, name)


class ShardedRecipe(TrialRecipe):
    """The recipe of one FSDP2 rank: the model sharded after loading, this rank's slice
    of every training batch, then the full weights gathered on rank 0, which alone
    measures, evaluates and keeps the record."""

    def __init__(self, spec: TrialSpec, device: torch.device, rank: int, world: int, **kw):
        super().__init__(spec, device, **kw)
        self.rank, self.world = rank, world
        self._slicing = True
        # Not yet on a sharded trial: a checkpoint of a sharded model needs every rank
        # (torch.distributed.checkpoint), bench/train/checkpoint.py writes from one.
        self.checkpoints = None

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import fully_shard

        blocks = set(getattr(model, "_no_split_modules", None) or ())
        for module in model.modules():
            if type(module).__name__ in blocks:
                fully_shard(module)
        fully_shard(model)
        self._plain_loss = self.loss_fn
        self.loss_fn = GlobalMeanLoss(self.loss_fn, self.world)
        return model

    def setup(self) -> None:
        super().setup()
        self.method = _AveragedLoss(self.method, self.world)

    def _dev_evaluator(self) -> Any:
        """Evaluation points' dev loss: every rank on its slice of each dev batch, the
        whole batch's loss by the same scaling as training, averaged over ranks."""
        evaluator = super()._dev_evaluator()
        if evaluator is not None:
            evaluator.loss_fn = self._whole_batch_loss
        return evaluator

    def _whole_batch_loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        import torch.distributed as dist

        loss = self.loss_fn(model, batch).detach().to(torch.float64).reshape(1)
        dist.all_reduce(loss)
        return loss / self.world

    def _collate(self, batch: list) -> dict[str, torch.Tensor]:
        full = super()._collate(batch)
        if not self._slicing:
            return full
        n = full["input_ids"].shape[0]
        if n % self.world:
            raise ValueError(f"batch size {n} is not divisible by {self.world} processes")
        lo, hi = self.rank * n // self.world, (self.rank + 1) * n // self.world
        return {k: v[lo:hi] for k, v in full.items()}

    def train(self) -> None:
        super().train()
        self._gather()

    def _gather(self) -> None:
        """Every rank: the full weights to rank 0 (a collective); rank 0 then holds the
        unsharded model for measure and evaluate, on whole batches."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        full = get_model_state_dict(
            self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        del self.model, self.method
        release_freed_memory()  # the shards and the optimizer state, before the full model
        if self.rank != 0:
            return
        model, _, _ = models.load(
            self.spec.model, dtype=self.precision.weights_dtype, device=self.device
        )
        model.load_state_dict(full)
        self.model, self.loss_fn, self._slicing = model, self._plain_loss, False

    def measure(self) -> None:
        if self.rank == 0:
            super().measure()

    def evaluate(self) -> None:
        if self.rank == 0:
            super().evaluate()


def _start_method(placement: Placement) -> str:
    """fork on CPU outside Ray (nothing to re-import: the test's two processes start in
    a second), spawn on GPUs (CUDA cannot be forked) and inside a Ray worker (whose
    gRPC threads must not be forked)."""
    import sys

    ray = sys.modules.get("ray")
    in_ray = ray is not None and ray.is_initialized()
    return "spawn" if placement.backend == "nccl" or in_ray else "fork"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(
    rank: int,
    spec_dict: dict[str, Any],
    placement: dict[str, Any],
    run_dir: str | None,
    tracker: str,
    out: str,
    port: int,
    threads: int,
) -> None:
    """Body of one FSDP2 process: join the group, run the rank's recipe, rank 0 writes
    the record to `out`."""
    import torch.distributed as dist

    world = placement["processes"]
    device = torch.device(placement["devices"][rank])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.set_num_threads(threads)
    # nccl carries the CUDA tensors; gloo beside it the few CPU ones (the reported loss,
    # the CPU-offloaded full state dict), which nccl alone cannot reduce.
    backend = "cpu:gloo,cuda:nccl" if placement["backend"] == "nccl" else placement["backend"]
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        device_id=device if device.type == "cuda" else None,
    )
    try:
        spec = TrialSpec.from_dict(spec_dict)
        recipe = ShardedRecipe(
            spec, device, rank, world, run_dir=Path(run_dir) if rank == 0 and run_dir else None
        )
        record = run_trial(spec, recipe=recipe, tracker=tracker if rank == 0 else "none")
        if rank == 0:
            Path(out, "record.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()


def run_sharded_trial(
    spec: TrialSpec,
    placement: Placement,
    *,
    run_dir: Path | None = None,
    tracker: str = "none",
) -> TrialRecord:
    """Run an fsdp2 trial in placement.processes processes; rank 0's record."""
    import torch.multiprocessing as mp

    start = _start_method(placement)
    with tempfile.TemporaryDirectory(prefix="hizfo-fsdp-") as out:
        args = (
            spec.to_dict(),
            placement.to_dict(),
            str(run_dir) if run_dir else None,
            tracker,
            out,
            _free_port(),
            # The trial's CPUs shared between its processes.
            max(1, torch.get_num_threads() // placement.processes),
        )
        try:
            mp.start_processes(
                _rank_main, args=args, nprocs=placement.processes, join=True, start_method=start
            )
            return TrialRecord.from_dict(json.loads(Path(out, "record.json").read_text()))
        except Exception as e:  # a rank died: the trial failed, the sweep goes on
            first = (str(e).strip().splitlines() or [""])[0]
            return failed_record(spec, f"{type(e).__name__}: {first}")


# ---- device_map: one process, the model over several GPUs ------------------------------


class DeviceMapRecipe(TrialRecipe):
    """The recipe with the model spread over several GPUs by accelerate (whole decoder
    layers per GPU); batches start on the first. Memory is cuda:0's peak."""

    def __init__(self, spec: TrialSpec, devices: tuple[str, ...], **kw: Any) -> None:
        super().__init__(spec, torch.device(devices[0]), **kw)
        self.devices = devices

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        from accelerate import dispatch_model, infer_auto_device_map

        budget = {
            int(d.split(":")[1]): int(0.9 * torch.cuda.mem_get_info(torch.device(d))[0])
            for d in self.devices
        }
        device_map = infer_auto_device_map(
            model,
            max_memory=budget,
            no_split_module_classes=list(getattr(model, "_no_split_modules", None) or ()),
        )
        return dispatch_model(model, device_map=device_map)


# ---- the entry point of a trial --------------------------------------------------------


def run_placed_trial(
    spec: TrialSpec,
    *,
    progress: bool = False,
    run_dir: Path | None = None,
    tracker: str = "none",
) -> TrialRecord:
    """Run one trial where its resources say (plan) and return its record, with the
    placement it ran under (None: not placed); never raises (a request that cannot be
    met is a failed record with one line)."""
    try:
        placement = plan(spec)
    except PlacementError as e:
        return failed_record(spec, f"PlacementError: {e}")
    if placement.strategy == "fsdp2":
        record = run_sharded_trial(spec, placement, run_dir=run_dir, tracker=tracker)
    elif placement.strategy == "device_map":
        recipe = DeviceMapRecipe(spec, placement.devices, progress=progress, run_dir=run_dir)
        record = TrialRecord.from_dict(run_trial(spec, recipe=recipe, tracker=tracker))
    else:
        record = TrialRecord.from_dict(
            run_trial(spec, progress=progress, run_dir=run_dir, tracker=tracker)
        )
    record.placement = placement.to_dict()
    log.info("%s ran on %s", spec.trial_id, placement.to_dict())
    return record
