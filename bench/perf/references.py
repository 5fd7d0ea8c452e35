"""The reference workloads: a no-grad forward (inference), a forward + backward, and a
naive MeZO step written as MeZO's paper code does it (for comparison only).

Each runs once in its own memory window (its peak, which also warms it up), then all
three are timed interleaved, round after round (timing.interleaved), so their ratios
are taken under the same load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from bench.method import Batch, causal_lm_loss
from bench.perf.ratios import REFERENCE_PAIRS
from bench.perf.settings import PerfSettings
from bench.perf.timing import interleaved, pairs_narrow, summary
from bench.perf.workload import PhaseMemory


@torch.no_grad()
def naive_mezo_step(
    model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], seed: int, eps: float, lr: float
) -> float:
    """MeZO as its paper code writes it: z allocated and drawn four times per step, each
    perturbation a new tensor (``p.data = p.data + eps * z``). For comparison only."""
    params = list(model.parameters())

    def zs():
        torch.manual_seed(seed)  # MeZO reseeds the global RNG before every pass
        for p in params:
            yield torch.normal(0.0, 1.0, size=p.shape, device=p.device, dtype=p.dtype)

    for p, z in zip(params, zs(), strict=True):
        p.data = p.data + eps * z
    loss_plus = float(loss_fn())
    for p, z in zip(params, zs(), strict=True):
        p.data = p.data - 2 * eps * z
    loss_minus = float(loss_fn())
    for p, z in zip(params, zs(), strict=True):
        p.data = p.data + eps * z
    g = (loss_plus - loss_minus) / (2 * eps)
    for p, z in zip(params, zs(), strict=True):
        p.data = p.data - lr * g * z
    return g


def measure_references(
    model: torch.nn.Module, batch: Batch, settings: PerfSettings, device: torch.device
) -> dict[str, dict[str, Any]]:
    """{forward, forward_backward[, naive_mezo]}: each with its peak memory (one call in
    its own window) and its seconds over interleaved rounds."""
    model.eval()
    # One unmeasured forward and backward first: one-time library setup (thread pools,
    # kernel caches) would otherwise land in whichever phase runs first.
    causal_lm_loss(model, batch).backward()
    model.zero_grad(set_to_none=True)
    model.requires_grad_(False)

    def forward(_: int) -> None:
        with torch.no_grad():
            causal_lm_loss(model, batch)

    def forward_backward(_: int) -> None:
        model.requires_grad_(True)
        causal_lm_loss(model, batch).backward()
        model.zero_grad(set_to_none=True)
        model.requires_grad_(False)

    workloads: dict[str, Callable[[int], Any]] = {
        "forward": forward,
        "forward_backward": forward_backward,
    }
    if settings.naive:
        workloads["naive_mezo"] = lambda i: naive_mezo_step(
            model, lambda: causal_lm_loss(model, batch), i, 1e-3, 1e-7
        )
    # Saves torch's global RNG, which the naive reference reseeds.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        memory = {}
        for name, fn in workloads.items():
            window = PhaseMemory(device, model)
            fn(0)
            memory[name] = window.read()
        pairs = [p for p in REFERENCE_PAIRS.values() if p[0] in workloads]
        seconds = interleaved(
            workloads,
            device,
            warmup=settings.warmup,
            repeats=settings.repeats,
            max_repeats=settings.max_repeats,
            converged=pairs_narrow(pairs),
        )
    threads = torch.get_num_threads()
    return {
        name: {
            **summary(seconds[name]),
            "memory": memory[name],
            "peak_bytes": memory[name]["peak_with_weights_bytes"],
            "threads": threads,
        }
        for name in workloads
    }
