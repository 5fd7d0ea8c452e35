"""The one AdamW set-up shared by every first-order part of the suite.

Full fine-tuning (fo-adamw), LoRA's adapters and Hi-ZFO's FO tensors all build their
optimizer here, so a comparison between them differs only in what is trained, never in
how: the same decay groups (no decay on biases and norm weights, hizfo.zo.default_no_decay,
as in the Hugging Face Trainer and MeZO), the same schedules and the same clipping.

Schedules are hizfo.schedule's, the one schedule of every method (ZO ones included):
the learning rate of step t is cfg.lr * lr_multiplier(t, total_steps, cfg.warmup_steps,
cfg.schedule), a pure function of t, so it survives a rebuilt optimizer (Hi-ZFO rebuilds
its AdamW every time the FO set changes) and a resume without scheduler state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from hizfo.schedule import SCHEDULES, check_schedule, lr_multiplier, scheduled_lr
from hizfo.zo import DEFAULT_BUCKETS, MIN_BUCKET_NUMEL, default_no_decay

# AdamWConfig.implementation: the suite's bucketed foreach step (BucketedAdamW), or
# torch's own per-tensor loop, foreach (all tensors at once) or fused kernels.
ADAMW_IMPLEMENTATIONS = ("auto", "loop", "foreach", "fused")

__all__ = [
    "ADAMW_IMPLEMENTATIONS",
    "SCHEDULES",
    "AdamWConfig",
    "BucketedAdamW",
    "build_adamw",
    "clip_gradients",
    "lr_multiplier",
    "param_groups",
    "set_lr",
]


@dataclass
class AdamWConfig:
    """Settings of the shared AdamW.

    Attributes:
        lr: peak learning rate. 1e-5 is the usual full fine-tuning rate for 100M-1B
            decoder models (MeZO's FT grid is 1e-5..5e-5).
        betas: Adam's moment coefficients (torch defaults).
        eps: Adam's denominator term (torch default 1e-8).
        weight_decay: decoupled weight decay (AdamW) on matrices; biases and norm
            weights get none (param_groups). 0 as in MeZO's FT baseline.
        schedule: "constant", "linear" (decay to 0 at the last step) or "cosine" (half a
            cosine down to 0 at the last step), after the warmup. "linear" and "cosine"
            need the total number of steps.
        warmup_steps: linear warmup: step t < warmup_steps uses lr * (t + 1) / warmup_steps.
        max_grad_norm: clip the global gradient norm to this before each step (1.0, the
            Hugging Face Trainer default); None disables clipping.
        implementation: how the step walks the tensors (ADAMW_IMPLEMENTATIONS).
            "auto" (default): BucketedAdamW, torch's foreach arithmetic applied bucket
            by bucket (a bounded number of operator calls per step whatever the tensor
            count, and a temporary of one bucket): bit for bit torch's loop on a CPU
            and torch's foreach on CUDA, which is what torch.optim.AdamW picks there by
            itself (tested on CPU). "loop": torch's per-tensor loop (about ten
            operator calls per tensor). "foreach": torch's foreach over all the tensors
            of a group, the same floats, with a temporary the size of all of them and
            two host reads of the step count per tensor. "fused": one fused kernel per
            group, no temporary, but not bit for bit the loop (about one ulp per step).
    """

    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    implementation: str = field(
        default="auto", metadata={"id": "when_set"}
    )  # added after trial ids existed: hashed only when set (bench.spec)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # YAML gives lists
        if self.lr < 0:
            raise ValueError(f"AdamWConfig.lr must be >= 0, got {self.lr}")
        if self.eps <= 0:
            raise ValueError(f"AdamWConfig.eps must be > 0, got {self.eps}")
        if self.weight_decay < 0:
            raise ValueError(f"AdamWConfig.weight_decay must be >= 0, got {self.weight_decay}")
        check_schedule(self.schedule, self.warmup_steps, owner="AdamWConfig")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError("AdamWConfig.max_grad_norm must be > 0 or None")
        if self.implementation not in ADAMW_IMPLEMENTATIONS:
            raise ValueError(
                f"AdamWConfig.implementation must be one of {', '.join(ADAMW_IMPLEMENTATIONS)}, "
                f"got {self.implementation!r}"
            )


def param_groups(
    named_params: Iterable[tuple[str, torch.Tensor]],
    weight_decay: float,
    *,
    no_decay: Callable[[str, torch.Tensor], bool] = default_no_decay,
) -> list[dict]:
    """AdamW parameter groups: [decayed matrices, undecayed biases and norm weights].

    Empty groups are left out; a tensor listed twice (tied weights) appears once.
    """
    decay: list[torch.Tensor] = []
    exempt: list[torch.Tensor] = []
    seen: set[int] = set()
    for name, param in named_params:
        if id(param) in seen:
            continue
        seen.add(id(param))
        (exempt if no_decay(name, param) else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": exempt, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_adamw(
    named_params: Iterable[tuple[str, torch.Tensor]], cfg: AdamWConfig
) -> torch.optim.AdamW:
    """torch.optim.AdamW over `named_params` with cfg's decay groups, betas and eps.

    Every group's "initial_lr" is cfg.lr; set_lr scales it by the schedule each step.
    """
    groups = param_groups(named_params, cfg.weight_decay)
    if not groups:
        raise ValueError("build_adamw needs at least one parameter")
    kwargs: dict[str, Any] = {"lr": cfg.lr, "betas": cfg.betas, "eps": cfg.eps}
    if cfg.implementation == "auto":
        optimizer: torch.optim.AdamW = BucketedAdamW(groups, **kwargs)
    else:
        kernels = {
            "loop": {"foreach": False},
            "foreach": {"foreach": True},
            "fused": {"fused": True},
        }
        optimizer = torch.optim.AdamW(groups, **kwargs, **kernels[cfg.implementation])
    for group in optimizer.param_groups:
        group["initial_lr"] = cfg.lr
    return optimizer


def set_lr(
    optimizer: torch.optim.Optimizer, cfg: AdamWConfig, step: int, total: int | None
) -> float:
    """Set every group's LR for 0-based `step` from cfg's schedule; returns that LR."""
    lr = scheduled_lr(cfg.lr, step, total, cfg.schedule, cfg.warmup_steps)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def clip_gradients(params: Iterable[torch.Tensor], cfg: AdamWConfig) -> float | None:
    """Clip the global gradient norm to cfg.max_grad_norm; returns the norm before
    clipping (None when clipping is off).

    torch.nn.utils.clip_grad_norm_ with its default foreach=None takes the foreach path
    on CPU and CUDA tensors: one torch._foreach_norm and one torch._foreach_mul_ per
    (device, dtype) group, not one per tensor (tested)."""
    if cfg.max_grad_norm is None:
        return None
    return float(torch.nn.utils.clip_grad_norm_(list(params), cfg.max_grad_norm))


class BucketedAdamW(torch.optim.AdamW):
    """torch.optim.AdamW whose step runs torch's foreach arithmetic bucket by bucket.

    The groups, the per-tensor state ({"step", "exp_avg", "exp_avg_sq"}) and the
    state_dict are torch.optim.AdamW's, so a checkpoint moves between the two. The step
    walks each group's tensors (those with a gradient) in buckets of at most
    `bucket_numel` elements of one device and dtype (a larger tensor is a bucket of its
    own; default: 1/DEFAULT_BUCKETS of the trained elements, at least MIN_BUCKET_NUMEL)
    and applies to each the sequence of torch._foreach_* calls torch's foreach AdamW
    makes (torch.optim.adam._multi_tensor_adam, capturable=False): so a step costs
    about nine operator calls per bucket, not ten per tensor, and its temporary (the
    denominators) is one bucket, not every tensor. The one change: torch reads each
    tensor's step count back from its tensor twice a step (two host reads per tensor);
    here the count is kept as a Python number beside it, read once when a tensor's
    state is first seen (after a load_state_dict or a rebuild that carries the state
    over). The floats are the foreach path's, which equal the loop's on a CPU (tested).
    amsgrad, maximize, capturable, differentiable and complex tensors are not
    supported (torch.optim.AdamW has them).
    """

    def __init__(self, params: Any, *, bucket_numel: int | None = None, **kwargs: Any) -> None:
        super().__init__(params, foreach=False, **kwargs)
        for group in self.param_groups:
            if (
                group["amsgrad"]
                or group["maximize"]
                or group["capturable"]
                or group["differentiable"]
            ):
                raise ValueError(
                    "BucketedAdamW: amsgrad, maximize, capturable and differentiable are not "
                    "supported (use torch.optim.AdamW)"
                )
        total = sum(p.numel() for g in self.param_groups for p in g["params"])
        self.bucket_numel = bucket_numel or max(
            math.ceil(total / DEFAULT_BUCKETS), MIN_BUCKET_NUMEL
        )
        # id(param) -> (its state's step tensor, that tensor's value as a float).
        self._counts: dict[int, tuple[torch.Tensor, float]] = {}

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for bucket in self._buckets(group):
                self._step_bucket(group, bucket)
        return loss

    def _buckets(self, group: dict[str, Any]) -> list[list[torch.Tensor]]:
        """The group's tensors that have a gradient, in order, cut into buckets of one
        (device, dtype) and at most bucket_numel elements (a larger tensor alone)."""
        open_buckets: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], int]] = {}
        buckets: list[list[torch.Tensor]] = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse or torch.is_complex(p):
                raise RuntimeError(
                    "BucketedAdamW: sparse gradients and complex tensors are not supported"
                )
            key = (p.device, p.dtype)
            current, size = open_buckets.get(key, ([], 0))
            if current and size + p.numel() > self.bucket_numel:
                current, size = [], 0
            if not current:
                buckets.append(current)
            current.append(p)
            open_buckets[key] = (current, size + p.numel())
        return buckets

    def _count(self, p: torch.Tensor) -> tuple[torch.Tensor, float]:
        """p's step tensor and its value, creating p's state as torch does."""
        state = self.state[p]
        if not state:
            scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
            state["step"] = torch.tensor(0.0, dtype=scalar)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        step = state["step"]
        cached = self._counts.get(id(p))
        if cached is None or cached[0] is not step:
            cached = (step, float(step))  # one host read, the first time this state is seen
        return cached

    def _step_bucket(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        """torch's foreach AdamW step (capturable=False) on one bucket."""
        lr, (beta1, beta2), eps, decay = (
            group["lr"],
            group["betas"],
            group["eps"],
            group["weight_decay"],
        )
        counted = [self._count(p) for p in params]
        grads = [p.grad for p in params]
        exp_avgs = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
        torch._foreach_add_([step for step, _ in counted], 1.0)
        counts = [value + 1 for _, value in counted]
        for p, (step, _), value in zip(params, counted, counts, strict=True):
            self._counts[id(p)] = (step, value)
        if decay != 0:
            torch._foreach_mul_(params, 1 - lr * decay)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        step_size = [(lr / (1 - beta1**t)) * -1 for t in counts]
        bias_correction2_sqrt = [(1 - beta2**t) ** 0.5 for t in counts]
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)
