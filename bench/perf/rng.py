"""Why ZO ratios differ between machines: the cost of drawing z against matmul speed.

A MeZO step is two forwards plus three passes over the d perturbed parameters that draw
z and add it (+eps z, -2 eps z, restore and update). So

    step / two forwards ~= 1 + 3 x P / (2 F) = 1 + 1.5 P / F,

with P the seconds of one pass and F a forward's. F is matmul-bound and scales with the
cores and vector units torch gets; P is torch's CPU generator (mt19937, serial: hizfo.zo
runs the pass on one thread) plus a memory-bound add, so it does not. A box with faster
matmuls, or more threads for them, has a larger ratio for the same code, and a loaded
box (threads descheduled) a smaller one. `rng_vs_matmul` measures on this box, at each
thread count, interleaved: the normal fill's ns per element, one real SPSA pass over the
model (hizfo.zo.SPSA.perturb_), the model's no-grad forward and a matmul of its shape
(GFLOP/s), and the MeZO ratio P and F predict (`hizfo-bench perf --rng-probe`).
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from bench.method import Batch, causal_lm_loss
from bench.perf.timing import timed


def rng_vs_matmul(
    model: torch.nn.Module,
    batch: Batch,
    *,
    threads: tuple[int, ...] = (1, 2),
    repeats: int = 5,
) -> list[dict[str, Any]]:
    """Per thread count (medians of `repeats` rounds, each round: fill, pass, forward,
    matmul): fill_ns_per_element (normal_ into a 2^18-element buffer with a
    torch.Generator, as hizfo.zo draws), pass_seconds (SPSA.perturb_ over every
    parameter: draw + add, one thread by design), forward_seconds, matmul_gflops ((tokens x
    hidden) @ (hidden x intermediate), fp32) and predicted_mezo_ratio = 1 + 1.5 P / F."""
    from hizfo.zo import SPSA, SPSAConfig

    device = next(model.parameters()).device
    config = model.config
    hidden = config.hidden_size
    inner = getattr(config, "intermediate_size", None) or config.ffn_dim
    tokens = batch["input_ids"].numel()
    numel = sum(p.numel() for p in model.parameters())
    generator = torch.Generator(device=device).manual_seed(0)
    chunk = torch.empty(2**18, device=device)
    a, b = torch.randn(tokens, hidden, device=device), torch.randn(hidden, inner, device=device)
    spsa = SPSA(list(model.named_parameters()), SPSAConfig(eps=1e-3))
    model.eval().requires_grad_(False)
    sign = [1.0]

    def one_pass() -> None:  # +eps z then -eps z on the next call: the weights come back
        spsa.perturb_(0, sign[0] * 1e-3)
        sign[0] = -sign[0]

    def fill() -> None:
        for _ in range(max(1, numel // chunk.numel())):
            chunk.normal_(generator=generator)

    def forward() -> None:
        with torch.no_grad():
            causal_lm_loss(model, batch)

    saved = torch.get_num_threads()
    rows = []
    try:
        for n in threads:
            torch.set_num_threads(n)
            work = {
                "fill": fill,
                "pass": one_pass,
                "forward": forward,
                "matmul": lambda: a @ b,
            }
            for fn in work.values():
                fn()  # warm-up
            seconds: dict[str, list[float]] = {k: [] for k in work}
            for _ in range(repeats):
                for k, fn in work.items():
                    seconds[k].append(timed(fn, device))
            med = {k: statistics.median(v) for k, v in seconds.items()}
            filled = max(1, numel // chunk.numel()) * chunk.numel()
            rows.append(
                {
                    "threads": n,
                    "fill_ns_per_element": 1e9 * med["fill"] / filled,
                    "pass_seconds": med["pass"],
                    "forward_seconds": med["forward"],
                    "matmul_gflops": 2 * tokens * hidden * inner / med["matmul"] / 1e9,
                    "predicted_mezo_ratio": 1 + 1.5 * med["pass"] / med["forward"],
                }
            )
    finally:
        torch.set_num_threads(saved)
    return rows


def render_probe(rows: list[dict[str, Any]], label: str) -> str:
    lines = [f"z passes against the forward, {label}:"]
    lines.append(
        f"  {'threads':>7s} {'fill ns/elem':>12s} {'SPSA pass s':>11s} {'forward s':>9s} "
        f"{'matmul GFLOP/s':>14s} {'MeZO/2fwd predicted':>19s}"
    )
    for r in rows:
        lines.append(
            f"  {r['threads']:>7d} {r['fill_ns_per_element']:12.2f} {r['pass_seconds']:11.3f} "
            f"{r['forward_seconds']:9.3f} {r['matmul_gflops']:14.1f} "
            f"{r['predicted_mezo_ratio']:19.2f}"
        )
    return "\n".join(lines)
