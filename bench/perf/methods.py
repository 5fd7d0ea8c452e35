"""Every method's step through the registry and its real ``setup``/``step`` (never a
re-implementation), with the floors its ratios need timed beside it.

A method class may declare ``perf_variants``: {suffix: config overrides}; each is a row
labelled ``name[suffix]`` ("" is the plain row). Per row, on a fresh model and the same
batch: setup (timed apart, as in a trial), then rounds of [step, floors...] interleaved
(timing.interleaved) inside one memory window: the floors (a no-grad forward; for
Hi-ZFO also the forward + backward with only its FO set requiring grad) add nothing to
the step's peak (a no-grad forward is inference, the partial backward is the step's own
backward without the optimizer).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import torch

from bench.method import TrainContext, method_traits
from bench.perf import ratios
from bench.perf.settings import PerfSettings
from bench.perf.timing import interleaved, narrow, ratio_interval, summary, sync
from bench.perf.workload import PhaseMemory, load_model, make_batch

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


def measure_method(
    name: str,
    overrides: dict[str, Any],
    settings: PerfSettings,
    device: torch.device,
    floors: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Setup and step time, and peak memory over the steps, of one method on a fresh
    model, with `floors` (ratios.FLOOR_PHASES) timed in the same rounds as the steps."""
    from bench.config import build
    from bench.registry import load_method

    cls = load_method(name)
    method = cls(build(cls.config_class, overrides, name))
    model = load_model(settings, device)
    batch = make_batch(model, settings.batch_size, settings.seq_len, device)
    ctx = TrainContext(
        total_steps=settings.warmup + settings.max_repeats,
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
    passes = {"forward": 0, "backward": 0}
    extra: dict[str, float] = {}

    def forward(_: int) -> None:
        with torch.no_grad():
            ctx.loss_fn(model, batch)

    def partial_backward(_: int) -> None:
        # Whatever the method left requiring grad (Hi-ZFO: its FO set), so autograd
        # stops at the deepest of those tensors, as in the step's own backward.
        grads = [p for p in model.parameters() if p.requires_grad]
        if not grads:
            forward(_)
            return
        with torch.enable_grad():
            ctx.loss_fn(model, batch).backward()
        for p in grads:
            p.grad = None

    def step(i: int) -> None:
        stats = method.step(batch, i)
        passes["forward"], passes["backward"] = stats.forward_passes, stats.backward_passes
        extra.update({k: float(v) for k, v in (stats.extra or {}).items() if k in STEP_EXTRAS})

    floor_fns = {"forward": forward, "partial_backward": partial_backward}
    workloads = {"step": step, **{f: floor_fns[f] for f in floors}}
    kinds = {r.kind for r in ratios.METHOD_RATIOS if r.method == name and r.floors}

    def converged(seconds: dict[str, list[float]]) -> bool:
        partial = {
            "seconds": seconds["step"],
            "floors": {f: {"seconds": seconds[f]} for f in floors},
            "passes_per_step": passes,
        }
        pairs = [ratios.paired_samples(kind, partial) for kind in kinds]
        return all(narrow(ratio_interval(*p)) for p in pairs if p is not None)

    memory = PhaseMemory(device, model)
    seconds = interleaved(
        workloads,
        device,
        warmup=settings.warmup,
        repeats=settings.repeats,
        max_repeats=settings.max_repeats,
        converged=converged,
    )
    result = summary(seconds["step"])
    result["memory"] = memory.read()
    result["peak_bytes"] = result["memory"]["peak_with_weights_bytes"]
    result.update(
        threads=torch.get_num_threads(),
        is_reference=method_traits(cls).is_reference,
        setup_seconds=setup_seconds,
        setup_peak_bytes=setup_peak,
        passes_per_step=passes,
        step_extras=extra,
        floors={f: summary(seconds[f]) for f in floors},
        method_config=asdict(method.config),
    )
    return result  # the model and the method's state go with this frame
