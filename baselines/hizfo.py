"""`hizfo`: the adapter that makes hizfo.HiZFO a bench method.

Lives in baselines/ so that hizfo/ stays a torch-only library that imports nothing from bench.

The optimizer itself (hizfo/optimizer.py) knows nothing about the bench; this file only
feeds it batches: profiling batches from ctx.sample_batches (never the batches of
step()), and a closure over ctx.loss_fn for each training step. The config is
HiZFOConfig itself, so every field documented there (and any field added there later)
is a setting of this method.

Passes per step (StepStats): the hybrid step's own (1 forward + 1 backward when the FO
set is non-empty, plus 2 q SPSA forwards when the ZO set is), plus, on a step that
re-profiles first, one forward and one backward per profiling batch. The first profiling
runs in setup() and is counted in summary()["setup_passes"] instead (the trial times it
as setup_seconds).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from bench.method import Batch, StepStats, TrainContext
from hizfo.optimizer import HiZFO, HiZFOConfig

# Enough digits to rank and plot the scores; keeps a trial file with 272 tensors per
# profiling small.
_SCORE_DIGITS = 4


def _round(x: float) -> float:
    return float(f"{x:.{_SCORE_DIGITS}g}")


class HiZFOMethod:
    """Hi-ZFO in the trial loop: profile in setup(), re-profile when due, hybrid steps."""

    config_class: ClassVar[type] = HiZFOConfig
    trains: ClassVar[bool] = True
    # Method traits (bench.method.MethodTraits): one FO forward and two SPSA forwards per
    # step (q = 1), and a backward that stops at the deepest FO tensor, about rho (0.5) of
    # a full one.
    step_passes: ClassVar[tuple[float, float]] = (3.0, 0.5)
    display_order: ClassVar[int] = 40
    # The FO set is rho of the parameters (gradient + AdamW moments); perf: the step
    # against the reference's (no target: its floor is about (2 + 2 rho) / 3) and
    # against its own floor (docs/performance.md).
    fo_fraction: ClassVar[str] = "rho"
    perf_ratios: ClassVar[dict[str, dict[str, float]]] = {
        "step_over_fo_step": {},
        "step_over_own_floor": {"any": 1.1},
        "step_over_default": {},
    }
    # The hybrid claims.md tests (against the reference, and against its zo-off variant
    # for the stochasticity claim); compare guards its step against the FO step.
    is_hybrid: ClassVar[bool] = True
    zo_off_variant: ClassVar[str | None] = "zo-off"
    guarded_ratios: ClassVar[tuple[tuple[str, str], ...]] = (
        ("step_over_fo_step", "time"),
        ("ops_over_floor_ops", "ops"),
    )
    # `hizfo-bench perf` rows (bench/perf.py): the plain step at rho 0.5, with the shared
    # forward, and with the one-sided estimator (L(theta) from the FO forward).
    perf_variants: ClassVar[dict[str, dict[str, Any]]] = {
        "": {"rho": 0.5},
        "shared_forward": {"rho": 0.5, "shared_forward": True},
        "one_sided": {"rho": 0.5, "zo_estimator": "one-sided"},
    }

    def __init__(self, config: HiZFOConfig) -> None:
        self.config = config
        self.setup_passes = {"forward": 0, "backward": 0}

    def setup(self, model: torch.nn.Module, ctx: TrainContext) -> torch.nn.Module:
        self.model, self.ctx = model, ctx
        # Dropout off: the two SPSA forwards must see the same function (as in MeZO), and
        # the FO forward shares the batch with them.
        model.eval()
        self.hizfo = HiZFO(model, self.config, seed=ctx.seed, total_steps=ctx.total_steps)
        forward, backward = self._profile(step=0)
        self.setup_passes = {"forward": forward, "backward": backward}
        return model

    def _profile(self, step: int) -> tuple[int, int]:
        """Profile on fresh batches; returns the (forward, backward) passes it ran."""
        if self.config.rho in (0.0, 1.0):
            # Nothing or everything is FO: the selection cannot depend on importance, so
            # HiZFO profiles nothing; draw no batches.
            self.hizfo.profile([], step=step)
            return 0, 0
        batches = self.ctx.sample_batches(self.config.profile_batches)
        if not batches:
            raise ValueError(
                "hizfo: the trial context gave no profiling batches "
                "(TrainContext.sample_batches returned an empty list)"
            )
        loss_fn, model = self.ctx.loss_fn, self.model
        self.hizfo.profile([lambda b=b: loss_fn(model, b) for b in batches], step=step)
        n = min(len(batches), self.config.profile_batches)
        return n, n

    def step(self, batch: Batch, step: int) -> StepStats:
        forward = backward = 0
        if self.hizfo.profile_due:
            forward, backward = self._profile(step=step)
        result = self.hizfo.step(lambda: self.ctx.loss_fn(self.model, batch))
        return StepStats(
            loss=result.loss,
            forward_passes=forward + result.forward_passes,
            backward_passes=backward + result.backward_passes,
            extra={
                "fo_tensors": float(len(self.hizfo.fo_names)),
                "backward_depth": result.backward_depth,  # share of a full backward
                "z_draws": float(result.z_draws),  # passes over the ZO weights drawing z
                # First-order loss decrease each part's update predicts on this batch
                # (hizfo.optimizer.HiZFOStepResult; docs/hizfo.md).
                "zo_gain": result.zo_gain,
                "fo_gain": result.fo_gain,
                **({"projected_grad": result.projected_grads[0]} if result.projected_grads else {}),
            },
        )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        params = dict(self.model.named_parameters())
        return [params[n] for n in self.hizfo.fo_names + self.hizfo.zo_names]

    def state_dict(self) -> dict[str, Any]:
        return self.hizfo.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from state_dict() after setup() (bench/train/checkpoint.py)."""
        self.hizfo.load_state_dict(state)

    def summary(self) -> dict[str, Any]:
        numel = {n: p.numel() for n, p in self.model.named_parameters()}
        profiles = [
            {
                "step": h["step"],
                "fo": list(h["fo"]),
                "fo_tensors": len(h["fo"]),
                "fo_parameters": sum(numel[n] for n in h["fo"]),
                "importance": {n: _round(s) for n, s in h["importance"].items()},
                # An ablation's profile: the real ("dp") set's size and the overlap.
                **({"reference": dict(h["reference"])} if "reference" in h else {}),
            }
            for h in self.hizfo.history
        ]
        fo, zo = self.hizfo.fo_numel, self.hizfo.zo_numel
        last = self.hizfo.history[-1] if self.hizfo.history else {}
        return {
            "trainable_parameters": fo + zo,
            "fo_parameters": fo,
            "zo_parameters": zo,
            "fo_tensors": len(self.hizfo.fo_names),
            "zo_tensors": len(self.hizfo.zo_names),
            "selection": self.config.selection,
            # Ablations (selection random, random-greedy, reverse), latest profile: the
            # real selection's FO set from the same scores and its overlap with this one.
            **{
                f"reference_{k}" if k.startswith("fo_") else k: v
                for k, v in last.get("reference", {}).items()
            },
            "profiles": profiles,
            "setup_passes": dict(self.setup_passes),
            "config": dataclasses.asdict(self.config),
        }
