"""Sharpness of a trained solution, for the claim that Hi-ZFO's ZO part escapes sharp minima.

Both measures use a fixed sample of training examples (the first `examples` of the
task's training split, the same for every method and seed, so differences are paired)
and the mean loss L(w) over it, in eval mode (dropout off), in fp32 with autocast off
whatever the trial's precision (a bf16 model is measured on an fp32 copy of its weights:
under bf16 the rounding of a perturbed forward, 1.7e-4 on the tiny model, exceeds the
curvature signal, 4e-5). They leave the weights exactly as they found them (every tensor
is restored with ``copy_`` from a saved copy, not by subtracting the perturbation).

(a) Filter-normalised random-direction sharpness (Li et al., NeurIPS 2018):

        S_r = mean_k [ (L(w + r d_k) + L(w - r d_k)) / 2 - L(w) ],
        d_k,t,i = g_k,t,i * ||w_t,i|| / ||g_k,t,i||

    with g_k ~ N(0, I) drawn per tensor t from a seeded generator and normalised per
    filter i (a row: an output unit of a linear layer, a token of an embedding), so
    every filter moves by the same fraction r of its own norm (scale-invariant: a filter
    whose weights a normalisation layer rescales moves in proportion). 1-D tensors
    (biases, norm weights) are left unperturbed, as Li et al. do for biases and batch
    norm. Each direction is probed both ways (antithetic pairs): the first-order term
    r g.d, whose mean is zero but whose spread would otherwise dominate a small K,
    cancels exactly, leaving the curvature: for a quadratic L(w) = 1/2 w^T A w each pair
    gives r^2 / 2 d^T A d, whose expectation is r^2 / 2 sum_i ||w_i||^2 tr(A_ii) / m_i
    (A_ii the block of filter i, m_i its size). Cost: 2K + 1 forward passes.

(b) The largest-magnitude Hessian eigenvalue of L at w, by power iteration on
    Hessian-vector products Hv = d(g . v)/dw (Pearlmutter's trick, as PyHessian does;
    Yao et al., 2020): v <- Hv / ||Hv|| until the Rayleigh quotient v.Hv changes by
    less than `hessian_tol` (relative) or after `hessian_iters` products. The record
    keeps the iterations, whether the tolerance was met, and the final residual
    ||Hv - lambda v|| / |lambda| (0 for an exact eigenpair). A cap of 2 reports about a
    third of the converged value on SmolLM2 (6.6 against 21.2), so the cap is a guard,
    not the budget. Each product costs about two backward passes.

Keskar et al. (ICLR 2017) is the origin of the argument that sharp minima (large values
here) generalise worse.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import torch

# The config is a trial setting (bench/spec.py, no torch); its name stays importable here.
from bench.spec import MIN_EXAMPLES as MIN_EXAMPLES
from bench.spec import SharpnessConfig

Loss = Callable[[], torch.Tensor]


def _float_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    seen, out = set(), []
    for p in model.parameters():
        if p.is_floating_point() and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def filter_normalised(
    w: torch.Tensor, radius: float, generator: torch.Generator
) -> torch.Tensor | None:
    """A random step for tensor `w` (fp32, on w's device): Gaussian, each filter (row)
    rescaled to `radius` times that filter's norm; None for a 1-D tensor (unperturbed)."""
    if w.dim() < 2:
        return None
    g = torch.randn(w.shape, generator=generator, dtype=torch.float32).to(w.device)
    rows_g = g.flatten(1).norm(dim=1)
    rows_w = w.detach().float().flatten(1).norm(dim=1)
    scale = torch.where(rows_g > 0, radius * rows_w / rows_g, torch.zeros_like(rows_g))
    return g * scale.view(-1, *([1] * (w.dim() - 1)))


@torch.no_grad()
def random_direction_sharpness(
    params: Sequence[torch.Tensor], loss: Loss, *, radius: float, directions: int, seed: int
) -> dict[str, Any]:
    """(a) above: the mean, std and each draw of the antithetic rise; weights restored."""
    base = float(loss())
    saved = [p.detach().clone() for p in params]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rises = []
    try:
        for _ in range(directions):
            steps = [filter_normalised(w, radius, gen) for w in saved]
            both = []
            for sign in (1.0, -1.0):
                for p, w, step in zip(params, saved, steps, strict=True):
                    if step is not None:
                        p.copy_((w.float() + sign * step).to(p.dtype))
                both.append(float(loss()))
            rises.append((both[0] + both[1]) / 2 - base)
            for p, w in zip(params, saved, strict=True):
                p.copy_(w)
    finally:
        for p, w in zip(params, saved, strict=True):
            p.copy_(w)
    mean = sum(rises) / len(rises)
    std = math.sqrt(sum((x - mean) ** 2 for x in rises) / max(len(rises) - 1, 1))
    return {
        "loss": base,
        "mean_rise": mean,
        "std_rise": std,
        "rises": rises,
        "normalisation": "filter",
        "perturbed_tensors": sum(w.dim() >= 2 for w in saved),
    }


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True)))


