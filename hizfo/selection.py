"""Choosing the first-order (FO) tensors under a backward-cost budget.

Cost model (GreenTrainer, Huang et al., ICLR 2024, arXiv 2309.13192): backward runs
from the output down to the deepest selected tensor. Every tensor at or above that point
pays dy_cost (passing the activation gradient through its op); each selected tensor also
pays dw_cost (its weight gradient):

    cost(S) = sum_{i: position_i >= min_{j in S} position_j} dy_cost_i
            + sum_{i in S} dw_cost_i

The budget rho is a fraction of the full backward, cost(all) = sum dw_cost + sum dy_cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

STRATEGIES = ("dp", "topk")
_TOL = 1e-9  # relative slack that absorbs float rounding in budget comparisons


@dataclass(frozen=True)
class TensorCost:
    """Backward cost of one parameter tensor.

    Attributes:
        name: parameter name as in model.named_parameters().
        position: index in forward order (0 = closest to the input).
        dw_cost: cost of this tensor's weight gradient.
        dy_cost: cost of propagating the activation gradient through this tensor's op,
            paid by every tensor at or above the deepest selected one.
    """

    name: str
    position: int
    dw_cost: float
    dy_cost: float


def tensor_costs(model: torch.nn.Module) -> list[TensorCost]:
    """A FLOP proxy for the backward cost of each parameter tensor, in units of numel.

    - Matrix weights (ndim >= 2, Linear and the like): a weight gradient and an input
      gradient are each one matmul of tokens x numel multiply-adds, so dw_cost = dy_cost =
      numel (the common factor, tokens, cancels in the budget fraction).
    - 1-D tensors (norm weights, biases): an elementwise op per token, dw_cost = dy_cost =
      numel (small next to the matrices).
    - Embedding tables: dw_cost = numel (a scatter-add of the rows used) and dy_cost = 0
      (there is nothing below the input to propagate to). A table tied to an output head
      (tied word embeddings) also pays the head's weight-gradient matmul when selected:
      dw_cost = 2 numel. The head's input-gradient matmul, paid by every non-empty
      selection, is not in the model (it cannot be expressed per tensor); for an untied
      head it is, as that head's dy_cost at the top.

    position is the order of first appearance in model.named_parameters(), which for
    Hugging Face decoders is forward order at block granularity (within a Llama block the
    norm weights are listed after the projections although they run before them). Tied
    tensors appear once, at their first name.
    """
    embedding_ids: set[int] = set()
    matmul_ids: set[int] = set()
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if isinstance(module, torch.nn.Embedding):
                embedding_ids.add(id(param))
            elif param.ndim >= 2:
                matmul_ids.add(id(param))
    costs = []
    for position, (name, param) in enumerate(model.named_parameters()):
        n = float(param.numel())
        if id(param) in embedding_ids:
            dw = 2 * n if id(param) in matmul_ids else n
            costs.append(TensorCost(name, position, dw_cost=dw, dy_cost=0.0))
        else:
            costs.append(TensorCost(name, position, dw_cost=n, dy_cost=n))
    return costs


def selection_cost(selected: set[str] | Sequence[str], costs: Sequence[TensorCost]) -> float:
    """cost(S) under the model above (0 for the empty set)."""
    names = set(selected)
    chosen = [c for c in costs if c.name in names]
    if not chosen:
        return 0.0
    deepest = min(c.position for c in chosen)
    return sum(c.dy_cost for c in costs if c.position >= deepest) + sum(c.dw_cost for c in chosen)


def select_fo_tensors(
    importance: dict[str, float],
    costs: Sequence[TensorCost],
    *,
    budget: float,
    strategy: str = "dp",
    resolution: int = 1000,
) -> set[str]:
    """The set of tensors to train with first-order updates.

    Args:
        importance: score per tensor name; names missing from it score 0, names not in
            `costs` are ignored.
        costs: from tensor_costs().
        budget: rho in [0, 1], the allowed fraction of the full backward cost. 0 selects
            nothing; 1 selects every tensor, whatever its score.
        strategy: "dp" maximises the total importance within the budget (see _select_dp);
            "topk" takes tensors in decreasing importance and stops at the first one that
            would break the budget (the longest ranking prefix that fits).
        resolution: "dp" only; the budget is split into this many cost units.

    Tensors with importance <= 0 are never selected when budget < 1 (they add cost only).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if not 0.0 <= budget <= 1.0 or math.isnan(budget):
        raise ValueError(f"budget must be in [0, 1], got {budget}")
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    if budget == 0.0 or not costs:
        return set()
    if budget == 1.0:
        return {c.name for c in costs}
    full = sum(c.dw_cost + c.dy_cost for c in costs)
    limit = budget * full
    if strategy == "topk":
        return _select_topk(importance, costs, limit)
    return _select_dp(importance, costs, limit, resolution)


