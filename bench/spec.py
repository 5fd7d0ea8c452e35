"""A trial's data: what one trial runs (TrialSpec) and its configs.

Below everyone who runs a trial: the suite parser builds specs, the orchestrator ships
them to workers, the recipe reads them. Nothing here parses YAML or runs anything, and
nothing here imports torch.

`TrialSpec.method_config` is the method's built config (an instance of its
``config_class``), validated once where it is built (bench/suite.py, or `from_dict` at
the process boundary). Its plain form (``to_dict()``, ``dataclasses.asdict``) is what
the trial id hashes, what Ray ships to a worker and what the trial file keeps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.config import build

PRECISIONS = ("fp32", "bf16-mixed", "bf16")
DTYPES = ("float32", "bfloat16", "float16")
SAVE_CHOICES = ("none", "final")


def _at_least(n: int) -> dict[str, int]:
    """Field metadata: a bound bench.config.build checks before anything runs."""
    return {"ge": n}


@dataclass
class TrainConfig:
    """How a trial trains. Every method sees the same data for the same seed."""

    steps: int = 40  # optimisation steps (a method with trains=False runs none)
    batch_size: int = field(default=8, metadata=_at_least(1))  # examples per step
    # tokens per example (prompt + target), cut from the right
    max_length: int = field(default=160, metadata=_at_least(1))
    # use the first N of the task's training set; None = all
    train_examples: int | None = field(default=None, metadata=_at_least(1))
    dtype: str = field(default="float32", metadata={"choices": DTYPES})  # model weights
    # fp32 | bf16-mixed (fp32 master weights, bf16 autocast compute) | bf16 (pure, for
    # memory studies only); None: bf16-mixed on GPUs and when dtype is bfloat16, else fp32.
    precision: str | None = field(default=None, metadata={"choices": PRECISIONS})
    # steps between loss points in the curve and the log
    log_every: int = field(default=10, metadata=_at_least(1))
    # Checkpoints (bench/train/checkpoint.py), in <run>/checkpoints/<trial_id>/: "final"
    # writes the trained model (save_pretrained + tokenizer) and the method's state when
    # training ends; save_every N > 0 writes a resumable checkpoint every N steps, from
    # which a retried or resumed trial continues. Neither changes the trial id.
    save: str = field(default="none", metadata={"choices": SAVE_CHOICES})
    save_every: int = 0
    # Seconds a trial may go without progress (a step, or a forward pass while it loads,
    # evaluates or scores) before the driver stops it and records it failed with
    # "TimeoutError: no progress for N s at step K"; None: derived from the trial's own
    # seconds per step (bench/orchestrate/stall.py). Does not change the trial id.
    stall_timeout_s: float | None = field(default=None, metadata={"gt": 0})


@dataclass
class EvalConfig:
    """How a trial is scored by lm-eval."""

    limit: int | None = field(default=100, metadata=_at_least(1))  # test docs; None = all
    batch_size: int = field(default=16, metadata=_at_least(1))  # HFLM batch size
    # generation budget per document
    max_gen_toks: int = field(default=128, metadata=_at_least(1))


@dataclass
class DevConfig:
    """Evaluation points on the dev split during training (bench/train/evalpoints.py)."""

    eval_every: int = 0  # steps between evaluation points; 0 = none (only the test at the end)
    batches: int = field(default=4, metadata=_at_least(1))  # dev batches averaged over
    # examples per dev batch; None = train.batch_size
    batch_size: int | None = field(default=None, metadata=_at_least(1))
    score: bool = False  # also the dev score (generation on dev documents) at each point
    limit: int = field(default=20, metadata=_at_least(1))  # dev documents scored
    # generation budget for the dev score; None = eval's
    max_gen_toks: int | None = field(default=None, metadata=_at_least(1))


@dataclass
class ResourcesConfig:
    """Devices one trial runs on (bench/train/distributed.py, docs/orchestration.md)."""

    gpus: int = field(default=1, metadata=_at_least(1))  # GPUs of one node for this trial
    # CPU-only machines: processes that stand in for GPUs (gloo), for tests; None = 1
    processes: int | None = field(default=None, metadata=_at_least(1))


MIN_EXAMPLES = 64  # a smaller sample makes the measure mostly sampling noise (issue 22)


@dataclass
class SharpnessConfig:
    """What `measure: {sharpness: true}` measures after training.

    Attributes:
        sharpness: measure at all (False: nothing is measured, no cost).
        examples: the fixed sample: the first this many training examples (at least 64),
            the same for every method and seed.
        batch_size: examples per forward pass over the sample (memory, not the result).
        directions: random directions K for (a), each probed both ways (2K forwards).
        radius: the relative radius r for (a) (each filter moves by r of its norm).
        hessian_iters: the cap on Hessian-vector products for (b); 0 skips (b).
        hessian_tol: (b) stops when the eigenvalue estimate changes by less than this,
            relative.
        seed: seed of the directions and the power iteration's start vector.
        batches: no longer read (the sample is `examples`); accepted so older suites
            load.
    """

    sharpness: bool = False
    examples: int = MIN_EXAMPLES
    batch_size: int = 16
    directions: int = 8
    radius: float = 0.01
    hessian_iters: int = 100
    hessian_tol: float = 1e-3
    seed: int = 0
    batches: int | None = None

    def __post_init__(self) -> None:
        if self.examples < MIN_EXAMPLES:
            raise ValueError(f"examples must be at least {MIN_EXAMPLES}, got {self.examples}")
        if self.batch_size < 1 or self.directions < 1 or self.hessian_iters < 0:
            raise ValueError("batch_size and directions must be positive, hessian_iters >= 0")
        if not (self.radius > 0 and self.hessian_tol > 0):
            raise ValueError("radius and hessian_tol must be positive")


def method_config_of(method: str, settings: Mapping[str, Any] | None, where: str) -> Any:
    """Method `method`'s config class (a variant label: its method's) built from plain
    `settings` (bench.config.build: one-line ConfigErrors)."""
    from bench.registry import load_method

    return build(load_method(method).config_class, dict(settings or {}), where)


@dataclass
class TrialSpec:
    method: str
    task: str
    model: str
    seed: int
    # The method's built config (its config_class); a plain mapping given here is built
    # in __post_init__, except for a method not installed in this process (a plugin only
    # the workers have), whose mapping the worker builds (`from_dict`).
    method_config: Any = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dev: DevConfig = field(default_factory=DevConfig)
    measure: SharpnessConfig = field(default_factory=SharpnessConfig)
    # "final": scored on test at the end; "tune": a tuning trial, scored on dev only.
    phase: str = "final"
    # The searched settings this trial tries (tuning) or was chosen with (final); {} if none.
    tuning_point: dict[str, Any] = field(default_factory=dict)
    # A task built from the suite (bench/tasks/registry.py): its type and resolved config,
    # e.g. {"type": "jsonl", "train": "/abs/a.jsonl", ...}; {} for a registered task.
    task_config: dict[str, Any] = field(default_factory=dict)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    def __post_init__(self) -> None:
        if isinstance(self.method_config, Mapping):
            from bench.registry import MethodError, load_method

            try:
                load_method(self.method)
            except MethodError:
                self.method_config = dict(self.method_config)
                return
            self.method_config = method_config_of(self.method, self.method_config, self.method)

    def to_dict(self) -> dict[str, Any]:
        """The plain form (JSON types, a method config as its fields): what the trial id
        hashes, Ray ships and the trial file keeps."""
        return asdict(self)

    def _id_payload(self) -> dict[str, Any]:
        # Sections added after schema 1 join the hash only when set, so every spec that
        # existed before keeps its trial id (resume and references keep working).
        d = self.to_dict()
        # Likewise a method config's fields marked metadata {"id": "when_set"}.
        if dataclasses.is_dataclass(self.method_config):
            for f in dataclasses.fields(self.method_config):
                unset = getattr(self.method_config, f.name) == f.default
                if f.metadata.get("id") == "when_set" and unset:
                    d["method_config"].pop(f.name, None)
        if self.dev == DevConfig():
            del d["dev"]
        if self.train.precision is None:
            del d["train"]["precision"]
        # Saving changes no result (tested bit for bit), so it never changes the id.
        del d["train"]["save"], d["train"]["save_every"]
        del d["train"]["stall_timeout_s"]  # a watchdog's setting, no part of the result
        if self.measure == SharpnessConfig():
            del d["measure"]
        if self.phase == "final":
            del d["phase"]
        if not self.tuning_point:
            del d["tuning_point"]
        if not self.task_config:
            del d["task_config"]
        else:  # a typed task's identity: its data's digest, not where its files lie
            from bench.tasks.registry import id_config

            d["task_config"] = id_config(d["task_config"])
        if self.resources == ResourcesConfig():
            del d["resources"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialSpec:
        return cls(
            method=d["method"],
            task=d["task"],
            model=d["model"],
            seed=int(d["seed"]),
            method_config=dict(d.get("method_config") or {}),  # built in __post_init__
            train=build(TrainConfig, d.get("train"), "train"),
            eval=build(EvalConfig, d.get("eval"), "eval"),
            dev=build(DevConfig, d.get("dev"), "dev"),
            measure=build(SharpnessConfig, d.get("measure"), "measure"),
            phase=str(d.get("phase", "final")),
            tuning_point=dict(d.get("tuning_point") or {}),
            task_config=dict(d.get("task_config") or {}),
            resources=build(ResourcesConfig, d.get("resources"), "resources"),
        )

    @property
    def trial_id(self) -> str:
        """Readable and derived from the whole spec: equal specs share an id (resume)."""
        payload = json.dumps(self._id_payload(), sort_keys=True).encode()
        digest = hashlib.sha1(payload).hexdigest()[:8]
        model = re.sub(r"[^A-Za-z0-9.]+", "_", Path(self.model).name or self.model)
        return f"{self.method}__{self.task}__{model}__s{self.seed}__{digest}"
