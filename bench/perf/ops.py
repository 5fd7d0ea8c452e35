"""Operator calls of a workload: a cost that does not depend on the machine or its load.

A ``TorchDispatchMode`` sees every ATen operator call below autograd (the backward's
included, on CPU and GPU alike): a forward's matmuls and views, a perturbation pass's
``normal_`` and ``add_`` per tensor (or per chunk), a ``torch._foreach_*`` call as one
call, whatever it does inside. The count of one step against the count of the passes it
cannot avoid (its floor: the same forward and backward functions the time floors run,
methods.py) is exact on a given torch version, so it can be guarded at a tolerance of
zero, and the difference, step minus floor, is the method's own per-step work in
operator calls: a ZO step whose perturbation costs one kernel per tensor shows a
difference that grows with the number of tensors, a fused one a constant.

On a GPU every counted call is about one kernel launch (views and metadata ops launch
none; they are counted all the same, and the floor has its share of them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode

# Operators listed per workload in perf.json, most frequent first.
TOP_OPERATORS = 8


class OpCounter(TorchDispatchMode):
    """Counts ATen operator calls by overload packet ("add_", "mm", "normal_")."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def count_ops(fn: Callable[[], Any]) -> dict[str, Any]:
    """{"total": operator calls of one call of fn, "top": {operator: calls} of the
    TOP_OPERATORS most frequent}."""
    with OpCounter() as counter:
        fn()
    return {"total": counter.total, "top": dict(counter.counts.most_common(TOP_OPERATORS))}


def floor_ops(forward: int, partial_backward: int, passes: dict[str, int]) -> int:
    """Operator calls of the passes a step reports (StepStats): one forward with its
    (partial) backward when it has a backward, every other forward a no-grad forward;
    the same floor as the time ratio step_over_own_floor."""
    forwards, backwards = passes["forward"], passes["backward"]
    if backwards > 0:
        return partial_backward + max(forwards - 1, 0) * forward
    return forwards * forward
