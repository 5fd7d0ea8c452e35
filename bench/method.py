"""The method contract: how a fine-tuning method plugs into a trial.

A method is a class with a config dataclass. The trial loop owns data, timing,
memory and evaluation; the method owns only how parameters change::

    class MyMethod:
        config_class = MyConfig            # a dataclass; every field documented
        trains = True                      # False for methods that never step (zero-shot)
        # Optional, with the defaults of MethodTraits (method_traits() reads them):
        step_passes = (1.0, 1.0)           # nominal (forward, backward) passes per step
        is_reference = False               # True only for the baseline others are timed against
        display_order = 100                # rows sort by it, then by name
        fo_fraction = 0.0                  # share trained first-order (or a config field)
        perf_ratios = {}                   # hizfo-bench perf: ratio kind -> {device: limit}
        is_hybrid = False                  # True only for the method claims.md tests
        zo_off_variant = None              # its variant with the ZO part off ("zo-off")
        guarded_ratios = ()                # perf ratios compare guards: (ratio, kind)

        def __init__(self, config: MyConfig) -> None: ...
        def setup(self, model, ctx: TrainContext) -> torch.nn.Module: ...
        def step(self, batch: Batch, step: int) -> StepStats: ...
        def trainable_parameters(self) -> list[torch.nn.Parameter]: ...
        def state_dict(self) -> dict: ...
        def load_state_dict(self, state: dict) -> None: ...  # optional: resume (after setup)
        def summary(self) -> dict: ...     # JSON-serialisable extras for the trial file

Register it under the entry-point group ``hizfo_bench.methods``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:  # the contract imports no torch (docs/design.md, "Layering")
    import torch

Batch = dict[str, "torch.Tensor"]  # input_ids, attention_mask, labels (-100 on prompt/pad)


def causal_lm_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy over target tokens (labels != -100)."""
    return model(**batch, use_cache=False).loss


@dataclass
class StepStats:
    """What one optimisation step reports back to the trial loop.

    Attributes:
        loss: the training loss of the step's batch, before the update (the mean over
            target tokens; a ZO method's mean of its probes, say), as a float.
        forward_passes: forward passes over the batch this step really ran (profiling
            passes included), an int >= 0. Required: the trial sums them into the record's
            `passes`, and a method that never said would silently count 0.
        backward_passes: backward passes this step ran, an int >= 0 (0 for a ZO method);
            a partial backward (Hi-ZFO's, which stops at its deepest FO tensor) counts 1.
            Required, for the same reason.
        extra: per-step figures of the method's own (name -> float), recorded beside the
            loss curve as step extras (Hi-ZFO: fo_tensors, backward_depth, z_draws,
            projected_grad, zo_gain, fo_gain).
    """

    loss: float
    forward_passes: int
    backward_passes: int
    extra: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("forward_passes", "backward_passes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"StepStats.{name} must be an int >= 0, got {value!r}")


@dataclass
class TrainContext:
    """What a method may know about the run when it sets up."""

    total_steps: int
    seed: int
    device: torch.device
    loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor] = causal_lm_loss
    # Draws `n` training batches (for importance profiling); never the batches of step().
    sample_batches: Callable[[int], list[Batch]] = lambda n: []


@runtime_checkable
class Method(Protocol):
    config_class: ClassVar[type]
    trains: ClassVar[bool]

    def __init__(self, config: Any) -> None: ...

    def setup(self, model: torch.nn.Module, ctx: TrainContext) -> torch.nn.Module: ...

    def step(self, batch: Batch, step: int) -> StepStats: ...

    def trainable_parameters(self) -> list[torch.nn.Parameter]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def summary(self) -> dict[str, Any]: ...


# A backward pass costs about this many forward passes (two matmuls per forward matmul:
# the input gradient and the weight gradient); MethodTraits.step_cost uses it.
BACKWARD_OVER_FORWARD = 2.0