def top_hessian_eigenvalue(
    params: Sequence[torch.Tensor], loss: Loss, *, iters: int, tol: float, seed: int
) -> dict[str, Any]:
    """(b) above: the largest-magnitude Hessian eigenvalue by power iteration, run until
    the estimate changes by less than `tol` (relative) or `iters` products."""
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    v = [torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p) for p in params]
    norm = math.sqrt(_dot(v, v))
    v = [x / norm for x in v]
    eigen, history, converged, residual = None, [], False, None
    for _ in range(iters):
        grads = torch.autograd.grad(loss(), params, create_graph=True)
        dot = sum((g * x).sum() for g, x in zip(grads, v, strict=True))
        hv = [h.detach() for h in torch.autograd.grad(dot, params)]
        new = _dot(hv, v)  # the Rayleigh quotient v.Hv (||v|| = 1)
        history.append(new)
        norm = math.sqrt(_dot(hv, hv))
        # ||Hv - lambda v||^2 = ||Hv||^2 - lambda^2 for a unit v and lambda = v.Hv
        residual = math.sqrt(max(norm**2 - new**2, 0.0)) / max(abs(new), 1e-30)
        if norm == 0:
            eigen, converged = 0.0, True
            break
        converged = eigen is not None and abs(new - eigen) <= tol * max(abs(eigen), 1e-12)
        eigen = new
        if converged:
            break
        v = [h / norm for h in hv]
    return {
        "top_eigenvalue": eigen,
        "iterations": len(history),
        "converged": converged,
        "residual": residual,
        "tol": tol,
        "history": history,
    }


def measure_sharpness(
    model: torch.nn.Module, loss_on: Callable[[torch.nn.Module], torch.Tensor], cfg: SharpnessConfig
) -> dict[str, Any]:
    """Both measures on `model` (every floating-point parameter) in fp32 with autocast
    off, eval mode; weights (dtype included), requires_grad flags and mode restored.
    `loss_on(model)` is the mean loss on the fixed sample; it must not enter an autocast
    of its own."""
    t0 = time.perf_counter()
    params = _float_params(model)
    was_training = model.training
    flags = [p.requires_grad for p in params]
    dtypes = [p.dtype for p in params]
    low = [p for p in params if p.dtype != torch.float32]
    saved_low = [p.data for p in low]  # the original storage, put back untouched
    device_type = params[0].device.type if params else "cpu"
    model.eval()
    try:
        for p in low:  # an fp32 copy of low-precision weights (exact: bf16 -> fp32)
            p.data = p.data.float()
        out: dict[str, Any] = {
            "config": asdict(cfg),
            "parameters": sum(p.numel() for p in params),
            "dtype": "float32",
            "measured_from": sorted({str(d).removeprefix("torch.") for d in dtypes}),
        }
        with torch.autocast(device_type=device_type, enabled=False):
            out["random_direction"] = random_direction_sharpness(
                params,
                lambda: loss_on(model),
                radius=cfg.radius,
                directions=cfg.directions,
                seed=cfg.seed,
            )
            if cfg.hessian_iters > 0:
                for p in params:
                    p.requires_grad_(True)
                # The fused attention kernels have no double backward; the math one does.
                from torch.nn.attention import SDPBackend, sdpa_kernel

                with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):
                    out["hessian"] = top_hessian_eigenvalue(
                        params,
                        lambda: loss_on(model),
                        iters=cfg.hessian_iters,
                        tol=cfg.hessian_tol,
                        seed=cfg.seed,
                    )
    finally:
        for p, w in zip(low, saved_low, strict=True):
            p.data = w
        for p, f in zip(params, flags, strict=True):
            p.requires_grad_(f)
            p.grad = None
        model.train(was_training)
    out["seconds"] = time.perf_counter() - t0
    return out
