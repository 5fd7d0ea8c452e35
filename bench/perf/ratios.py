"""Ratios of the perf rows, their 95% intervals, and the targets (each a ratio to a floor).

A ZO step cannot beat the two forward passes it evaluates (MeZO-GV's and MeZO-Greedy's
the M + 2 they report: step_over_own_forwards) and ZO memory cannot beat inference
memory; Hi-ZFO's step cannot beat its own passes (a forward + backward down to
its deepest FO tensor, plus one no-grad forward for every other forward). Targets are
only set on such ratios to a floor, timed beside the step (interleaved, timing.py):
"Hi-ZFO step / AdamW step" is printed but has no target, since a two-sided Hi-ZFO step
cannot be cheaper than about (2 + 2 rho) / 3 of an AdamW step (docs/performance.md).

Which ratios a method's rows get, and their targets, the method class declares
(``perf_ratios``, bench.method.MethodTraits); every row also gets its operator counts
against its floor's (ops.py). The reference row of "step_over_fo_step" is whichever
default row's class declares ``is_reference = True``, and that method's keys are spelled
"fo": nothing here knows a method by its name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bench.method import MethodTraits
from bench.perf.timing import narrow, ratio_interval

# Denominators a method row can be paired with, measured on the method's own model and
# interleaved with its steps (methods.measure_method): "forward" (no-grad forward of the
# batch) and "partial_backward" (forward + backward with only the tensors the method
# left requiring grad: for Hi-ZFO, down to the deepest FO tensor).
FLOOR_PHASES = ("forward", "partial_backward")


@dataclass(frozen=True)
class MethodRatio:
    """One ratio computed for every perf row of one method.

    Attributes:
        method: registered method name whose rows (default and variants) get the ratio.
        prefix: how the method is spelled in the key ("fo" for fo-adamw); a variant's
            suffix goes after it in brackets.
        kind: what is divided by what, one of RATIO_KINDS (see ratio_value).
        targets: (device, limit) pairs: "cpu", "cuda" or "any"; met when value <= limit
            and the 95% interval is within +-5%. Only kinds paired with a floor (or the
            inference peak) take targets.
        variants_only: only rows other than the default (kind "step_over_default").
    """

    method: str
    prefix: str
    kind: str
    targets: tuple[tuple[str, float], ...] = ()
    variants_only: bool = False

    def __post_init__(self) -> None:
        if self.targets and self.kind not in FLOOR_KINDS:
            raise ValueError(f"{self.kind} is not a ratio to a floor: it takes no target")

    def key(self, label: str) -> str:
        """The ratio's key for the row labelled `label` ("mezo[keep_z]", "hizfo")."""
        suffix = label[len(self.method) :]  # "" or "[variant]"
        kind = f"step_over_{self.prefix}_step" if self.kind == "step_over_default" else self.kind
        return f"{self.prefix}{suffix}_{kind}"

    @property
    def floors(self) -> tuple[str, ...]:
        """The FLOOR_PHASES this ratio needs measured beside the method's steps."""
        return RATIO_KINDS[self.kind]


# kind -> the floor phases it is paired with (numerator / denominator in ratio_value).
RATIO_KINDS: dict[str, tuple[str, ...]] = {
    "step_over_two_forwards": ("forward",),  # step / 2 x forward
    "step_over_forward": ("forward",),  # step / forward
    "step_over_own_floor": FLOOR_PHASES,  # step / (partial fwd+bwd + other forwards)
    "step_over_own_forwards": ("forward",),  # step / (its forwards per step x forward)
    "peak_over_inference_peak": (),  # peak / the no-grad forward's peak
    "step_over_naive_mezo_step": (),  # step / the naive MeZO reference (no target)
    "step_over_fo_step": (),  # step / the reference method's default step (no target)
    "step_over_default": (),  # a variant's step / the method's default step (no target)
    "ops_over_floor_ops": (),  # operator calls of a step / of its floor's passes (ops.py)
    "ops_minus_floor_ops": (),  # the same as a difference: the step's own operator calls
}
# Kinds every method row gets, whatever its class declares: exact counts, no rounds.
OPS_KINDS = ("ops_over_floor_ops", "ops_minus_floor_ops")
# Kinds that are ratios to a floor: the only ones a target may be set on.
FLOOR_KINDS = (
    "step_over_two_forwards",
    "step_over_own_forwards",
    "step_over_own_floor",
    "peak_over_inference_peak",
    "ops_over_floor_ops",
)

