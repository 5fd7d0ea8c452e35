"""Per-tensor importance scores from a few profiling batches.

Every score is computed from the full gradient g of one tensor on one batch, then
averaged over the batches:

- "greentrainer" (default; GreenTrainer, Huang et al., ICLR 2024, arXiv 2309.13192):
  the predicted loss decrease if this tensor took the step the live AdamW would make,
  -sum(g * dw), sign kept. dw comes from the optimizer's actual state: with moments
  (m, v) after t steps, m' = b1 m + (1 - b1) g, v' = b2 v + (1 - b2) g^2, and
  dw = -lr (m' / (1 - b1^(t+1))) / (sqrt(v' / (1 - b2^(t+1))) + eps) - lr wd w. A
  tensor with no state (first profile, or ZO so far) gets a fresh step (t = 0,
  m' / (1 - b1) = g, v' / (1 - b2) = g^2), where the score is lr sum(g^2 / (|g| + eps))
  + lr wd sum(g w). A negative score (the step would raise the loss, e.g. momentum
  pointing against today's gradient) is kept negative and never selected.
- "taylor-l1" (alias "taylor", the previous default): the fresh-step score with the
  sign dropped and no decay, |lr sum(g^2 / (|g| + eps))| ~ lr ||g||_1. Equal to
  "greentrainer" on a first profile without weight decay.
- "grad_norm": ||g||_2.
- "fisher": sum(g^2), the empirical Fisher diagonal summed over the tensor.

Memory: each tensor is scored in a backward hook right after its gradient is accumulated
(Tensor.register_post_accumulate_grad_hook), and the gradient is freed at once, so at
most about one gradient is alive during profiling instead of all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import torch

from hizfo.zo import default_no_decay

ADAM_EPS = 1e-8  # torch.optim.AdamW's default eps, used when no optimizer says otherwise


@dataclass
class StepModel:
    """How the live optimizer would step, for the "greentrainer" score.

    Attributes:
        lr: the learning rate of the next step.
        betas: AdamW's betas.
        eps: AdamW's eps.
        weight_decay: decay of tensors that are not exempt (default_no_decay).
        state: per parameter name, AdamW's state ({"step", "exp_avg", "exp_avg_sq"}) for
            tensors the optimizer already holds; the others take a fresh step.
    """

    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = ADAM_EPS
    weight_decay: float = 0.0
    state: Mapping[str, Mapping[str, torch.Tensor]] | None = None


def _greentrainer(name: str, param: torch.Tensor, grad: torch.Tensor, step: StepModel) -> float:
    g = grad.double()
    b1, b2 = step.betas
    state = (step.state or {}).get(name)
    if state:
        t = int(state["step"])
        m = b1 * state["exp_avg"].double() + (1 - b1) * g
        v = b2 * state["exp_avg_sq"].double() + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** (t + 1)), v / (1 - b2 ** (t + 1))
    else:
        m_hat, v_hat = g, g * g
    dw = -step.lr * m_hat / (v_hat.sqrt() + step.eps)
    if step.weight_decay and not default_no_decay(name, param):
        dw = dw - step.lr * step.weight_decay * param.detach().double()
    return -float((g * dw).sum())


def _taylor_l1(name: str, param: torch.Tensor, grad: torch.Tensor, step: StepModel) -> float:
    g = grad.double()
    dw = -step.lr * g / (g.abs() + step.eps)
    return abs(float((g * dw).sum()))


def _grad_norm(name: str, param: torch.Tensor, grad: torch.Tensor, step: StepModel) -> float:
    return float(grad.double().norm())


def _fisher(name: str, param: torch.Tensor, grad: torch.Tensor, step: StepModel) -> float:
    return float(grad.double().pow(2).sum())


ScoreFn = Callable[[str, torch.Tensor, torch.Tensor, StepModel], float]
IMPORTANCE_METHODS: dict[str, ScoreFn] = {
    "greentrainer": _greentrainer,
    "taylor-l1": _taylor_l1,
    "taylor": _taylor_l1,  # alias kept for configs written before "taylor-l1"
    "grad_norm": _grad_norm,
    "fisher": _fisher,
}


def check_importance_method(method: str) -> None:
    if method not in IMPORTANCE_METHODS:
        raise ValueError(
            f"unknown importance method {method!r}; valid: {', '.join(IMPORTANCE_METHODS)}"
        )


@dataclass
class ProfileStats:
    """Memory seen while profiling (filled by profile_importance when passed).

    Attributes:
        peak_live_grads: the most scored tensors holding a .grad at one time.
        peak_grad_bytes: the most bytes of those gradients alive at one time.
    """

    peak_live_grads: int = 0
    peak_grad_bytes: int = 0


def profile_importance(
    model: torch.nn.Module,
    loss_closures: Sequence[Callable[[], torch.Tensor]],
    *,
    method: str = "greentrainer",
    lr: float = 1e-5,
    normalize: bool = True,
    names: Collection[str] | None = None,
    step_model: StepModel | None = None,
    stats: ProfileStats | None = None,
) -> dict[str, float]:
    """Score every parameter tensor of `model` (or only those in `names`).

    Each closure runs a forward pass on one profiling batch and returns a scalar loss; it
    is backpropagated with gradients enabled on the scored tensors only (requires_grad
    flags are restored afterwards and no .grad is left behind). Each tensor is scored in
    its post-accumulate-grad hook and its gradient freed there. Scores are averaged over
    the closures; with normalize=True they are divided by the largest magnitude
    (GreenTrainer), so the top score is 1 (signs kept). A tensor the loss does not reach
    scores 0. The model's train/eval mode is the caller's business.

    Args:
        lr: the learning rate of the "taylor-l1" and "greentrainer" steps (ignored when
            step_model is given).
        step_model: the live optimizer for "greentrainer" (default: a fresh AdamW with
            `lr` and torch's defaults).
        stats: if given, filled with the peak number and bytes of live gradients.

    Returns:
        {parameter name: score} in model.named_parameters() order (tied tensors once).
    """
    check_importance_method(method)
    if not loss_closures:
        raise ValueError("profile_importance needs at least one loss closure")
    score_fn = IMPORTANCE_METHODS[method]
    step = step_model if step_model is not None else StepModel(lr=lr)
    all_params, scored = _scored_params(model, names)
    totals = _accumulate_scores(all_params, scored, loss_closures, score_fn, step, stats)
    scores = {n: s / len(loss_closures) for n, s in totals.items()}
    if normalize:
        largest = max((abs(s) for s in scores.values()), default=0.0)
        if largest > 0:
            scores = {n: s / largest for n, s in scores.items()}
    return scores


def _scored_params(
    model: torch.nn.Module, names: Collection[str] | None
) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]]]:
    """(every parameter, the scored ones): (name, tensor) pairs, tied tensors once."""
    all_params: list[tuple[str, torch.Tensor]] = []
    seen: set[int] = set()
    for n, p in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            all_params.append((n, p))
    scored = [(n, p) for n, p in all_params if names is None or n in names]
    if names is not None:
        missing = set(names) - {n for n, _ in scored}
        if missing:
            raise ValueError(f"not parameters of the model: {sorted(missing)[:5]}")
    return all_params, scored


def _accumulate_scores(
    all_params: list[tuple[str, torch.Tensor]],
    scored: list[tuple[str, torch.Tensor]],
    loss_closures: Sequence[Callable[[], torch.Tensor]],
    score_fn: ScoreFn,
    step: StepModel,
    stats: ProfileStats | None,
) -> dict[str, float]:
    """Sum of each scored tensor's score over the closures' backward passes, scored in
    a post-accumulate-grad hook that frees the gradient; flags and grads restored."""
    flags = [p.requires_grad for _, p in all_params]
    old_grads = [p.grad for _, p in all_params]
    scored_ids = {id(p) for _, p in scored}
    totals = {n: 0.0 for n, _ in scored}
    live: dict[int, int] = {}  # id -> bytes of scored tensors holding a gradient now

    def make_hook(name: str) -> Callable[[torch.Tensor], None]:
        def hook(p: torch.Tensor) -> None:
            assert p.grad is not None
            live[id(p)] = p.grad.numel() * p.grad.element_size()
            if stats is not None:
                stats.peak_live_grads = max(stats.peak_live_grads, len(live))
                stats.peak_grad_bytes = max(stats.peak_grad_bytes, sum(live.values()))
            totals[name] += score_fn(name, p, p.grad, step)
            p.grad = None
            del live[id(p)]

        return hook

    handles = []
    try:
        for _, p in all_params:
            p.requires_grad_(id(p) in scored_ids)
            p.grad = None
        handles = [p.register_post_accumulate_grad_hook(make_hook(n)) for n, p in scored]
        for closure in loss_closures:
            with torch.enable_grad():
                loss = closure()
                loss.backward()
    finally:
        for h in handles:
            h.remove()
        for (_, p), flag, grad in zip(all_params, flags, old_grads, strict=True):
            p.requires_grad_(flag)
            p.grad = grad
    return totals
