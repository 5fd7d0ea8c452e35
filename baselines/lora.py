"""`lora`: low-rank adapters (Hu et al., 2021) through peft, trained with AdamW.

The base weights are frozen; peft injects trainable A and B matrices (B starts at zero,
so training starts from the base model exactly) into the target linear layers. The
optimizer, schedule, clipping and gradient accumulation are fo-adamw's, over the adapter
weights only.

Evaluation: setup() returns the base transformers model with the LoRA layers injected
in place (peft's get_base_model()), not the PeftModel wrapper. Its forward includes the
adapters, and lm-eval's HFLM gets the plain PreTrainedModel it expects, so nothing has
to be merged or unloaded after training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from baselines.fo_adamw import FOAdamW, FOAdamWConfig
from bench.method import TrainContext

log = logging.getLogger("hizfo_bench.lora")

# Names of one role in different model families: the attention output projection is
# o_proj in Llama-style models and out_proj in OPT.
ALIASES: dict[str, tuple[str, ...]] = {"o_proj": ("out_proj",), "out_proj": ("o_proj",)}


def resolve_target_modules(model: torch.nn.Module, names: list[str]) -> list[str]:
    """The module names to adapt in `model`: each of `names` that the model has, an alias
    (ALIASES) for one it lacks (with a warning), and a ValueError naming a module that
    matches neither, with the names of the model's linear layers."""
    linear = {
        n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    out: list[str] = []
    for name in names:
        if name in present:
            out.append(name)
            continue
        alias = next((a for a in ALIASES.get(name, ()) if a in present), None)
        if alias is None:
            raise ValueError(
                f"lora target_modules: the model has no module {name!r}; its linear layers: "
                f"{', '.join(sorted(linear))}"
            )
        log.warning("lora: the model has no %s; adapting %s (the same role) instead", name, alias)
        out.append(alias)
    return list(dict.fromkeys(out))


@dataclass
class LoRAConfig(FOAdamWConfig):
    """LoRA adapters trained with AdamW (every fo-adamw setting applies to the adapters).

    Attributes:
        lr: peak learning rate. 1e-4: MeZO's LoRA grid is 1e-4 or 5e-5 (Malladi et al.,
            2023, large_models/mezo.sh; that grid is for MeZO-trained LoRA, which the
            companion MeZO-GV paper also uses, 1e-4 for Llama-2); 1e-4 is also the usual
            AdamW LoRA rate. The mini suite uses what a small sweep chose.
        betas, eps, weight_decay, schedule, warmup_steps, max_grad_norm,
            grad_accumulation, train_mode: the shared AdamW set-up, as in fo-adamw
            (FOAdamWConfig), applied to the adapter weights.
        rank: r, the adapters' inner dimension (8, as in MeZO's LoRA runs).
        alpha: LoRA scaling numerator; the update is scaled by alpha / rank (16, as in
            MeZO's LoRA runs).
        dropout: dropout on the adapter input (0.0: MeZO's LoRA has none, and it keeps
            the training loss a deterministic function of the weights).
        target_modules: names of the linear layers that get adapters. The attention
            projections by default (q/k/v/o, Llama naming); MeZO adapts q and v only
            (OPT), which is ["q_proj", "v_proj"] here. Every name must match a module
            of the model, or setup fails naming it and the model's linear layers; the
            one documented fallback is the output projection: a model without
            ``o_proj`` but with ``out_proj`` (OPT) adapts ``out_proj`` for it, with a
            warning, and the summary's ``target_modules`` says what was adapted.
        bias: peft's bias setting: "none" (default), "all" or "lora_only".
    """

    lr: float = 1e-4
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    bias: str = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")


class LoRA(FOAdamW):
    config_class: ClassVar[type] = LoRAConfig
    trains: ClassVar[bool] = True
    # Method traits (bench.method.MethodTraits): the backward computes activation
    # gradients but no base-weight gradients, about half a full one; not the reference
    # (FOAdamW, its base class, is).
    step_passes: ClassVar[tuple[float, float]] = (1.0, 0.5)
    is_reference: ClassVar[bool] = False
    display_order: ClassVar[int] = 30
    # Not fo-adamw's (a subclass inherits traits): the base weights hold no gradient or
    # AdamW state (the adapters are not counted), and perf declares no ratios.
    fo_fraction: ClassVar[float] = 0.0
    perf_ratios: ClassVar[dict[str, dict[str, float]]] = {}
    config: LoRAConfig

    @classmethod
    def check_model(cls, config: LoRAConfig, model: torch.nn.Module) -> None:
        """Before anything runs (bench.suite): every target module exists in `model` (its
        skeleton, no weights), or a ValueError names the missing one."""
        resolve_target_modules(model, list(config.target_modules))

    def setup(self, model: torch.nn.Module, ctx: TrainContext) -> torch.nn.Module:
        from peft import LoraConfig, get_peft_model

        c = self.config
        self.target_modules = resolve_target_modules(model, list(c.target_modules))
        peft_config = LoraConfig(
            r=c.rank,
            lora_alpha=c.alpha,
            lora_dropout=c.dropout,
            target_modules=self.target_modules,
            bias=c.bias,
            task_type="CAUSAL_LM",
        )
        # get_peft_model freezes every base weight and injects the adapters in place.
        self.peft_model = get_peft_model(model, peft_config)
        self.model, self.ctx = self.peft_model.get_base_model(), ctx
        self.model.train(c.train_mode)  # lora_dropout acts only in train mode
        self.named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named]
        if not self.params:
            raise ValueError(f"no module of the model matches target_modules {c.target_modules}")
        self._build_optimizer()
        return self.model

    def state_dict(self) -> dict[str, Any]:
        from peft import get_peft_model_state_dict

        return {"adapters": get_peft_model_state_dict(self.peft_model), **super().state_dict()}

    def summary(self) -> dict[str, Any]:
        trainable = sum(p.numel() for p in self.params)
        total = sum(p.numel() for p in self.model.parameters())
        adapted = sorted(
            {n.rsplit(".lora_A", 1)[0] for n, _ in self.model.named_parameters() if ".lora_A" in n}
        )
        return {
            "trainable_parameters": trainable,
            "total_parameters": total,
            "trainable_fraction": trainable / total,
            "rank": self.config.rank,
            "alpha": self.config.alpha,
            "target_modules": self.target_modules,  # what was adapted (aliases resolved)
            "adapted_modules": len(adapted),
        }
