"""Every method's step through the registry and its real ``setup``/``step`` (never a
re-implementation), with the floors its ratios need timed beside it.

A method class may declare ``perf_variants``: {suffix: config overrides}; each is a row
labelled ``name[suffix]`` ("" is the plain row). Per row, on a fresh model and the same
batch: setup (timed apart, as in a trial), then rounds of [step, floors...] interleaved
(timing.interleaved) inside one memory window: the floors (a no-grad forward; for
Hi-ZFO also the forward + backward with only its FO set requiring grad) add nothing to
the step's peak (a no-grad forward is inference, the partial backward is the step's own
backward without the optimizer). After the rounds, one more step and each floor pass
are run once under the operator counter (ops.py), outside the timing and the window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from bench.method import TrainContext, method_traits
from bench.perf import ops, ratios
from bench.perf.settings import PerfSettings
from bench.perf.timing import interleaved, narrow, ratio_interval, summary, sync
from bench.perf.workload import PhaseMemory, load_model, make_batch
from hizfo.zo import launch_plan

# StepStats.extra entries kept in the perf record (what the step says about its cost).
STEP_EXTRAS = ("backward_depth", "z_draws", "fo_tensors")


def method_variants(settings: PerfSettings) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, registered name, config overrides) of every method row to run."""
    from bench.registry import MethodError, load_method

    variants = []
    for name in settings.methods:
        try:
            cls = load_method(name)
        except MethodError:
            continue
        for suffix, overrides in (getattr(cls, "perf_variants", None) or {"": {}}).items():
            label = f"{name}[{suffix}]" if suffix else name
            variants.append((label, name, dict(overrides)))
    return variants


class MethodWorkloads:
    """One method on its model and batch, after setup: its step, and the floor passes
    its ratios are taken against (ratios.FLOOR_PHASES), each called with the round
    number. The step records the passes and the STEP_EXTRAS it reported."""

    def __init__(
        self, name: str, method: Any, model: torch.nn.Module, batch: Any, ctx: TrainContext
    ) -> None:
        self.name, self.method, self.model, self.batch, self.ctx = name, method, model, batch, ctx
        self.passes = {"forward": 0, "backward": 0}
        self.extra: dict[str, float] = {}
        self.floors = {"forward": self.forward, "partial_backward": self.partial_backward}

    def forward(self, _: int) -> None:
        with torch.no_grad():
            self.ctx.loss_fn(self.model, self.batch)

    def partial_backward(self, i: int) -> None:
        # Whatever the method left requiring grad (Hi-ZFO: its FO set), so autograd
        # stops at the deepest of those tensors, as in the step's own backward.
        grads = [p for p in self.model.parameters() if p.requires_grad]
        if not grads:
            self.forward(i)
            return
        with torch.enable_grad():
            self.ctx.loss_fn(self.model, self.batch).backward()
        for p in grads:
            p.grad = None

    def step(self, i: int) -> None:
        stats = self.method.step(self.batch, i)
        self.passes.update(forward=stats.forward_passes, backward=stats.backward_passes)
        extra = stats.extra or {}
        self.extra.update({k: float(v) for k, v in extra.items() if k in STEP_EXTRAS})

    def count_ops(self, i: int) -> dict[str, Any]:
        """Operator calls (ops.py) of step i + 1 (after an uncounted step i) and of each
        floor pass, and the floor of the passes that step reported."""
        # The step planned as on a GPU (hizfo.zo.launch_plan): the count guards the
        # launch structure, whatever the CPU plan (cache-sized buckets) does. One step
        # first, uncounted: it re-plans (buffers and views made once, not per step).
        with launch_plan():
            self.step(i)
            counted = {"step": ops.count_ops(lambda: self.step(i + 1))}
        counted.update({f: ops.count_ops(lambda f=f: self.floors[f](i)) for f in self.floors})
        totals = {name: c["total"] for name, c in counted.items()}
        floor = ops.floor_ops(totals["forward"], totals["partial_backward"], self.passes)
        return {**totals, "floor": floor, "top": {k: c["top"] for k, c in counted.items()}}

    def converged(self, floors: tuple[str, ...]) -> Callable[[dict[str, list[float]]], bool]:
        """interleaved's test: every paired ratio of the method's rows is narrow."""
        kinds = {r.kind for r in ratios.ratios_of(self.name) if r.floors}

        def test(seconds: dict[str, list[float]]) -> bool:
            partial = {
                "seconds": seconds["step"],
                "floors": {f: {"seconds": seconds[f]} for f in floors},
                "passes_per_step": self.passes,
            }
            pairs = [ratios.paired_samples(kind, partial) for kind in kinds]
            return all(narrow(ratio_interval(*p)) for p in pairs if p is not None)

        return test


def measure_method(
    name: str,
    overrides: dict[str, Any],
    settings: PerfSettings,
    device: torch.device,
    floors: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Setup and step time, and peak memory over the steps, of one method on a fresh
    model, with `floors` (ratios.FLOOR_PHASES) timed in the same rounds as the steps;
    then the operator calls of one more step (after one uncounted step, both planned as
    on a GPU: hizfo.zo.launch_plan) and of its floor (ops.py)."""
    from bench.config import build
    from bench.registry import load_method

    cls = load_method(name)
    method = cls(build(cls.config_class, overrides, name))
    model = load_model(settings, device)
    batch = make_batch(model, settings.batch_size, settings.seq_len, device)
    ctx = TrainContext(
        total_steps=settings.warmup + settings.max_repeats + 2,  # + the two counted steps
        seed=0,
        device=device,
        sample_batches=lambda n: [batch] * n,
    )
    setup_memory = PhaseMemory(device, model)
    t0 = time.perf_counter()
    model = method.setup(model, ctx)
    sync(device)
    setup_seconds = time.perf_counter() - t0
    setup_peak = setup_memory.read()["peak_with_weights_bytes"]
    run = MethodWorkloads(name, method, model, batch, ctx)
    memory = PhaseMemory(device, model)
    seconds = interleaved(
        {"step": run.step, **{f: run.floors[f] for f in floors}},
        device,
        warmup=settings.warmup,
        repeats=settings.repeats,
        max_repeats=settings.max_repeats,
        converged=run.converged(floors),
    )
    result = summary(seconds["step"])
    result["memory"] = memory.read()  # before the counted step: its window is the rounds'
    result.update(
        peak_bytes=result["memory"]["peak_with_weights_bytes"],
        threads=torch.get_num_threads(),
        is_reference=method_traits(cls).is_reference,
        setup_seconds=setup_seconds,
        setup_peak_bytes=setup_peak,
        passes_per_step=run.passes,
        step_extras=run.extra,
        floors={f: summary(seconds[f]) for f in floors},
        method_config=asdict(method.config),
        ops=run.count_ops(settings.warmup + len(seconds["step"])),
    )
    return result  # the model and the method's state go with this frame
