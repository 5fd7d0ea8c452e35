"""Hi-ZFO as a library: hybrid zeroth-/first-order fine-tuning for any PyTorch loop.

Torch only; nothing here imports the benchmark suite.
"""

from hizfo.adamw import AdamWConfig, build_adamw, param_groups
from hizfo.importance import StepModel, profile_importance
from hizfo.optimizer import HiZFO, HiZFOConfig, HiZFOStepResult
from hizfo.schedule import SCHEDULES, check_schedule, lr_multiplier, scheduled_lr
from hizfo.selection import (
    TensorCost,
    full_cost,
    select_fo_tensors,
    selection_cost,
    tensor_costs,
    trace_forward,
)
from hizfo.zo import SPSA, SPSAConfig, SPSAProbe, SPSAStepResult, default_no_decay, derive_seed

__all__ = [
    "SCHEDULES",
    "SPSA",
    "AdamWConfig",
    "HiZFO",
    "HiZFOConfig",
    "HiZFOStepResult",
    "SPSAConfig",
    "SPSAProbe",
    "SPSAStepResult",
    "StepModel",
    "TensorCost",
    "build_adamw",
    "check_schedule",
    "default_no_decay",
    "derive_seed",
    "full_cost",
    "lr_multiplier",
    "param_groups",
    "profile_importance",
    "scheduled_lr",
    "select_fo_tensors",
    "selection_cost",
    "tensor_costs",
    "trace_forward",
]
