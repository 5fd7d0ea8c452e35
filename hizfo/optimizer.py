"""Hi-ZFO: exact first-order updates on the important tensors, seeded SPSA on the rest.

Hi-ZFO (Jin and Tan, Findings of ACL 2026, arXiv 2601.05501) is known to us only from
its abstract and second-hand reports; this is our documented reconstruction (DESIGN.md
section 5). One training step:

1. FO: forward and backward on the batch. Only the FO tensors have requires_grad, so
   autograd builds no graph below the deepest of them and keeps no gradient for the rest.
   FO gradients are clipped.
2. ZO: a two-point SPSA step (MeZO's seed trick, hizfo.zo) on the ZO tensors, at the same
   FO parameter values, with a seed derived from (seed, step).
3. AdamW step on the FO tensors; their gradients are freed.

The FO set comes from profile(): per-tensor importance on a few batches, then a selection
under the backward-cost budget rho (hizfo.selection). With rho = 1 this is AdamW on the
whole model; with rho = 0 it is MeZO.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import torch

from hizfo.importance import check_importance_method, profile_importance
from hizfo.selection import STRATEGIES, select_fo_tensors, tensor_costs
from hizfo.zo import SPSA, SPSAConfig, SPSAStepResult, default_no_decay, derive_seed


@dataclass
class HiZFOConfig:
    """Settings of Hi-ZFO. Defaults are our reconstruction (DESIGN.md section 5) unless
    a source is named.

    Attributes:
        rho: FO budget, the fraction of the full backward cost the FO set may use (the
            paper's rho, reported to hurt when set too high). 0.5 is our choice.
        selection: "dp" (importance maximised under the budget by dynamic programming,
            as reported for Hi-ZFO and done by GreenTrainer) or "topk" (take tensors by
            decreasing importance while they fit).
        importance: "taylor" (GreenTrainer's |sum(g * dw)|), "grad_norm" or "fisher"; see
            hizfo.importance.
        profile_batches: profiling batches whose scores are averaged; profile() uses at
            most this many of the closures it gets. 4 is our choice (GreenTrainer
            profiles on one batch).
        reprofile_every: re-profile every R steps (the reports' r), 0 = profile once.
            GreenTrainer re-selects every 2 epochs. The training loop calls profile() when
            HiZFO.profile_due says so.
        fo_lr: AdamW learning rate on FO tensors (1e-5, a usual full fine-tuning LR);
            also scales the "taylor" score.
        fo_weight_decay: AdamW weight decay on FO tensors, not applied to biases and norm
            weights (as in the Hugging Face Trainer and MeZO).
        fo_betas: AdamW betas (torch defaults).
        zo_lr: SPSA learning rate (1e-6, MeZO's full-parameter LR for OPT-13B).
        zo_eps: SPSA perturbation scale (1e-3, MeZO).
        zo_q: SPSA directions per step (1, MeZO).
        zo_weight_decay: MeZO-style decay on ZO tensors (0, MeZO's scripts).
        max_grad_norm: clip the FO gradients' global norm to this; None = no clipping
            (1.0, the Hugging Face Trainer default).
        shared_forward: let the FO pass double as SPSA's "+" probe, saving one forward
            per step (False, the plain step above, is our default). The ZO tensors are
            moved to theta + eps z first, the FO forward and backward run there, and that
            loss is L+; then L- at theta - eps z, restore and update as usual. The cost:
            the FO gradient (and the reported loss) are taken at a point whose ZO tensors
            are off by eps z, a perturbation of norm about eps * sqrt(d_ZO) (0.3 for
            eps = 1e-3 and 1e8 ZO parameters), so the FO update sees a slightly biased
            gradient; with q > 1 only the first direction shares. No effect when the FO
            or the ZO set is empty.
    """

    rho: float = 0.5
    selection: str = "dp"
    importance: str = "taylor"
    profile_batches: int = 4
    reprofile_every: int = 0
    fo_lr: float = 1e-5
    fo_weight_decay: float = 0.0
    fo_betas: tuple[float, float] = (0.9, 0.999)
    zo_lr: float = 1e-6
    zo_eps: float = 1e-3
    zo_q: int = 1
    zo_weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    shared_forward: bool = False

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
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError("HiZFOConfig.max_grad_norm must be > 0 or None")
        self.fo_betas = tuple(self.fo_betas)  # YAML gives lists
        # Fails early on a bad eps, q or weight decay.
        SPSAConfig(eps=self.zo_eps, q=self.zo_q, weight_decay=self.zo_weight_decay)


@dataclass
class HiZFOStepResult:
    """What one Hi-ZFO step did.

    Attributes:
        loss: the FO forward's loss when the FO set is not empty (the loss at the
            parameters before the step; with shared_forward, at those parameters with
            the ZO tensors moved by +eps z), otherwise the SPSA loss, mean of (L+ + L-) / 2.
        forward_passes: 1 for the FO part (if any) plus 2 q for the ZO part (if any),
            one fewer with shared_forward when both parts run.
        backward_passes: 1 if the FO set is not empty, else 0.
        projected_grads: the SPSA projected gradients (L+ - L-) / (2 eps), one per
            direction; empty when the ZO set is.
    """

    loss: float
    forward_passes: int
    backward_passes: int
    projected_grads: list[float] = field(default_factory=list)


class HiZFO:
    """The hybrid optimizer over the parameters of `model`.

    Use: hizfo.profile(closures) once (and again whenever hizfo.profile_due), then
    hizfo.step(closure) per batch. Closures run the forward pass on one batch and return
    the scalar loss; put the model in eval mode (or turn dropout off) so that the two
    SPSA forwards see the same function.

    Args:
        model: trained in place.
        config: see HiZFOConfig.
        seed: base of the per-step SPSA seeds.
        names: the parameters to train (default: all of model.named_parameters(), tied
            tensors once). HiZFO owns their requires_grad flags; the others are left as
            they are and never updated. Not taken from the current requires_grad flags,
            which a previous HiZFO may have turned off.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: HiZFOConfig,
        *,
        seed: int = 0,
        names: Collection[str] | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.seed = seed
        self._params: dict[str, torch.nn.Parameter] = {
            n: p for n, p in model.named_parameters() if names is None or n in names
        }
        if names is not None and set(names) - set(self._params):
            unknown = sorted(set(names) - set(self._params))[:5]
            raise ValueError(f"not parameters of the model: {unknown}")
        self._costs = [c for c in tensor_costs(model) if c.name in self._params]
        self.fo_names: list[str] = []
        self.zo_names: list[str] = list(self._params)
        self.history: list[dict] = []
        self.num_steps = 0
        self.last_profile_step: int | None = None
        self.optimizer: torch.optim.AdamW | None = None
        self.spsa: SPSA | None = None

    @property
    def fo_numel(self) -> int:
        return sum(self._params[n].numel() for n in self.fo_names)

    @property
    def zo_numel(self) -> int:
        return sum(self._params[n].numel() for n in self.zo_names)

    @property
    def profile_due(self) -> bool:
        """True before the first profile() and, with reprofile_every = R > 0, once R steps
        have passed since the last one."""
        if self.last_profile_step is None:
            return True
        every = self.config.reprofile_every
        return every > 0 and self.num_steps - self.last_profile_step >= every

    def zo_seed(self, step: int) -> int:
        """The SPSA seed of step `step` (0-based)."""
        return derive_seed(self.seed, step)

    def profile(
        self, loss_closures: Sequence[Callable[[], torch.Tensor]], *, step: int | None = None
    ) -> None:
        """Score the tensors, choose the FO set and rebuild both optimizers.

        Uses the first config.profile_batches closures. AdamW state is kept for tensors
        that stay FO; tensors leaving the FO set lose theirs. With rho = 0 nothing can be
        selected, so no backward pass is run. `step` (default: steps taken so far) is
        recorded in history.
        """
        cfg = self.config
        step = self.num_steps if step is None else step
        if cfg.rho == 0.0:
            importance: dict[str, float] = {}
        else:
            closures = list(loss_closures)[: cfg.profile_batches]
            importance = profile_importance(
                self.model, closures, method=cfg.importance, lr=cfg.fo_lr, names=self._params
            )
        fo = select_fo_tensors(importance, self._costs, budget=cfg.rho, strategy=cfg.selection)
        self._set_fo(fo)
        self.last_profile_step = step
        self.history.append({"step": step, "importance": importance, "fo": sorted(fo)})

    def _set_fo(self, fo: set[str]) -> None:
        """Make `fo` the FO set: flags, AdamW (carrying state over) and the SPSA."""
        cfg = self.config
        self.fo_names = [n for n in self._params if n in fo]
        self.zo_names = [n for n in self._params if n not in fo]
        for name, p in self._params.items():
            p.requires_grad_(name in fo)
            if name not in fo:
                p.grad = None

        old = self.optimizer
        if self.fo_names:
            decay = [
                self._params[n] for n in self.fo_names if not default_no_decay(n, self._params[n])
            ]
            no_decay = [
                self._params[n] for n in self.fo_names if default_no_decay(n, self._params[n])
            ]
            groups = [
                {"params": decay, "weight_decay": cfg.fo_weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ]
            self.optimizer = torch.optim.AdamW(
                [g for g in groups if g["params"]], lr=cfg.fo_lr, betas=cfg.fo_betas
            )
            if old is not None:
                for name in self.fo_names:
                    p = self._params[name]
                    if p in old.state:
                        self.optimizer.state[p] = old.state[p]
        else:
            self.optimizer = None

        if self.zo_names:
            self.spsa = SPSA(
                [(n, self._params[n]) for n in self.zo_names],
                SPSAConfig(eps=cfg.zo_eps, q=cfg.zo_q, weight_decay=cfg.zo_weight_decay),
            )
        else:
            self.spsa = None

    def step(self, closure: Callable[[], torch.Tensor]) -> HiZFOStepResult:
        """One Hi-ZFO step on the batch `closure` evaluates (it must not call backward)."""
        if self.last_profile_step is None:
            raise RuntimeError("HiZFO.step() called before profile(): profile the model first")
        forward_passes = backward_passes = 0
        loss: float | None = None
        grads: list[float] = []
        seed = self.zo_seed(self.num_steps)
        if self.config.shared_forward and self.optimizer is not None and self.spsa is not None:
            loss, grads = self._shared_fo_zo(closure, seed)
            forward_passes, backward_passes = 2 * self.config.zo_q, 1
        else:
            if self.optimizer is not None:
                loss = self._fo_backward(closure)
                forward_passes += 1
                backward_passes += 1
            if self.spsa is not None:
                result = self._zo_step(closure, seed)
                forward_passes += result.forward_passes
                grads = result.projected_grads
                if loss is None:
                    loss = result.loss
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.num_steps += 1
        return HiZFOStepResult(
            loss=float("nan") if loss is None else loss,
            forward_passes=forward_passes,
            backward_passes=backward_passes,
            projected_grads=grads,
        )

    def _shared_fo_zo(
        self, closure: Callable[[], torch.Tensor], seed: int
    ) -> tuple[float, list[float]]:
        """FO backward at theta_ZO + eps z_0, whose loss is also L+ of direction 0; then
        the rest of the SPSA step in SPSA.step's order. Returns (FO loss, projected grads).
        The AdamW step is left to the caller, so the ZO probes see pre-update FO tensors."""
        spsa = self.spsa
        assert spsa is not None
        q, eps, lr = self.config.zo_q, self.config.zo_eps, self.config.zo_lr
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
        spsa.restore_and_update_(seeds[-1], grads[-1] / q, lr)
        for s, g in zip(seeds[:-1], grads[:-1], strict=True):
            spsa.restore_and_update_(s, g / q, lr, restore_scale=0.0, apply_weight_decay=False)
        return fo_loss, grads

    def _fo_backward(self, closure: Callable[[], torch.Tensor]) -> float:
        """Forward and backward with grad on the FO tensors only; clip their grads."""
        with torch.enable_grad():
            loss = closure()
            loss.backward()
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                [self._params[n] for n in self.fo_names], self.config.max_grad_norm
            )
        return float(loss.detach())

    def _zo_step(self, closure: Callable[[], torch.Tensor], seed: int) -> SPSAStepResult:
        """SPSA step on the ZO tensors, at the FO tensors' current (pre-update) values."""
        assert self.spsa is not None
        return self.spsa.step(closure, lr=self.config.zo_lr, seed=seed)

    def state_dict(self) -> dict:
        """Everything needed to resume: FO set, AdamW state, step count, seed, history."""
        return {
            "seed": self.seed,
            "num_steps": self.num_steps,
            "last_profile_step": self.last_profile_step,
            "fo_names": list(self.fo_names),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "history": list(self.history),
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
