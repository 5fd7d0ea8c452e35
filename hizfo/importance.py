"""Per-tensor importance scores from a few profiling batches.

Every score is computed from the full gradient g of one tensor on one batch, then
averaged over the batches:

- "taylor" (default; GreenTrainer, Huang et al., ICLR 2024, arXiv 2309.13192): the
  first-order Taylor estimate of the loss change if this tensor alone took one AdamW step,
  |sum(g * dw)|. dw is the step a fresh AdamW makes: after one step its bias-corrected
  moments are m = g and v = g^2, so dw = -lr * g / (sqrt(g^2) + adam_eps) elementwise
  (about -lr * sign(g)), and the score is lr * sum(g^2 / (|g| + adam_eps)), i.e.
  lr * sum|g| up to the adam_eps terms. Weight decay is left out of dw (it does not depend
  on the data). A closed form rather than a real optimizer step, so profiling needs no
  optimizer state.
- "grad_norm": ||g||_2.
- "fisher": sum(g^2), the empirical Fisher diagonal summed over the tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import torch

ADAM_EPS = 1e-8  # torch.optim.AdamW's default eps, used by the "taylor" score's dw


def _taylor(grad: torch.Tensor, lr: float) -> float:
    g = grad.double()
    dw = -lr * g / (g.abs() + ADAM_EPS)
    return abs(float((g * dw).sum()))


def _grad_norm(grad: torch.Tensor, lr: float) -> float:
    return float(grad.double().norm())


def _fisher(grad: torch.Tensor, lr: float) -> float:
    return float(grad.double().pow(2).sum())


IMPORTANCE_METHODS: dict[str, Callable[[torch.Tensor, float], float]] = {
    "taylor": _taylor,
    "grad_norm": _grad_norm,
    "fisher": _fisher,
}


def check_importance_method(method: str) -> None:
    if method not in IMPORTANCE_METHODS:
        raise ValueError(
            f"unknown importance method {method!r}; valid: {', '.join(IMPORTANCE_METHODS)}"
        )


def profile_importance(
    model: torch.nn.Module,
    loss_closures: Sequence[Callable[[], torch.Tensor]],
    *,
    method: str = "taylor",
    lr: float = 1e-5,
    normalize: bool = True,
    names: Collection[str] | None = None,
) -> dict[str, float]:
    """Score every parameter tensor of `model` (or only those in `names`).

    Each closure runs a forward pass on one profiling batch and returns a scalar loss; it
    is backpropagated with gradients enabled on every scored tensor (requires_grad flags
    are restored afterwards and no .grad is left behind, also on tensors not scored).
    Scores are averaged over the closures; with normalize=True they are divided by the
    largest one (GreenTrainer), so the most important tensor scores 1. A tensor the loss
    does not reach scores 0. `lr` only scales the "taylor" score. The model's train/eval
    mode is the caller's business.

    Returns:
        {parameter name: score} in model.named_parameters() order (tied tensors once).
    """
    check_importance_method(method)
    if not loss_closures:
        raise ValueError("profile_importance needs at least one loss closure")
    score_fn = IMPORTANCE_METHODS[method]
    all_params = list(model.named_parameters())
    scored = [(n, p) for n, p in all_params if names is None or n in names]
    if names is not None:
        missing = set(names) - {n for n, _ in scored}
        if missing:
            raise ValueError(f"not parameters of the model: {sorted(missing)[:5]}")

    flags = [p.requires_grad for _, p in all_params]
    old_grads = [p.grad for _, p in all_params]
    scored_ids = {id(p) for _, p in scored}
    totals = {n: 0.0 for n, _ in scored}
    try:
        for _, p in all_params:
            p.requires_grad_(id(p) in scored_ids or p.requires_grad)
            p.grad = None
        for closure in loss_closures:
            with torch.enable_grad():
                loss = closure()
                loss.backward()
            for n, p in scored:
                if p.grad is not None:
                    totals[n] += score_fn(p.grad, lr)
            for _, p in all_params:
                p.grad = None
    finally:
        for (_, p), flag, grad in zip(all_params, flags, old_grads, strict=True):
            p.requires_grad_(flag)
            p.grad = grad
    scores = {n: s / len(loss_closures) for n, s in totals.items()}
    if normalize:
        largest = max((abs(s) for s in scores.values()), default=0.0)
        if largest > 0:
            scores = {n: s / largest for n, s in scores.items()}
    return scores