@dataclass(frozen=True)
class MethodTraits:
    """What the scheduler and the report need to know about a method, declared by the
    method class as ClassVars of the same names (each optional, with these defaults), so
    that nothing dispatches on method names. Read them with method_traits(cls).

    Attributes:
        step_passes: nominal (forward, backward) passes of one step at the method's
            default config, in passes over the whole batch and model: a partial backward
            counts as its share of a full one (LoRA's, which computes no base-weight
            gradients, about 0.5; Hi-ZFO's about rho). For ordering trials longest first
            and for perf; no time is predicted from it. Default (1.0, 1.0), an FO step;
            a method that never steps (trains = False) gets (0.0, 0.0) whatever it says.
        is_reference: True for the one baseline every other method is compared and
            timed against (fo-adamw); default False.
        display_order: rows of tables and plots sort by it, then by name (variants after
            their method); default 100, after the built-in methods (0-40).
        fo_fraction: the fraction of the parameters the method trains first-order, each
            with a gradient and AdamW's two moments (the memory estimate,
            bench/perf/estimates.py): a number in [0, 1] (fo-adamw 1.0; default 0.0, a
            ZO method, or LoRA whose adapters are not counted), or the name of the
            method config's field that holds it (Hi-ZFO: "rho").
        perf_ratios: the `hizfo-bench perf` ratios of the method's rows, as pairs
            (kind, ((device, limit), ...)) of bench.perf.ratios.RATIO_KINDS and their
            targets ("cpu", "cuda" or "any"; only on ratios to a floor); declared as a
            dict {kind: {device: limit}}. Default none; every method row also gets its
            operator counts against its floor's (bench/perf/ops.py) whatever it declares.
        is_hybrid: True for the hybrid FO/ZO method whose claims claims.md tests against
            the reference (Hi-ZFO); default False.
        zo_off_variant: the variant name under which a suite runs this method with its ZO
            part off (Hi-ZFO's "zo-off": ``hizfo[zo-off]``), the twin claims.md's
            stochasticity claim compares it with; default None (no such twin).
        guarded_ratios: the perf ratios `hizfo-bench compare` guards on this method's
            perf row, as (ratio, "time", "memory" or "ops": operator calls, exact, so any
            rise is a regression, compared only under the same torch); the row's metric is named
            ``<label>_<ratio>`` (MeZO: ``mezo_step_over_two_forwards``); default ().
    """

    step_passes: tuple[float, float] = (1.0, 1.0)
    is_reference: bool = False
    display_order: int = 100
    fo_fraction: float | str = 0.0
    perf_ratios: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()
    is_hybrid: bool = False
    zo_off_variant: str | None = None
    guarded_ratios: tuple[tuple[str, str], ...] = ()

    @property
    def step_cost(self) -> float:
        """One step's nominal cost in forward passes: forward + 2 x backward."""
        forward, backward = self.step_passes
        return forward + BACKWARD_OVER_FORWARD * backward

    def trained_fraction(self, config: Mapping[str, Any]) -> float:
        """fo_fraction for a method config (a mapping of its fields, the named one
        included): the number, or the config's value of the field fo_fraction names."""
        if isinstance(self.fo_fraction, str):
            return float(config[self.fo_fraction])
        return float(self.fo_fraction)


def method_traits(cls: type) -> MethodTraits:
    """The MethodTraits a method class declares (defaults where it declares none)."""
    default = MethodTraits()
    passes = tuple(float(x) for x in getattr(cls, "step_passes", default.step_passes))
    if len(passes) != 2 or min(passes) < 0:
        raise ValueError(
            f"{cls.__name__}.step_passes must be (forward, backward) >= 0, got {passes}"
        )
    if not getattr(cls, "trains", True):
        passes = (0.0, 0.0)
    fraction = getattr(cls, "fo_fraction", default.fo_fraction)
    if isinstance(fraction, str):
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        if fraction not in fields:
            raise ValueError(f"{cls.__name__}.fo_fraction names no config field: {fraction!r}")
    elif not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"{cls.__name__}.fo_fraction must be in [0, 1], got {fraction}")
    else:
        fraction = float(fraction)
    declared = getattr(cls, "perf_ratios", None) or {}
    perf_ratios = tuple(
        (str(kind), tuple((str(d), float(limit)) for d, limit in dict(targets).items()))
        for kind, targets in dict(declared).items()
    )
    return MethodTraits(
        step_passes=passes,  # type: ignore[arg-type]
        is_reference=bool(getattr(cls, "is_reference", default.is_reference)),
        display_order=int(getattr(cls, "display_order", default.display_order)),
        fo_fraction=fraction,
        perf_ratios=perf_ratios,
        is_hybrid=bool(getattr(cls, "is_hybrid", default.is_hybrid)),
        zo_off_variant=getattr(cls, "zo_off_variant", default.zo_off_variant),
        guarded_ratios=tuple(
            (str(ratio), str(kind))
            for ratio, kind in getattr(cls, "guarded_ratios", default.guarded_ratios)
        ),
    )


REQUIRED_ATTRIBUTES = (
    "config_class",
    "trains",
    "setup",
    "step",
    "trainable_parameters",
    "state_dict",
    "summary",
)