# How the reference method's rows are spelled in ratio keys ("fo_step_over_forward"),
# whatever its registered name; every other method's rows by their own label.
REFERENCE_PREFIX = "fo"


def method_ratios(name: str, traits: MethodTraits) -> tuple[MethodRatio, ...]:
    """The ratios of the rows of method `name`, from what its class declares
    (MethodTraits.perf_ratios), then the operator counts (OPS_KINDS) of every row."""
    prefix = REFERENCE_PREFIX if traits.is_reference else name
    for kind, _ in traits.perf_ratios:
        if kind not in RATIO_KINDS:
            raise ValueError(f"{name}: unknown perf ratio kind {kind!r} (perf/ratios.py)")
    declared = tuple(
        MethodRatio(name, prefix, kind, targets, variants_only=kind == "step_over_default")
        for kind, targets in traits.perf_ratios
    )
    return declared + tuple(MethodRatio(name, prefix, kind) for kind in OPS_KINDS)


def ratios_of(name: str) -> tuple[MethodRatio, ...]:
    """method_ratios of a registered method (bench.registry.traits_of: the defaults, so
    only the operator counts, for one not installed here)."""
    from bench.registry import traits_of

    return method_ratios(name, traits_of(name))


# Ratios of the references alone (references.measure_references' workloads), each
# (numerator, denominator, factor): paired per round like a method's floors.
REFERENCE_PAIRS: dict[str, tuple[str, str, float]] = {
    "naive_mezo_step_over_two_forwards": ("naive_mezo", "forward", 2.0),
    "forward_backward_over_forward": ("forward_backward", "forward", 1.0),
}
REFERENCE_RATIOS = tuple(REFERENCE_PAIRS)


def floors_needed(name: str) -> tuple[str, ...]:
    """The FLOOR_PHASES the ratios of method `name` need timed beside its steps."""
    needed = {f for r in ratios_of(name) for f in r.floors}
    return tuple(f for f in FLOOR_PHASES if f in needed)


def paired_samples(kind: str, result: dict[str, Any]) -> tuple[list[float], list[float]] | None:
    """(step seconds, floor seconds) per round for a kind paired with floors; None when
    the kind is not paired or its floors were not timed."""
    floors = result.get("floors") or {}
    steps = result.get("seconds") or []
    if kind in ("step_over_two_forwards", "step_over_forward") and "forward" in floors:
        n = 2 if kind == "step_over_two_forwards" else 1
        return steps, [n * t for t in floors["forward"]["seconds"]]
    if kind == "step_over_own_forwards" and "forward" in floors:
        # A forward-only step (no backward): as many no-grad forwards as it reports.
        n = result["passes_per_step"]["forward"]
        return steps, [n * t for t in floors["forward"]["seconds"]]
    if kind == "step_over_own_floor" and all(f in floors for f in FLOOR_PHASES):
        # The passes the step runs: one forward with its (partial) backward when it has
        # a backward, every other forward at no-grad cost.
        forwards = result["passes_per_step"]["forward"]
        has_backward = result["passes_per_step"]["backward"] > 0
        pb, fw = floors["partial_backward"]["seconds"], floors["forward"]["seconds"]
        own = [
            (b + (forwards - 1) * f) if has_backward else forwards * f
            for b, f in zip(pb, fw, strict=True)
        ]
        return steps, own
    return None


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _ok(result: dict[str, Any] | None) -> bool:
    return bool(result) and result.get("status") == "ok"


def _unpaired(value: float | None) -> dict[str, Any]:
    return {"value": value, "low": None, "high": None, "half_width": None, "n": None}


def reference_row(methods: dict[str, Any]) -> dict[str, Any] | None:
    """The default row (label == method) of the method that declares is_reference."""
    for label, result in methods.items():
        if result.get("is_reference") and label == result.get("method"):
            return result
    return None


