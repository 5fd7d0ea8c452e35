"""Hi-ZFO as a library: hybrid zeroth-/first-order fine-tuning for any PyTorch loop.

Torch only; nothing here imports the benchmark suite.
"""

from hizfo.importance import profile_importance
from hizfo.optimizer import HiZFO, HiZFOConfig, HiZFOStepResult
from hizfo.selection import TensorCost, select_fo_tensors, tensor_costs
from hizfo.zo import SPSA, SPSAConfig, SPSAStepResult, default_no_decay

__all__ = [
    "SPSA",
    "HiZFO",
    "HiZFOConfig",
    "HiZFOStepResult",
    "SPSAConfig",
    "SPSAStepResult",
    "TensorCost",
    "default_no_decay",
    "profile_importance",
    "select_fo_tensors",
    "tensor_costs",
]