def _select_topk(
    importance: dict[str, float], costs: Sequence[TensorCost], limit: float
) -> set[str]:
    ranked = sorted(
        (c for c in costs if importance.get(c.name, 0.0) > 0),
        key=lambda c: (-importance[c.name], c.position),
    )
    selected: set[str] = set()
    deepest = math.inf
    dw_total = 0.0
    for c in ranked:
        new_deepest = min(deepest, c.position)
        dy_total = sum(x.dy_cost for x in costs if x.position >= new_deepest)
        if dy_total + dw_total + c.dw_cost > limit * (1 + _TOL):
            break
        selected.add(c.name)
        deepest = new_deepest
        dw_total += c.dw_cost
    return selected


def _select_dp(
    importance: dict[str, float], costs: Sequence[TensorCost], limit: float, resolution: int
) -> set[str]:
    """Exact search over the deepest selected tensor, knapsack over the tensors above it.

    For a candidate deepest tensor k the dy costs are fixed (all tensors at or above k)
    and k's dw cost is paid, which leaves a remaining budget R_k for a 0/1 knapsack over
    the dw costs of the tensors above k. Tensors are visited from the top (output) down,
    so "the tensors above k" is the knapsack built so far: one table serves every k, O(n *
    resolution) in all.

    Discretisation: one unit is limit / resolution; dw costs are rounded UP to whole units
    and R_k DOWN, so the chosen set never exceeds the budget (up to a 1e-9 relative slack
    for float rounding). It can miss a better set whose costs fit only before rounding: at
    most n units of slack are lost, so the result is optimal for integer costs whenever a
    unit divides them, e.g. resolution = limit. Many tensors far smaller than a unit (norm
    weights) would each be charged a whole unit, so the leftover exact budget is then
    filled greedily with tensors above the deepest chosen one.
    """
    items = sorted((c for c in costs if importance.get(c.name, 0.0) > 0), key=lambda c: -c.position)
    if not items:
        return set()
    unit = limit / resolution
    positions = torch.tensor([c.position for c in costs], dtype=torch.int64)
    dys = torch.tensor([c.dy_cost for c in costs], dtype=torch.float64)

    # table[c]: best importance of a set of tensors above k whose dw costs take <= c units.
    table = torch.zeros(resolution + 1, dtype=torch.float64)
    keep = torch.zeros((len(items), resolution + 1), dtype=torch.bool)
    weights = []
    best_value, best_k, best_capacity = 0.0, -1, 0
    for k, c in enumerate(items):
        value = importance[c.name]
        fixed = float(dys[positions >= c.position].sum()) + c.dw_cost
        remaining = limit - fixed
        if remaining >= -_TOL * limit:
            capacity = min(resolution, max(0, math.floor(remaining / unit + _TOL)))
            total = value + float(table[capacity])
            if total > best_value:
                best_value, best_k, best_capacity = total, k, capacity
        # Now add k to the knapsack for the tensors below it.
        w = max(0, math.ceil(c.dw_cost / unit - _TOL))
        weights.append(w)
        if w <= resolution:
            candidate = torch.full_like(table, -math.inf)
            candidate[w:] = table[: resolution + 1 - w] + value
            better = candidate > table
            keep[k] = better
            table = torch.where(better, candidate, table)

    if best_k < 0:
        return set()
    selected = {items[best_k].name}
    capacity = best_capacity
    for j in range(best_k - 1, -1, -1):
        if bool(keep[j, capacity]):
            selected.add(items[j].name)
            capacity -= weights[j]

    # Rounding up charged every chosen tensor up to one unit too much; spend what is
    # left of the exact budget on the tensors above the deepest one that were left out,
    # best importance per cost first. This can only raise the total.
    spare = limit - selection_cost(selected, costs)
    rest = [c for c in items[:best_k] if c.name not in selected]
    rest.sort(key=lambda c: -importance[c.name] / c.dw_cost if c.dw_cost > 0 else -math.inf)
    for c in rest:
        if c.dw_cost <= spare + _TOL * limit:
            selected.add(c.name)
            spare -= c.dw_cost
    return selected
