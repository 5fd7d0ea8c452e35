"""Choosing the first-order (FO) tensors under a backward-cost budget.

Cost model (after GreenTrainer, Huang et al., ICLR 2024, arXiv 2309.13192), in a FLOP
proxy per token: backward computes each selected tensor's weight gradient (dw_cost), and
an op's input gradient (dy_cost) only where the op's input depends on a selected tensor,
i.e. where some selected tensor was used earlier in the forward pass. Tensors are
ordered by when the forward pass first uses them (position), and each op records the
latest position its input depends on (dy_from - 1), so with S the selected set and
deepest(S) = min_{j in S} position_j:

    cost(S) = sum_{ops u: deepest(S) < dy_from_u} dy_cost_u + sum_{i in S} dw_cost_i

In a plain chain dy_from_u is the op's own position (the deepest selected op itself needs
no input gradient); ops that read the same input (q, k and v; gate and up) share the
dy_from of the first of them, because a sibling executed later does not lie between the
loss and a selected q. The budget rho is a fraction of the full backward, cost(all).

The order comes from one traced forward (trace_forward): registration order is not
execution order (OPT registers its final layer norm and project_out before the layers,
and runs them last), and a tensor's cost depends on what runs after it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

STRATEGIES = ("dp", "topk", "random", "random-greedy", "reverse")
# Strategies that ignore (random, random-greedy) or invert (reverse) the importance
# scores: ablations of the real selection ("dp"), whose set HiZFO records beside theirs.
ABLATIONS = ("random", "random-greedy", "reverse")
_TOL = 1e-9  # relative slack that absorbs float rounding in budget comparisons


@dataclass(frozen=True)
class TensorCost:
    """Backward cost of one parameter tensor.

    Attributes:
        name: parameter name as in model.named_parameters().
        position: index in forward order of first use (0 = closest to the input).
        dw_cost: cost of this tensor's weight gradient (all its uses).
        dy_cost: cost of propagating the activation gradient through the op of this
            tensor's first use, paid when the deepest selected position is < dy_from.
        dy_from: see dy_cost. None means position + 1 (the tensor's own op is paid when
            it is itself the deepest selected one: a coarse chain model for hand-built
            costs); trace_forward gives the exact value, usually `position`.
        extra_dy: (dy_from, dy_cost) of later uses of the same tensor, e.g. the output
            head that reuses a tied embedding.
    """

    name: str
    position: int
    dw_cost: float
    dy_cost: float
    dy_from: int | None = None
    extra_dy: tuple[tuple[int, float], ...] = field(default=())

    @property
    def dy_threshold(self) -> int:
        return self.position + 1 if self.dy_from is None else self.dy_from


@dataclass
class ParamUse:
    """One use of a parameter by an op during a traced forward.

    Attributes:
        name: the parameter's (first) name.
        kind: "embedding" (a table lookup), "matmul" (a >= 2-D weight in any other op) or
            "elementwise" (a 1-D tensor: norm weights, biases).
        owner: True for the first parameter of the op (it carries the op's dy_cost; a
            Linear's bias, listed after the weight, carries none).
        dy_from: 1 + the latest position the op's non-parameter inputs depend on (0: they
            depend on no parameter, e.g. token ids).
    """

    name: str
    kind: str
    owner: bool
    dy_from: int


@dataclass
class ForwardTrace:
    """What one traced forward saw: parameter names in order of first use, and uses."""

    order: list[str]
    uses: list[ParamUse]


_EMBEDDING_FUNCS = {torch.nn.functional.embedding, torch.embedding}


class _UseRecorder(TorchFunctionMode):
    """Follows which parameters every tensor of a forward depends on (a bitmask over
    first-use positions) and records each op that reads a parameter together with
    non-parameter data. Tensors computed from parameters only (weight.t(), a cast) are
    parameter views: their use is recorded where they meet data. Metadata queries
    (.shape, .dtype) return no tensor and are not uses."""

    def __init__(self, names: dict[int, str]) -> None:
        super().__init__()
        self.names = names
        self.position: dict[int, int] = {}
        self.order: list[str] = []
        self.uses: list[ParamUse] = []
        self.masks: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.views: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if not outputs:
            return out
        params: list[tuple[int, torch.Tensor]] = []
        data_mask, has_data = 0, False
        for t in inputs:
            if id(t) in self.names:
                params.append((id(t), t))
            elif t in self.views:
                params.extend(self.views[t])
            else:
                has_data = True
                data_mask |= self.masks.get(t, 0)
        if params and not has_data:
            for o in outputs:  # a parameter view, e.g. weight.t()
                self.views[o] = params
            return out
        own = 0
        dy_from = data_mask.bit_length()
        seen: set[int] = set()
        for pid, p in params:
            if pid in seen:
                continue
            if pid not in self.position:
                self.position[pid] = len(self.order)
                self.order.append(self.names[pid])
            if func in _EMBEDDING_FUNCS:
                kind = "embedding"
            else:
                kind = "matmul" if p.ndim >= 2 else "elementwise"
            self.uses.append(ParamUse(self.names[pid], kind, not seen, dy_from))
            seen.add(pid)
            own |= 1 << self.position[pid]
        mask = data_mask | own
        if mask:
            for o in outputs:
                self.masks[o] = self.masks.get(o, 0) | mask
        return out


def trace_forward(model: torch.nn.Module, run: Callable[[], object]) -> ForwardTrace:
    """Run `run` (one forward of `model`, e.g. a loss closure) and record the order in
    which it first uses each parameter, and what every use depends on. Gradients are
    not affected; tied tensors are named by their first name in named_parameters()."""
    names: dict[int, str] = {}
    for name, p in model.named_parameters():
        names.setdefault(id(p), name)
    recorder = _UseRecorder(names)
    with recorder:
        run()
    return ForwardTrace(order=recorder.order, uses=recorder.uses)


def tensor_costs(model: torch.nn.Module, trace: ForwardTrace | None = None) -> list[TensorCost]:
    """A FLOP proxy for the backward cost of each parameter tensor, per token, in units
    of numel.

    - A >= 2-D weight (Linear and the like): its weight gradient and its op's input
      gradient are each one matmul of tokens x numel multiply-adds: dw = dy = numel.
    - 1-D tensors (norm weights, biases): one elementwise op per token, dw = numel; the
      op's dy = numel goes to the op's first parameter (a Linear's bias adds none).
    - Embedding lookups: dw = embedding_dim (one row added per token; the zero-filled
      dense gradient, numel / tokens per token, is left out), dy = 0 (nothing below the
      input). A table tied to an output head also pays that head's matmuls: dw + numel,
      and the head's dy (numel) as an extra term, paid by any selection below the head.

    Positions and dy_from come from `trace` (trace_forward on one batch). Without one,
    registration order stands in (dy_from = None: the coarse chain model), which is
    wrong for models that register modules out of execution order (OPT), so HiZFO
    always traces. Tensors the traced forward never used cost nothing and come last.
    """
    params: dict[str, torch.Tensor] = {}
    embedding_ids = {
        id(p)
        for m in model.modules()
        if isinstance(m, torch.nn.Embedding)
        for p in m.parameters(recurse=False)
    }
    for name, p in model.named_parameters():
        params.setdefault(name, p)
    if trace is None:
        costs = []
        for position, (name, p) in enumerate(params.items()):
            n = float(p.numel())
            if id(p) in embedding_ids:
                costs.append(TensorCost(name, position, float(p.shape[-1]), 0.0))
            else:
                costs.append(TensorCost(name, position, n, n))
        return costs

    by_name: dict[str, list[ParamUse]] = {}
    for use in trace.uses:
        by_name.setdefault(use.name, []).append(use)
    costs = []
    for position, name in enumerate(trace.order):
        p = params[name]
        n = float(p.numel())
        first, *later = by_name[name]
        dw = 0.0
        terms: list[tuple[int, float]] = []
        for use in (first, *later):
            if use.kind == "embedding":
                dw += float(p.shape[-1])
                terms.append((use.dy_from, 0.0))
            else:
                dw += n
                terms.append((use.dy_from, n if use.owner else 0.0))
        (dy_from, dy), *extra = terms
        costs.append(
            TensorCost(
                name,
                position,
                dw_cost=dw,
                dy_cost=dy,
                dy_from=dy_from,
                extra_dy=tuple((f, c) for f, c in extra if c > 0),
            )
        )
    unused = [name for name in params if name not in set(trace.order)]
    for k, name in enumerate(unused):
        costs.append(TensorCost(name, len(trace.order) + k, 0.0, 0.0, dy_from=0))
    return costs


def _dy_terms(costs: Sequence[TensorCost]) -> tuple[torch.Tensor, torch.Tensor]:
    """(dy_from, dy_cost) of every op in `costs`, as two tensors."""
    froms, values = [], []
    for c in costs:
        froms.append(c.dy_threshold)
        values.append(c.dy_cost)
        for f, v in c.extra_dy:
            froms.append(f)
            values.append(v)
    return torch.tensor(froms, dtype=torch.int64), torch.tensor(values, dtype=torch.float64)


def _dy_paid(froms: torch.Tensor, values: torch.Tensor, deepest: float) -> float:
    return float(values[froms > deepest].sum())


def full_cost(costs: Sequence[TensorCost]) -> float:
    """cost(all): every weight gradient and every input gradient above the first use."""
    if not costs:
        return 0.0
    froms, values = _dy_terms(costs)
    return _dy_paid(froms, values, min(c.position for c in costs)) + sum(c.dw_cost for c in costs)


def selection_cost(selected: set[str] | Sequence[str], costs: Sequence[TensorCost]) -> float:
    """cost(S) under the model above (0 for the empty set)."""
    names = set(selected)
    chosen = [c for c in costs if c.name in names]
    if not chosen:
        return 0.0
    froms, values = _dy_terms(costs)
    deepest = min(c.position for c in chosen)
    return _dy_paid(froms, values, deepest) + sum(c.dw_cost for c in chosen)


def select_fo_tensors(
    importance: dict[str, float],
    costs: Sequence[TensorCost],
    *,
    budget: float,
    strategy: str = "dp",
    resolution: int = 1000,
    seed: int = 0,
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
            would break the budget (the longest ranking prefix that fits). Ablations, each
            with the same budget: "random" runs the same DP on random scores (the ranks
            1..n dealt to the tensors in a seeded random order), importance ignored, so
            its FO set is of a size comparable with dp's (the DP, not the packing rule,
            decides it); "reverse" runs the DP on reversed ranks (the least important
            tensor scores n, the most important 1): least important first;
            "random-greedy" takes the tensors in a seeded random order, each while it still
            fits (the old random ablation: the first deep tensor it meets pays the whole
            activation-gradient chain, so its sets are far smaller than dp's).
        resolution: "dp", "random" and "reverse"; the budget is split into this many cost
            units.
        seed: "random" and "random-greedy": seeds the random order.

    Tensors with importance <= 0 are never selected by dp and topk when budget < 1 (they
    add cost only); the ablations score every tensor.
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
    limit = budget * full_cost(costs)
    if strategy == "topk":
        return _select_topk(importance, costs, limit)
    if strategy in ABLATIONS:
        scores = ablation_scores(importance, costs, strategy, seed=seed)
        if strategy == "random-greedy":
            return _select_fill(scores, costs, limit)
        return _select_dp(scores, costs, limit, resolution)
    return _select_dp(importance, costs, limit, resolution)


def ablation_scores(
    importance: dict[str, float], costs: Sequence[TensorCost], strategy: str, *, seed: int = 0
) -> dict[str, float]:
    """The scores an ablation strategy selects by: the ranks 1..n (n = len(costs)).

    "random" and "random-greedy": dealt in a seeded random order (importance ignored).
    "reverse": by increasing importance, so the least important tensor scores n (ties in
    forward order)."""
    if strategy == "reverse":
        order = sorted(costs, key=lambda c: (importance.get(c.name, 0.0), c.position))
        names = [c.name for c in order]
    elif strategy in ("random", "random-greedy"):
        names = [c.name for c in costs]
        random.Random(seed).shuffle(names)
    else:
        raise ValueError(f"{strategy!r} is not an ablation; ablations: {', '.join(ABLATIONS)}")
    return {name: float(len(names) - i) for i, name in enumerate(names)}


def _select_topk(
    importance: dict[str, float], costs: Sequence[TensorCost], limit: float
) -> set[str]:
    ranked = sorted(
        (c for c in costs if importance.get(c.name, 0.0) > 0),
        key=lambda c: (-importance[c.name], c.position),
    )
    return _take_in_order(ranked, costs, limit, stop_at_misfit=True)


def _select_fill(ranks: dict[str, float], costs: Sequence[TensorCost], limit: float) -> set[str]:
    """Take tensors in decreasing rank, skipping any that would break the budget (the
    random-greedy ablation's fill; unlike topk it does not stop at the first misfit)."""
    ranked = sorted(costs, key=lambda c: -ranks[c.name])
    return _take_in_order(ranked, costs, limit, stop_at_misfit=False)


def _take_in_order(
    ranked: Sequence[TensorCost], costs: Sequence[TensorCost], limit: float, stop_at_misfit: bool
) -> set[str]:
    """Greedily add `ranked` tensors while the backward they need fits `limit`."""
    froms, values = _dy_terms(costs)
    selected: set[str] = set()
    deepest = math.inf
    dw_total = 0.0
    for c in ranked:
        new_deepest = min(deepest, c.position)
        if _dy_paid(froms, values, new_deepest) + dw_total + c.dw_cost > limit * (1 + _TOL):
            if stop_at_misfit:
                break
            continue
        selected.add(c.name)
        deepest = new_deepest
        dw_total += c.dw_cost
    return selected


def _select_dp(
    importance: dict[str, float], costs: Sequence[TensorCost], limit: float, resolution: int
) -> set[str]:
    """Exact search over the deepest selected tensor, knapsack over the tensors above it.

    For a candidate deepest tensor k the dy costs are fixed (every op with dy_from above
    k's position) and k's dw cost is paid, which leaves a remaining budget R_k for a 0/1 knapsack over
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
    froms, values = _dy_terms(costs)

    # table[c]: best importance of a set of tensors above k whose dw costs take <= c units.
    table = torch.zeros(resolution + 1, dtype=torch.float64)
    keep = torch.zeros((len(items), resolution + 1), dtype=torch.bool)
    weights = []
    best_value, best_k, best_capacity = 0.0, -1, 0
    for k, c in enumerate(items):
        value = importance[c.name]
        fixed = _dy_paid(froms, values, c.position) + c.dw_cost
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
