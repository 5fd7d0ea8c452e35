"""`addax`: Addax (Li, Zhang, Zhong, Deng, Razaviyayn, Mirrokni; ICLR 2025; arXiv 2410.06441).

Each step splits the batch by sequence length (routing.py). The long sequences B0 give a
two-point SPSA estimate along one shared z (MeZO's estimator, hizfo.zo.SPSA, z from the
per-step seed); the short ones B1 give an exact first-order gradient; the update is

    g0 = (L(theta + eps z; B0) - L(theta - eps z; B0)) / (2 eps)      # a scalar
    g1 = grad L(theta; B1)
    theta -= lr * (alpha * g0 * z + (1 - alpha) * g1)

with both estimates taken at the same theta, as in the paper's Algorithm 1.

Memory, optimizer "sgd" (the paper's in-place SGD, IP-SGD): the FO part never holds a full
gradient. A post-accumulate-grad hook on every parameter applies -lr (1 - alpha) g1 to that
tensor the moment its gradient is complete and frees it, so gradients exist only for the
tensors whose backward is in flight (as LOMO / IP-SGD do); the ZO part adds lr alpha g0 z
afterwards in one seeded pass, so z is never stored either. What remains is the weights,
the FO part's activations (short sequences only) and one small z buffer: no optimizer state.
Optimizer "adamw" cannot do that: AdamW needs the whole combined direction per tensor, so
the FO gradient is kept in `.grad`, alpha g0 z is added to it in one seeded pass, and AdamW
steps; memory is then FO AdamW's (gradients plus two moment buffers, three copies of the
weights).

Cost per step: the ZO part's z is drawn four times (perturb +eps, -2 eps, restore, update),
one draw more than MeZO's fused step, because the FO gradient has to be taken at the
restored theta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bench.method import Batch, StepStats, TrainContext
from hizfo.schedule import check_schedule, scheduled_lr
from hizfo.zo import SPSA, SPSAConfig, default_no_decay, derive_seed

from .routing import route, sequence_lengths, take

OPTIMIZERS = ("sgd", "adamw")


@dataclass
class AddaxConfig:
    """Addax.

    Published values are for OPT-13B and SuperGLUE-style tasks on one A100; the paper tunes
    lr, alpha and L_T per task. Where this docstring says "ours", the value is a starting
    point for hizfo-bench's small models, to be swept.

    Attributes:
        lr: step size of the combined update. Ours: 1e-4, an SGD rate of the order used for
            full fine-tuning with in-place SGD; it multiplies alpha for the ZO term, so the
            ZO part moves at lr * alpha (1e-7 here, between MeZO's 1e-6 and 1e-7).
        alpha: weight of the ZO estimate; the FO gradient gets 1 - alpha. alpha g0 z has a
            norm of order sqrt(d) |g0| (d = number of weights), far larger than an FO
            gradient, so alpha must be small. Ours: 1e-3.
        eps: SPSA perturbation scale. 1e-3, MeZO's, whose estimator Addax uses.
        length_threshold: the paper's L_T, in tokens (attention_mask count): examples longer
            than this go to ZO, the rest to FO. When set it wins over zo_fraction. None
            (default) routes by zo_fraction instead, because a good L_T depends on the data
            set's length distribution and the memory at hand.
        zo_fraction: used only when length_threshold is None: the longest
            round(zo_fraction * batch size) examples of each batch go to ZO. Ours: 0.5, an
            even split (the paper's K0 and K1 are of the same order).
        weight_decay: decoupled decay theta -= lr * wd * theta, not on biases and norm
            weights (MeZO's rule); with "adamw" it is AdamW's decay on the same tensors.
            0 as in the paper's SGD runs and MeZO's scripts.
        optimizer: "sgd" (the paper's: plain in-place SGD on the combined direction, no
            state) or "adamw" (AdamW on the combined direction; needs FO AdamW's memory).
        betas: AdamW's moment coefficients (PyTorch defaults); ignored by "sgd".
        schedule: "constant" (MeZO's and the paper's), "linear" or "cosine" decay of lr
            to 0 (hizfo.schedule, the schedule every method uses).
        warmup_steps: linear warmup steps of the LR (0: none).
    """

    lr: float = 1e-4
    alpha: float = 1e-3
    eps: float = 1e-3
    length_threshold: int | None = None
    zo_fraction: float = 0.5
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "constant"
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        check_schedule(self.schedule, self.warmup_steps, owner="AddaxConfig")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not 0.0 <= self.zo_fraction <= 1.0:
            raise ValueError(f"zo_fraction must be in [0, 1], got {self.zo_fraction}")
        if self.length_threshold is not None and self.length_threshold < 0:
            raise ValueError(f"length_threshold must be >= 0, got {self.length_threshold}")
        if self.lr <= 0 or self.eps <= 0 or self.weight_decay < 0:
            raise ValueError("lr and eps must be > 0 and weight_decay >= 0")


class Addax:
    config_class: ClassVar[type] = AddaxConfig
    trains: ClassVar[bool] = True
    # Method traits (bench.method.MethodTraits), in passes over the whole batch at the
    # default zo_fraction 0.5: two forwards on half of it (ZO), a forward and a backward on
    # the other half (FO).
    step_passes: ClassVar[tuple[float, float]] = (1.5, 0.5)
    display_order: ClassVar[int] = 50

    def __init__(self, config: AddaxConfig) -> None:
        self.config = config
        self._fo_step_size: float | None = None  # set only while an SGD backward runs
        self.zo_examples = 0
        self.fo_examples = 0

    def setup(self, model: torch.nn.Module, ctx: TrainContext) -> torch.nn.Module:
        self.model, self.ctx = model, ctx
        c = self.config
        model.requires_grad_(True)
        # Dropout off, so L+ and L- see the same function (as MeZO) and the FO gradient is
        # taken on that same function.
        model.eval()
        # named_parameters() lists a tied tensor once; this order defines z.
        self.named = list(model.named_parameters())
        self.params = [p for _, p in self.named]
        # Decay is applied here, not by SPSA, so that it also happens on steps without a ZO part.
        self.spsa = SPSA(self.named, SPSAConfig(eps=c.eps))
        self.decay = [p for n, p in self.named if not default_no_decay(n, p)]
        if c.optimizer == "sgd":
            for p in self.params:
                p.register_post_accumulate_grad_hook(self._apply_in_place)
            self.optimizer = None
        else:
            no_decay = [p for n, p in self.named if default_no_decay(n, p)]
            self.optimizer = torch.optim.AdamW(
                [
                    {"params": self.decay, "weight_decay": c.weight_decay},
                    {"params": no_decay, "weight_decay": 0.0},
                ],
                lr=c.lr,
                betas=c.betas,
                foreach=False,  # per-tensor temporaries, not one set for the whole model
            )
        return model

    @torch.no_grad()
    def _apply_in_place(self, param: torch.Tensor) -> None:
        """IP-SGD: apply this tensor's share of the FO step and free its gradient."""
        if self._fo_step_size is None or param.grad is None:
            return
        param.add_(param.grad, alpha=-self._fo_step_size)
        param.grad = None

    def step(self, batch: Batch, step: int) -> StepStats:
        c = self.config
        lr = scheduled_lr(c.lr, step, self.ctx.total_steps, c.schedule, c.warmup_steps)
        zo_rows = route(sequence_lengths(batch), c.length_threshold, c.zo_fraction)
        n_zo = int(zo_rows.sum())
        n_fo = zo_rows.numel() - n_zo
        seed = derive_seed(self.ctx.seed, step)
        extra: dict[str, float] = {"zo_examples": float(n_zo), "fo_examples": float(n_fo)}
        losses: list[tuple[float, int]] = []  # (mean loss, target tokens) per part
        forward = backward = 0

        g0 = 0.0
        if n_zo:
            zo_batch = take(batch, zo_rows)
            g0, zo_loss = self._zo_estimate(zo_batch, seed)
            losses.append((zo_loss, _targets(zo_batch)))
            extra.update(projected_grad=g0, zo_loss=zo_loss)
            forward += 2
        if n_fo:
            fo_batch = take(batch, ~zo_rows)
            fo_loss = self._fo_gradient(fo_batch, lr)
            losses.append((fo_loss, _targets(fo_batch)))
            extra["fo_loss"] = fo_loss
            forward += 1
            backward += 1

        if self.optimizer is None:
            self._sgd_finish(g0, n_zo > 0, seed, lr)
        else:
            self._adamw_step(g0, n_zo > 0, seed, lr)
        self.zo_examples += n_zo
        self.fo_examples += n_fo
        tokens = sum(t for _, t in losses)
        loss = sum(value * t for value, t in losses) / max(tokens, 1)
        return StepStats(loss=loss, forward_passes=forward, backward_passes=backward, extra=extra)

    def _zo_estimate(self, batch: Batch, seed: int) -> tuple[float, float]:
        """(g0, (L+ + L-) / 2) on the ZO part; theta is restored afterwards."""
        probe = self.spsa.probe(lambda: self.ctx.loss_fn(self.model, batch), seed)
        return probe.projected_grad, probe.loss

    def _fo_gradient(self, batch: Batch, lr: float) -> float:
        """Forward and backward on the FO part. With SGD the hooks apply -lr (1 - alpha) g1
        during the backward; with AdamW (1 - alpha) g1 is left in .grad."""
        scale = 1.0 - self.config.alpha
        loss = self.ctx.loss_fn(self.model, batch)
        if self.optimizer is None:
            self._fo_step_size = lr * scale
            try:
                loss.backward()
            finally:
                self._fo_step_size = None
        else:
            (loss * scale).backward()
        return float(loss.detach())

    @torch.no_grad()
    def _sgd_finish(self, g0: float, has_zo: bool, seed: int, lr: float) -> None:
        """Weight decay, then the ZO term in one seeded pass. The FO term was applied during
        the backward, so decay acts on theta - lr (1 - alpha) g1: it differs from decaying
        the old theta by lr^2 wd (1 - alpha) g1, far below float precision at usual rates."""
        if self.config.weight_decay:
            keep = 1.0 - lr * self.config.weight_decay
            for p in self.decay:
                p.mul_(keep)
        if has_zo:
            self.spsa.restore_and_update_(
                seed, self.config.alpha * g0, lr, restore_scale=0.0, apply_weight_decay=False
            )

    @torch.no_grad()
    def _adamw_step(self, g0: float, has_zo: bool, seed: int, lr: float) -> None:
        """AdamW on d = alpha g0 z + (1 - alpha) g1: alpha g0 z is added to every .grad as
        the per-tensor z iterator (SPSA.tensor_z) gives each tensor's z."""
        if has_zo:
            scale = self.config.alpha * g0
            for _, p, z in self.spsa.tensor_z(seed):
                if p.grad is None:
                    p.grad = z.mul_(scale)
                else:
                    p.grad.add_(z, alpha=scale)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self.params

    def state_dict(self) -> dict[str, Any]:
        # SGD has no state: the ZO part is the (seed, step, g0) trajectory.
        return {} if self.optimizer is None else {"optimizer": self.optimizer.state_dict()}

    def summary(self) -> dict[str, Any]:
        c = self.config
        return {
            "trainable_parameters": self.spsa.numel,
            "optimizer": c.optimizer,
            "routing": (
                f"length > {c.length_threshold}"
                if c.length_threshold is not None
                else f"longest {c.zo_fraction:g} of each batch"
            ),
            "zo_examples": self.zo_examples,
            "fo_examples": self.fo_examples,
        }


def _targets(batch: Batch) -> int:
    """Target tokens of a batch: what ctx.loss_fn averages over."""
    labels = batch.get("labels")
    if labels is None:
        return int(batch["input_ids"].numel())
    return int((labels[:, 1:] != -100).sum())
