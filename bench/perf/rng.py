"""Why ZO ratios differ between machines: the cost of drawing z against matmul speed.

A MeZO step is two forwards plus `z_draws` passes of normals over the d perturbed
parameters (three by default: +eps z, -2 eps z, restore and update). So

    step / two forwards ~= 1 + z_draws x R / (2 F),

with R the seconds to fill d elements with normals and F a forward's seconds. F is
matmul-bound (about 2 d flops per token) and scales with the cores and vector units a
box gives torch; R is torch's CPU generator, which is serial (hizfo.zo runs it on one
thread), so it does not. A box with faster matmuls, or more threads, has a larger
ratio for the same code. `rng_vs_matmul` measures both on this box, at each thread
count, and the ratio they predict (`hizfo-bench perf --rng-probe`).
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from bench.perf.timing import timed


def _median_seconds(fn: Any, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    return statistics.median(timed(fn, device) for _ in range(repeats))


def rng_vs_matmul(
    numel: int,
    tokens: int,
    hidden: int,
    intermediate: int,
    *,
    threads: tuple[int, ...] = (1, 2),
    repeats: int = 5,
    z_draws: int = 3,
    device: torch.device | None = None,
) -> list[dict[str, Any]]:
    """Per thread count: the normal fill's ns per element (a torch.Generator into one
    preallocated fp32 tensor of `numel`), the matmul rate of a (tokens x hidden) @
    (hidden x intermediate) product in GFLOP/s, the forward time that rate implies for
    `numel` parameters (2 x numel x tokens flops) and the MeZO step / two forwards it
    predicts with `z_draws` fills per step."""
    device = device or torch.device("cpu")
    saved = torch.get_num_threads()
    generator = torch.Generator(device=device).manual_seed(0)
    fill = torch.empty(numel, device=device)
    a = torch.randn(tokens, hidden, device=device)
    b = torch.randn(hidden, intermediate, device=device)
    rows = []
    try:
        for n in threads:
            torch.set_num_threads(n)
            rng = _median_seconds(lambda: fill.normal_(generator=generator), repeats, device)
            mm = _median_seconds(lambda: a @ b, repeats, device)
            gflops = 2 * tokens * hidden * intermediate / mm / 1e9
            forward = 2 * numel * tokens / (gflops * 1e9)
            rows.append(
                {
                    "threads": n,
                    "rng_seconds": rng,
                    "rng_ns_per_element": 1e9 * rng / numel,
                    "matmul_gflops": gflops,
                    "forward_seconds_implied": forward,
                    "predicted_mezo_step_over_two_forwards": 1 + z_draws * rng / (2 * forward),
                }
            )
    finally:
        torch.set_num_threads(saved)
    return rows


def render_probe(rows: list[dict[str, Any]], numel: int, shape: str) -> str:
    lines = [f"normal fill of {numel / 1e6:.1f}M elements vs matmul {shape}:"]
    lines.append(
        f"  {'threads':>7s} {'fill s':>8s} {'ns/elem':>8s} {'GFLOP/s':>8s} "
        f"{'fwd s (implied)':>15s} {'MeZO/2fwd (pred.)':>18s}"
    )
    for r in rows:
        lines.append(
            f"  {r['threads']:>7d} {r['rng_seconds']:8.3f} {r['rng_ns_per_element']:8.2f} "
            f"{r['matmul_gflops']:8.1f} {r['forward_seconds_implied']:15.3f} "
            f"{r['predicted_mezo_step_over_two_forwards']:18.2f}"
        )
    return "\n".join(lines)