def ratio_value(
    ratio: MethodRatio,
    result: dict[str, Any],
    default: dict[str, Any] | None,
    refs: dict[str, Any],
    methods: dict[str, Any],
) -> dict[str, Any]:
    """One ratio of one method row, as {value, low, high, half_width, n}: paired kinds
    carry the 95% interval over rounds; value None when a part was not measured."""
    if not _ok(result):
        return _unpaired(None)
    kind, step = ratio.kind, result["median_seconds"]
    paired = paired_samples(kind, result)
    if paired is not None:
        return ratio_interval(*paired)
    if kind in ("step_over_two_forwards", "step_over_forward"):
        n = 2 if kind == "step_over_two_forwards" else 1
        return _unpaired(_div(step, n * refs["forward"]["median_seconds"]))
    if kind == "step_over_own_forwards":
        n = (result.get("passes_per_step") or {}).get("forward")
        return _unpaired(_div(step, n * refs["forward"]["median_seconds"]) if n else None)
    if kind == "step_over_own_floor":
        return _unpaired(None)
    if kind == "peak_over_inference_peak":
        return _unpaired(_div(result["peak_bytes"], refs["forward"]["peak_bytes"]))
    if kind in OPS_KINDS:
        ops = result.get("ops") or {}
        step, floor = ops.get("step"), ops.get("floor")
        if kind == "ops_over_floor_ops":
            return _unpaired(_div(step, floor))
        return _unpaired(None if step is None or not floor else float(step - floor))
    if kind == "step_over_naive_mezo_step":
        return _unpaired(_div(step, refs.get("naive_mezo", {}).get("median_seconds")))
    if kind == "step_over_fo_step":
        fo = reference_row(methods)
        return _unpaired(_div(step, fo["median_seconds"]) if _ok(fo) else None)
    if kind == "step_over_default":
        ok = default is not None and _ok(default)
        return _unpaired(_div(step, default["median_seconds"]) if ok else None)
    raise ValueError(f"unknown ratio kind {kind!r}")


def compute_ratios(
    refs: dict[str, Any],
    methods: dict[str, Any],
    definitions_of: Callable[[str], tuple[MethodRatio, ...]] = ratios_of,
) -> tuple[dict[str, float | None], dict[str, dict[str, Any]], dict[str, MethodRatio]]:
    """Every ratio of the references and of each method row, keyed by the row's label.

    `definitions_of(name)` gives the ratios of a method's rows (default: from its traits,
    ratios_of). Returns (ratios, intervals, definitions): the value of each key; its
    interval dict (ratio_value; low/high None for unpaired ratios) with the thread count
    it was measured at; and the definition each method ratio key came from (for its
    targets).
    """
    intervals: dict[str, dict[str, Any]] = {}
    for key, (a, b, factor) in REFERENCE_PAIRS.items():
        if a in refs and b in refs:
            found = ratio_interval(refs[a]["seconds"], [factor * t for t in refs[b]["seconds"]])
            intervals[key] = {**found, "threads": refs[a].get("threads")}
        else:
            intervals[key] = {**_unpaired(None), "threads": None}
    definitions: dict[str, MethodRatio] = {}
    for label, result in methods.items():
        name = result.get("method", label)
        for ratio in definitions_of(name):
            if ratio.variants_only and label == name:
                continue
            key = ratio.key(label)
            definitions[key] = ratio
            found = ratio_value(ratio, result, methods.get(name), refs, methods)
            intervals[key] = {**found, "threads": result.get("threads")}
    ratios = {key: i["value"] for key, i in intervals.items()}
    return ratios, intervals, definitions


def verdict(value: float | None, interval: dict[str, Any], limit: float) -> tuple[Any, str]:
    """(met, words): met True/False, or None with the reason when there is no verdict
    (not measured, one round only, or an interval wider than +-5%)."""
    if value is None:
        return None, "not measured"
    if interval.get("n") is None:  # unpaired (memory): the value stands alone
        return value <= limit, "met" if value <= limit else "MISSED"
    if interval.get("half_width") is None:
        return None, "no interval (one round)"
    if not narrow(interval):
        return None, f"interval too wide (+-{100 * interval['half_width']:.0f}%)"
    return value <= limit, "met" if value <= limit else "MISSED"


def check_targets(
    ratios: dict[str, float | None],
    intervals: dict[str, dict[str, Any]],
    definitions: dict[str, MethodRatio],
    device: torch.device,
) -> list[dict[str, Any]]:
    """One row per ratio with a target on this device: {ratio, limit, device, value,
    low, high, met, verdict}; met is None when there is no verdict (verdict says why)."""
    rows = []
    for key, ratio in definitions.items():
        for where, limit in ratio.targets:
            if where not in ("any", device.type):
                continue
            value, interval = ratios.get(key), intervals.get(key, {})
            met, words = verdict(value, interval, limit)
            rows.append(
                {
                    "ratio": key,
                    "limit": limit,
                    "device": where,
                    "value": value,
                    "low": interval.get("low"),
                    "high": interval.get("high"),
                    "threads": interval.get("threads"),
                    "met": met,
                    "verdict": words,
                }
            )
    return rows
