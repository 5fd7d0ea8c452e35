"""Hi-ZFO: exact first-order updates on the important tensors, seeded SPSA on the rest.

Hi-ZFO (Jin and Tan, Findings of ACL 2026, arXiv 2601.05501) is known to us only from
its abstract and second-hand reports; this is our documented reconstruction (docs/hizfo.md). One training step:

1. FO: forward and backward on the batch. Only the FO tensors have requires_grad, so
   autograd builds no graph below the deepest of them and keeps no gradient for the rest.
   FO gradients are clipped.
2. ZO: an SPSA step (MeZO's seed trick, hizfo.zo) on the ZO tensors, at the same FO
   parameter values, with a seed derived from (seed, step): two-sided by default; the
   one-sided estimator takes L(theta) from the FO forward, so it costs one forward;
   "gv" and "greedy" (MeZO-GV, MeZO-Greedy: hizfo.zo.GuidedSPSA) score a pool of
   perturbations first and step along their contrast or the best of them.
3. AdamW step on the FO tensors (hizfo.adamw, with its LR schedule); gradients freed.

The FO set comes from profile(): per-tensor importance on a few batches, then a selection
under the backward-cost budget rho (hizfo.selection). With rho = 1 this is AdamW on the
whole model; with rho = 0 it is MeZO.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import torch

from hizfo.adamw import AdamWConfig, build_adamw, clip_gradients, set_lr
from hizfo.importance import StepModel, check_importance_method, profile_importance
from hizfo.schedule import check_schedule, scheduled_lr
from hizfo.selection import (
    ABLATIONS,
    STRATEGIES,
    ForwardTrace,
    TensorCost,
    full_cost,
    select_fo_tensors,
    selection_cost,
    tensor_costs,
    trace_forward,
)
from hizfo.zo import (
    DEFAULT_BUCKETS,
    DISTRIBUTIONS,
    GUIDED_ESTIMATORS,
    SPSA,
    STREAMS,
    ZO_ESTIMATORS,
    GuidedConfig,
    GuidedSPSA,
    SPSAConfig,
    derive_seed,
    launch_bound,
    single_intra_op_thread,
)


@dataclass
class HiZFOConfig:
    """Settings of Hi-ZFO. Defaults are our reconstruction (docs/hizfo.md) unless a
    source is named.

    Attributes:
        rho: FO budget, the fraction of the full backward cost the FO set may use (the
            paper's rho, reported to hurt when set too high; hizfo.selection's cost model,
            a share of backward work only). 0.5 is our choice. At 0 and 1 the selection
            cannot depend on the scores, so profile() runs no profiling pass.
        selection: "dp" (importance maximised under the budget by dynamic programming,
            as reported for Hi-ZFO and done by GreenTrainer) or "topk" (take tensors by
            decreasing importance while they fit). Ablations (hizfo.selection.ABLATIONS),
            same budget: "random" (the same DP on random scores, so an FO set of a
            comparable size), "reverse" (the same DP, least important first) and
            "random-greedy" (a random order packed greedily: much smaller sets). With an
            ablation, profile() also computes the "dp" set from the same scores and
            records its size and the overlap (history "reference").
        importance: "greentrainer" (GreenTrainer's -sum(g * dw) with dw the live AdamW
            step, sign kept: the default, as it is the cited method and equals the old
            score on a first profile without decay), "taylor-l1" (alias "taylor": the
            unsigned fresh-step score ~ fo_lr * ||g||_1), "grad_norm" or "fisher"; see
            hizfo.importance.
        profile_batches: profiling batches whose scores are averaged; profile() uses at
            most this many of the closures it gets. 4 is our choice (GreenTrainer
            profiles on one batch).
        reprofile_every: re-profile every R steps (the reports' r), 0 = profile once.
            GreenTrainer re-selects every 2 epochs. The training loop calls profile() when
            HiZFO.profile_due says so.
        fo_lr: peak AdamW learning rate on FO tensors (1e-5, a usual full fine-tuning
            LR); also the step size in the "greentrainer" and "taylor-l1" scores.
        fo_weight_decay: AdamW weight decay on FO tensors, not applied to biases and norm
            weights (as in the Hugging Face Trainer and MeZO).
        fo_betas: AdamW betas (torch defaults).
        fo_eps: AdamW's denominator term (torch default 1e-8), as fo-adamw's ``eps``, so
            rho = 1 equals fo-adamw at any eps.
        fo_schedule: LR schedule of the FO part, "constant" (default, the behaviour before
            schedules existed), "linear" or "cosine" (hizfo.schedule.lr_multiplier, the
            schedule of every method; these need HiZFO(total_steps=...)).
        fo_warmup_steps: linear warmup steps of the FO LR (0: none).
        zo_lr: peak SPSA learning rate (1e-6, MeZO's full-parameter LR for OPT-13B).
        zo_schedule: LR schedule of the ZO part, "constant" (default, MeZO's), "linear" or
            "cosine", the same function as fo_schedule and as mezo's ``schedule``, so rho =
            0 equals mezo with any schedule.
        zo_warmup_steps: linear warmup steps of the ZO LR (0: none), as mezo's
            ``warmup_steps``.
        zo_eps: SPSA perturbation scale (1e-3, MeZO).
        zo_q: SPSA directions per step (1, MeZO).
        zo_weight_decay: MeZO-style decay on ZO tensors (0, MeZO's scripts).
        zo_estimator: "two-sided" (default, MeZO: 2 forwards per direction, bias
            O(eps^2)) or "one-sided" ((L(theta + eps z) - L(theta)) / eps with L(theta)
            the FO forward's loss, taken at the unperturbed point: 1 forward per
            direction, bias O(eps); docs/hizfo.md). With no FO set L(theta) costs one
            forward of its own. "gv" (MeZO-GV) or "greedy" (MeZO-Greedy; Jin, Cen and
            Tan, arXiv 2601.04710; hizfo.zo.GuidedSPSA): score zo_candidates seeded
            perturbations of the ZO tensors by L(theta + eps z_i) (one forward each), then
            MeZO's two-point step along the elite-minus-rest contrast (gv) or the best
            candidate (greedy): zo_candidates + 2 forwards (2 when zo_candidates is 1,
            which is the two-sided step exactly). They need zo_q = 1; shared_forward has
            no effect with them. With rho = 0 each equals the mezo-gv / mezo-greedy
            plugin with the same settings and seed.
        zo_candidates: the pool M of "gv" and "greedy" (4, the plugins' default; ours).
        zo_elite_fraction: "gv"'s elite share alpha, floor(alpha M) candidates, at least
            one (0.5, the authors' code).
        zo_normalize_direction: "gv": scale the guiding vector to unit per-entry variance
            (False, the authors' code).
        zo_keep_z: keep z in memory during a step (hizfo.zo.SPSA keep_z: one draw instead
            of three, one more copy of the ZO weights). False, the seed trick.
        zo_distribution: "gaussian" (MeZO) or "rademacher" (+-1 entries, cheaper draws).
        zo_stream: how z is cut into generator calls (hizfo.zo.SPSA stream, as mezo's
            ``z_stream``): "tensor" (default, per tensor; fused on a CPU where the
            numbers stay the same) or "bucket" (one draw per bucket: fewer CUDA
            launches, another z).
        max_grad_norm: clip the FO gradients' global norm to this; None = no clipping
            (1.0, the Hugging Face Trainer default).
        fo_implementation: how the FO AdamW walks its tensors (hizfo.adamw.AdamWConfig
            implementation, as fo-adamw's ``implementation``): "auto" (BucketedAdamW,
            torch's foreach arithmetic bucket by bucket: the loop's floats on a CPU),
            "loop", "foreach" or "fused" (torch's own).
        shared_forward: two-sided only: let the FO pass double as SPSA's "+" probe,
            saving one forward per step (False, the plain step above, is our default). The
            ZO tensors are moved to theta + eps z first, the FO forward and backward run
            there, and that loss is L+; then L- at theta - eps z, restore and update as
            usual. The cost: the FO gradient (and the reported loss) are taken at a point
            whose ZO tensors are off by eps z, a perturbation of norm about
            eps * sqrt(d_ZO) (0.3 for eps = 1e-3 and 1e8 ZO parameters), so the FO
            update sees a slightly biased gradient; with q > 1 only the first direction
            shares. No effect when the FO or the ZO set is empty, nor with the one-sided
            estimator, which always shares the FO forward (as L(theta), unbiased for FO).
        zo_enabled: give the ZO tensors SPSA updates (True). False is the ``zo-off``
            ablation: the same FO set trains with AdamW and every other tensor stays
            frozen (partial fine-tuning), so Hi-ZFO minus zo-off is what the ZO part adds.
    """

    rho: float = 0.5
    selection: str = "dp"
    importance: str = "greentrainer"
    profile_batches: int = 4
    reprofile_every: int = 0
    fo_lr: float = 1e-5
    fo_weight_decay: float = 0.0
    fo_betas: tuple[float, float] = (0.9, 0.999)
    fo_eps: float = 1e-8
    fo_schedule: str = "constant"
    fo_warmup_steps: int = 0
    zo_lr: float = 1e-6
    zo_schedule: str = "constant"
    zo_warmup_steps: int = 0
    zo_eps: float = 1e-3
    zo_q: int = 1
    zo_weight_decay: float = 0.0
    zo_estimator: str = "two-sided"
    zo_candidates: int = 4
    zo_elite_fraction: float = 0.5
    zo_normalize_direction: bool = False
    zo_keep_z: bool = False
    zo_distribution: str = "gaussian"
    zo_stream: str = field(
        default="tensor", metadata={"id": "when_set"}
    )  # added after trial ids existed: hashed only when set (bench.spec)
    max_grad_norm: float | None = 1.0
    fo_implementation: str = field(
        default="auto", metadata={"id": "when_set"}
    )  # added after trial ids existed: hashed only when set (bench.spec)
    shared_forward: bool = False
    zo_enabled: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.rho <= 1.0:
            raise ValueError(f"HiZFOConfig.rho must be in [0, 1], got {self.rho}")
        if self.selection not in STRATEGIES:
            raise ValueError(
                f"HiZFOConfig.selection must be one of {', '.join(STRATEGIES)}, "
                f"got {self.selection!r}"
            )
        check_importance_method(self.importance)
        if self.profile_batches < 1:
            raise ValueError("HiZFOConfig.profile_batches must be >= 1")
        if self.reprofile_every < 0:
            raise ValueError("HiZFOConfig.reprofile_every must be >= 0")
        check_schedule(self.fo_schedule, self.fo_warmup_steps, owner="HiZFOConfig.fo_schedule")
        check_schedule(self.zo_schedule, self.zo_warmup_steps, owner="HiZFOConfig.zo_schedule")
        if self.zo_estimator not in ZO_ESTIMATORS:
            raise ValueError(
                f"HiZFOConfig.zo_estimator must be one of {', '.join(ZO_ESTIMATORS)}, "
                f"got {self.zo_estimator!r}"
            )
        if self.zo_estimator in GUIDED_ESTIMATORS and self.zo_q != 1:
            raise ValueError(
                f"HiZFOConfig.zo_estimator={self.zo_estimator!r} takes one direction per "
                f"step: zo_q must be 1, got {self.zo_q}"
            )
        if self.zo_distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"HiZFOConfig.zo_distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                f"got {self.zo_distribution!r}"
            )
        if self.zo_stream not in STREAMS:
            raise ValueError(
                f"HiZFOConfig.zo_stream must be one of {', '.join(STREAMS)}, got {self.zo_stream!r}"
            )
        self.fo_betas = tuple(self.fo_betas)  # YAML gives lists
        # Fail early on a bad lr, warmup, clipping, eps, q or weight decay.
        self.adamw_config()
        SPSAConfig(eps=self.zo_eps, q=self.zo_q, weight_decay=self.zo_weight_decay)
        self.guided_config()  # zo_candidates, zo_elite_fraction

    @property
    def guided(self) -> bool:
        """True when the ZO part is MeZO-GV or MeZO-Greedy."""
        return self.zo_estimator in GUIDED_ESTIMATORS

    def guided_config(self) -> GuidedConfig:
        """The ZO part's pool settings as hizfo.zo.GuidedConfig ("gv" unless "greedy")."""
        return GuidedConfig(
            method="greedy" if self.zo_estimator == "greedy" else "gv",
            candidates=self.zo_candidates,
            elite_fraction=self.zo_elite_fraction,
            normalize=self.zo_normalize_direction,
        )

    def adamw_config(self) -> AdamWConfig:
        """The FO part's settings as the shared hizfo.adamw.AdamWConfig."""
        return AdamWConfig(
            lr=self.fo_lr,
            betas=self.fo_betas,
            eps=self.fo_eps,
            weight_decay=self.fo_weight_decay,
            schedule=self.fo_schedule,
            warmup_steps=self.fo_warmup_steps,
            max_grad_norm=self.max_grad_norm,
            implementation=self.fo_implementation,
        )


@dataclass
class HiZFOStepResult:
    """What one Hi-ZFO step did.

    Attributes:
        loss: the FO forward's loss when the FO set is not empty (the loss at the
            parameters before the step; with shared_forward, at those parameters with
            the ZO tensors moved by +eps z), otherwise the SPSA loss (two-sided: mean of
            (L+ + L-) / 2; one-sided: L(theta)).
        forward_passes: 1 for the FO part (if any) plus the ZO part's (2 q two-sided,
            one fewer with shared_forward when both parts run; q one-sided with an FO
            set, q + 1 without; zo_candidates + 2 with "gv" or "greedy", 2 when
            zo_candidates is 1).
        backward_passes: 1 if the FO set is not empty, else 0.
        projected_grads: the SPSA projected gradients, one per direction; empty when the
            ZO set is.
        backward_depth: the FO backward's cost as a fraction of a full backward
            (hizfo.selection's cost model: selection_cost(FO set) / full_cost); 0 without
            an FO set, 1 when every tensor is FO. Compare methods by forward_passes +
            backward_depth * backward_passes rather than by pass counts alone.
        z_draws: passes over the ZO weights that drew z from the generator (3 for a
            two-sided q = 1 step, 2 one-sided, 1 with zo_keep_z, 0 without a ZO set; 5M
            for "gv" and 2M + 3 for "greedy" with M = zo_candidates > 1).
        zo_gain: the first-order decrease of the batch loss that the ZO update predicts,
            (lr_t / q) * sum_i g_i^2 with lr_t the step's ZO learning rate and g_i the
            projected gradients: the update is -(lr_t / q) sum_i g_i z_i, its first-order
            effect on the loss -(lr_t / q) sum_i g_i (z_i . grad L), and g_i is the
            estimate of z_i . grad L (two-sided: exact up to O(eps^2); one-sided: O(eps)).
            No norm factor enters, since g_i already is the derivative along z_i; weight
            decay is left out. 0 without a ZO update.
        fo_gain: the first-order decrease of the batch loss that the FO update predicts,
            -sum over FO tensors of grad L . delta theta, with grad L the FO gradient before
            clipping and delta theta the update AdamW applied (decay included). 0 without
            an FO set. Both gains are in loss units, so they compare the two parts' pull
            on the same batch (docs/hizfo.md).
    """

    loss: float
    forward_passes: int
    backward_passes: int
    projected_grads: list[float] = field(default_factory=list)
    backward_depth: float = 0.0
    z_draws: int = 0
    zo_gain: float = 0.0
    fo_gain: float = 0.0


class HiZFO:
    """The hybrid optimizer over the parameters of `model`.

    Use: hizfo.profile(closures) once (and again whenever hizfo.profile_due), then
    hizfo.step(closure) per batch. Closures run the forward pass on one batch and return
    the scalar loss; put the model in eval mode (or turn dropout off) so that the SPSA
    forwards see the same function.

    Args:
        model: trained in place.
        config: see HiZFOConfig.
        seed: base of the per-step SPSA seeds.
        names: the parameters to train (default: all of model.named_parameters(), tied
            tensors once). HiZFO owns their requires_grad flags; the others are frozen
            (requires_grad=False, so they neither accumulate a .grad nor lengthen the
            backward) and never updated. Not taken from the current requires_grad
            flags, which a previous HiZFO may have turned off.
        total_steps: the number of training steps, needed by the "linear" and "cosine"
            schedules of either part (None: unknown, only "constant" allowed).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: HiZFOConfig,
        *,
        seed: int = 0,
        names: Collection[str] | None = None,
        total_steps: int | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.seed = seed
        self.total_steps = total_steps
        for key in ("fo_schedule", "zo_schedule"):
            if getattr(config, key) != "constant" and total_steps is None:
                raise ValueError(
                    f"HiZFOConfig.{key}={getattr(config, key)!r} needs HiZFO(total_steps=...)"
                )
        self.adamw_config = config.adamw_config()
        self._params: dict[str, torch.nn.Parameter] = {
            n: p for n, p in model.named_parameters() if names is None or n in names
        }
        if names is not None and set(names) - set(self._params):
            unknown = sorted(set(names) - set(self._params))[:5]
            raise ValueError(f"not parameters of the model: {unknown}")
        trained = {id(p) for p in self._params.values()}
        for p in model.parameters():
            if id(p) not in trained:
                p.requires_grad_(False)
                p.grad = None
        self.trace: ForwardTrace | None = None
        self.fo_names: list[str] = []
        self.zo_names: list[str] = list(self._params)
        self.history: list[dict] = []
        self.num_steps = 0
        self.last_profile_step: int | None = None
        self.optimizer: torch.optim.AdamW | None = None
        self.spsa: SPSA | None = None
        self.guided: GuidedSPSA | None = None  # the ZO part's step with "gv" / "greedy"
        self.backward_depth = 0.0
        self._clip_coef = 1.0  # the last FO backward's clipping factor

    @property
    def fo_numel(self) -> int:
        return sum(self._params[n].numel() for n in self.fo_names)

    @property
    def zo_numel(self) -> int:
        return sum(self._params[n].numel() for n in self.zo_names)

    @property
    def costs(self) -> list[TensorCost]:
        """Backward costs of every tensor of the model: from the traced profiling forward
        once there is one, registration order before (hizfo.selection.tensor_costs)."""
        return tensor_costs(self.model, self.trace)

    @property
    def profile_due(self) -> bool:
        """True before the first profile() and, with reprofile_every = R > 0, once R steps
        have passed since the last one."""
        if self.last_profile_step is None:
            return True
        every = self.config.reprofile_every
        return every > 0 and self.num_steps - self.last_profile_step >= every

    def zo_lr(self, step: int) -> float:
        """The ZO part's learning rate at 0-based `step` (zo_lr on its schedule)."""
        cfg = self.config
        return scheduled_lr(cfg.zo_lr, step, self.total_steps, cfg.zo_schedule, cfg.zo_warmup_steps)

    def zo_seed(self, step: int) -> int:
        """The SPSA seed of step `step` (0-based)."""
        return derive_seed(self.seed, step)

    def profile(
        self, loss_closures: Sequence[Callable[[], torch.Tensor]], *, step: int | None = None
    ) -> None:
        """Score the tensors, choose the FO set and rebuild both optimizers.

        Uses the first config.profile_batches closures; the first one's forward is also
        traced for the cost model's execution order. AdamW state is kept for tensors
        that stay FO; tensors leaving the FO set lose theirs. With rho = 0 or 1 the
        choice cannot depend on the scores, so no closure is run. `step` (default:
        steps taken so far) is recorded in history.
        """
        cfg = self.config
        step = self.num_steps if step is None else step
        importance: dict[str, float] = {}
        reference: dict[str, int] | None = None
        if cfg.rho == 0.0:
            fo: set[str] = set()
        elif cfg.rho == 1.0:
            fo = set(self._params)
        else:
            closures = list(loss_closures)[: cfg.profile_batches]
            if closures:
                first = closures[0]

                def traced() -> torch.Tensor:
                    out: list[torch.Tensor] = []
                    self.trace = trace_forward(self.model, lambda: out.append(first()))
                    return out[0]

                closures[0] = traced
            importance = profile_importance(
                self.model,
                closures,
                method=cfg.importance,
                names=self._params,
                step_model=self._step_model(),
            )
            fo = select_fo_tensors(
                importance,
                self.costs,
                budget=cfg.rho,
                strategy=cfg.selection,
                seed=derive_seed(self.seed, "selection", step),
            )
            fo &= set(self._params)
            if cfg.selection in ABLATIONS:
                real = select_fo_tensors(importance, self.costs, budget=cfg.rho) & set(self._params)
                reference = self._reference_stats(fo, real)
        self._set_fo(fo)
        self.last_profile_step = step
        entry = {
            "step": step,
            "importance": importance,
            "fo": sorted(fo),
            "backward_depth": self.backward_depth,
        }
        if reference is not None:
            entry["reference"] = reference
        self.history.append(entry)

    def _reference_stats(self, fo: set[str], real: set[str]) -> dict[str, int]:
        """Sizes of the real ("dp") FO set and of its overlap with `fo`."""
        numel = {n: p.numel() for n, p in self._params.items()}
        return {
            "fo_tensors": len(real),
            "fo_parameters": sum(numel[n] for n in real),
            "overlap_tensors": len(fo & real),
            "overlap_parameters": sum(numel[n] for n in fo & real),
        }

    def _step_model(self) -> StepModel:
        """The step the live AdamW would take next, for the "greentrainer" score."""
        cfg = self.adamw_config
        state: dict[str, dict] = {}
        if self.optimizer is not None:
            for name in self.fo_names:
                s = self.optimizer.state.get(self._params[name])
                if s:
                    state[name] = s
        lr = scheduled_lr(cfg.lr, self.num_steps, self.total_steps, cfg.schedule, cfg.warmup_steps)
        return StepModel(
            lr=lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, state=state
        )

    def _depth(self, fo: set[str]) -> float:
        if not fo:
            return 0.0
        if len({id(p) for p in self._params.values()}) == len(
            {id(p) for p in self.model.parameters()}
        ) and fo == set(self._params):
            return 1.0
        costs = self.costs
        total = full_cost(costs)
        return selection_cost(fo, costs) / total if total > 0 else 0.0

    def _set_fo(self, fo: set[str]) -> None:
        """Make `fo` the FO set: flags, AdamW (carrying state over) and the SPSA."""
        cfg = self.config
        self.fo_names = [n for n in self._params if n in fo]
        self.zo_names = [n for n in self._params if n not in fo]
        self.backward_depth = self._depth(set(self.fo_names))
        for name, p in self._params.items():
            p.requires_grad_(name in fo)
            if name not in fo:
                p.grad = None

        old = self.optimizer
        if self.fo_names:
            self.optimizer = build_adamw(
                [(n, self._params[n]) for n in self.fo_names], self.adamw_config
            )
            if old is not None:
                for name in self.fo_names:
                    p = self._params[name]
                    if p in old.state:
                        self.optimizer.state[p] = old.state[p]
        else:
            self.optimizer = None

        if self.zo_names and not cfg.zo_enabled:
            # The zo-off ablation: ZO tensors stay frozen, only the FO set trains.
            self.spsa = None
        elif self.zo_names:
            self.spsa = SPSA(
                [(n, self._params[n]) for n in self.zo_names],
                SPSAConfig(
                    eps=cfg.zo_eps,
                    q=cfg.zo_q,
                    weight_decay=cfg.zo_weight_decay,
                    # MeZO-GV and MeZO-Greedy step with the two-point estimate.
                    estimator="two-sided" if cfg.guided else cfg.zo_estimator,
                ),
                keep_z=cfg.zo_keep_z,
                distribution=cfg.zo_distribution,
                stream=cfg.zo_stream,
            )
        else:
            self.spsa = None
        self.guided = (
            GuidedSPSA(self.spsa, cfg.guided_config())
            if self.spsa is not None and cfg.guided
            else None
        )

    def step(self, closure: Callable[[], torch.Tensor]) -> HiZFOStepResult:
        """One Hi-ZFO step on the batch `closure` evaluates (it must not call backward)."""
        if self.last_profile_step is None:
            raise RuntimeError("HiZFO.step() called before profile(): profile the model first")
        cfg = self.config
        forward_passes = backward_passes = z_draws = 0
        loss: float | None = None
        grads: list[float] = []
        seed = self.zo_seed(self.num_steps)
        zo_lr = self.zo_lr(self.num_steps)
        one_sided = cfg.zo_estimator == "one-sided"
        if (
            cfg.shared_forward
            and not one_sided
            and self.guided is None
            and self.optimizer is not None
            and self.spsa is not None
        ):
            draws = self.spsa.draws
            loss, grads = self._shared_fo_zo(closure, seed)
            forward_passes, backward_passes = 2 * cfg.zo_q, 1
            z_draws = self.spsa.draws - draws
        else:
            if self.optimizer is not None:
                loss = self._fo_backward(closure)
                forward_passes += 1
                backward_passes += 1
            if self.guided is not None:
                # MeZO-GV / MeZO-Greedy on the ZO tensors, at the pre-update FO values.
                guided = self.guided.step(closure, lr=zo_lr, seed=seed)
                forward_passes += guided.forward_passes
                grads = guided.projected_grads
                z_draws = guided.z_draws
                if loss is None:
                    loss = guided.loss
            elif self.spsa is not None:
                # One-sided: the FO forward ran at theta itself, so its loss is L(theta).
                result = self.spsa.step(
                    closure,
                    lr=zo_lr,
                    seed=seed,
                    **({"loss_at_theta": loss} if one_sided else {}),
                )
                forward_passes += result.forward_passes
                grads = result.projected_grads
                z_draws = result.z_draws
                if loss is None:
                    loss = result.loss
        fo_gain = 0.0
        if self.optimizer is not None:
            set_lr(self.optimizer, self.adamw_config, self.num_steps, self.total_steps)
            fo_params = [self._params[n] for n in self.fo_names]
            before = _grad_dot(fo_params)
            self.optimizer.step()
            # sum g . (theta_new - theta_old) over the clipped g, back to the raw gradient.
            fo_gain = -(_grad_dot(fo_params) - before) / self._clip_coef
            self.optimizer.zero_grad(set_to_none=True)
        self.num_steps += 1
        return HiZFOStepResult(
            loss=float("nan") if loss is None else loss,
            forward_passes=forward_passes,
            backward_passes=backward_passes,
            projected_grads=grads,
            backward_depth=self.backward_depth if backward_passes else 0.0,
            z_draws=z_draws,
            zo_gain=zo_lr * sum(g * g for g in grads) / len(grads) if grads else 0.0,
            fo_gain=fo_gain,
        )

    def _shared_fo_zo(
        self, closure: Callable[[], torch.Tensor], seed: int
    ) -> tuple[float, list[float]]:
        """FO backward at theta_ZO + eps z_0, whose loss is also L+ of direction 0; then
        the rest of the SPSA step in SPSA.step's order. Returns (FO loss, projected grads).
        The AdamW step is left to the caller, so the ZO probes see pre-update FO tensors."""
        spsa = self.spsa
        assert spsa is not None
        q, eps, lr = self.config.zo_q, self.config.zo_eps, self.zo_lr(self.num_steps)
        seeds = [spsa.perturbation_seed(seed, i) for i in range(q)]
        spsa.perturb_(seeds[0], 1.0)
        fo_loss = self._fo_backward(closure)
        loss_plus = fo_loss
        grads: list[float] = []
        with torch.no_grad():
            for i, s in enumerate(seeds):
                if i > 0:
                    spsa.perturb_(seeds[i - 1], 1.0)  # back to theta before the next probe
                    spsa.perturb_(s, 1.0)
                    loss_plus = float(closure())
                spsa.perturb_(s, -2.0)
                grads.append((loss_plus - float(closure())) / (2 * eps))
        # As in SPSA.step: the last direction's restore is fused with its update (and the
        # decay); the others are already restored.
        spsa._update(seeds, grads, lr, restore_scale=1.0)
        return fo_loss, grads

    def _fo_backward(self, closure: Callable[[], torch.Tensor]) -> float:
        """Forward and backward with grad on the FO tensors only; clip their grads."""
        with torch.enable_grad():
            loss = closure()
            loss.backward()
        norm = clip_gradients([self._params[n] for n in self.fo_names], self.adamw_config)
        # The factor clip_grad_norm_ scaled the gradients by (1 when clipping is off).
        max_norm = self.adamw_config.max_grad_norm
        self._clip_coef = 1.0 if norm is None else min(1.0, max_norm / (norm + 1e-6))
        return float(loss.detach())

    def state_dict(self) -> dict:
        """Everything needed to resume: FO set, AdamW state, step count, seed, history."""
        return {
            "seed": self.seed,
            "num_steps": self.num_steps,
            "last_profile_step": self.last_profile_step,
            "fo_names": list(self.fo_names),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "history": list(self.history),
            "backward_depth": self.backward_depth,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict() on a model with the same parameter names."""
        unknown = set(state["fo_names"]) - set(self._params)
        if unknown:
            raise ValueError(f"FO tensors not trained by this HiZFO: {sorted(unknown)[:5]}")
        self.seed = state["seed"]
        self.num_steps = state["num_steps"]
        self.last_profile_step = state["last_profile_step"]
        self.history = list(state["history"])
        self.optimizer = None  # no state to carry over from before the load
        self._set_fo(set(state["fo_names"]))
        if self.optimizer is not None and state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        # The cost model's trace is not saved; keep the depth measured when profiled.
        self.backward_depth = state.get("backward_depth", self.backward_depth)


_DOT_CHUNK = 1 << 20  # elements per upcast partial dot of a low-precision tensor
# Elements per group of float32/float64 tensors in _grad_dot: the products of a group are
# one temporary (16 MiB of float32), so the step's peak barely moves, and a 135M model
# is a few dozen groups.
_DOT_GROUP_NUMEL = 1 << 22


@torch.no_grad()
def _grad_dot(params: Sequence[torch.Tensor]) -> float:
    """sum over params of p.grad . p, summed in float64.

    Taken before and after an optimizer step, the difference is grad . delta theta
    without a copy of the weights, at the cost of reading the gradients and weights
    twice: on the tiny model in float32, fo_gain agrees with a float64 reference to
    1e-3 (tests). On CPUs (hizfo.zo.launch_bound false): one BLAS dot per tensor
    (lower precisions upcast to float32 chunk by chunk), on one intra-op thread (on a
    busy 2-core box, 80 ms instead of 900 ms for 44M parameters); the fastest there
    (0.07 s a Hi-ZFO step on SmolLM2 against 0.29 s grouped). On a GPU or under
    hizfo.zo.launch_plan(): float32 and float64 tensors in groups of at most
    max(_DOT_GROUP_NUMEL, numel / DEFAULT_BUCKETS) elements (a larger tensor is a group
    of its own), one
    torch._foreach_mul of a group's gradients and weights, one torch._chunk_cat of the
    products and one float64 sum, so the gain costs O(groups) operator calls, not
    O(tensors); the products are rounded as a float32 dot's are and summed in float64."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    if not launch_bound(p.device for p in params):
        with single_intra_op_thread():
            return float(torch.stack([d for p in params for d in _dots(p.grad, p)]).sum())
    sums: list[torch.Tensor] = []
    group: list[tuple[torch.Tensor, torch.Tensor]] = []
    size = 0
    # At most about DEFAULT_BUCKETS groups, whatever the model's size.
    limit = max(_DOT_GROUP_NUMEL, -(-sum(p.numel() for p in params) // DEFAULT_BUCKETS))
    for p in params:
        g, w = p.grad, p  # no_grad: no graph, and no detach per tensor
        if g.dtype not in (torch.float32, torch.float64):
            sums.extend(_dots(g, w))
            continue
        if group and (size + g.numel() > limit or g.device != group[0][0].device):
            sums.append(_group_dot(group))
            group, size = [], 0
        group.append((g, w))
        size += g.numel()
    if group:
        sums.append(_group_dot(group))
    return float(torch.stack([s.to(sums[0].device) for s in sums]).sum())


def _dots(g: torch.Tensor, w: torch.Tensor) -> list[torch.Tensor]:
    """g . w as float64 scalars: one dot, or chunked upcast dots at lower precision."""
    g, w = g.reshape(-1), w.reshape(-1)
    if g.dtype in (torch.float32, torch.float64):
        return [torch.dot(g, w).double()]
    return _upcast_dots(g, w)


def _group_dot(group: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """sum_i g_i . w_i over a group of same-device tensors, as a float64 scalar."""
    products = torch._foreach_mul([g for g, _ in group], [w for _, w in group])
    # torch._chunk_cat with one chunk per tensor: the products flattened and concatenated
    # in one call (torch.cat of each reshaped to 1-D costs a view per tensor).
    flat = (
        torch._chunk_cat(products, 0, 1)
        if hasattr(torch, "_chunk_cat")
        else torch.cat([x.reshape(-1) for x in products])
    )
    return flat.sum(dtype=torch.float64)


def _upcast_dots(g: torch.Tensor, w: torch.Tensor) -> list[torch.Tensor]:
    """Dots of a low-precision pair, upcast to float32 chunk by chunk, as float64."""
    return [
        torch.dot(g[a : a + _DOT_CHUNK].float(), w[a : a + _DOT_CHUNK].float()).double()
        for a in range(0, g.numel(), _DOT_CHUNK)
    ]
