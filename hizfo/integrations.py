"""Hi-ZFO inside a Hugging Face `transformers.Trainer`: `HiZFOTrainer` and
`HiZFOTrainerMixin`.

The Trainer keeps everything it is good at (data loading and collation, device placement,
logging and callbacks, evaluation, saving the model); only the update changes: every
Trainer step is one `HiZFO.step` (hizfo/optimizer.py), with profiling before the first
step and again whenever `HiZFO.profile_due` says so, on batches drawn from the train
dataloader.

Any Trainer subclass becomes a Hi-ZFO trainer in one line, trl's `SFTTrainer` included::

    class HiZFOSFTTrainer(HiZFOTrainerMixin, SFTTrainer):
        pass

    trainer = HiZFOSFTTrainer(model=..., args=..., train_dataset=..., hizfo_config=...)

(`HiZFOTrainer` is exactly `HiZFOTrainerMixin` on `transformers.Trainer`.) The mixin goes
first, so its update replaces the subclass's; the subclass's `compute_loss` is kept and is
what every Hi-ZFO forward evaluates.

How the Trainer's own update machinery is kept from touching the weights:

- `create_optimizer` installs `_NoOpOptimizer`: one param group holding a single empty
  placeholder tensor (no model parameter, no state), whose `step` does nothing. The
  Trainer's `optimizer.step()`, `model.zero_grad()` and its gradient clipping therefore
  act on nothing: `HiZFO.step` has already applied AdamW to the FO tensors, clipped their
  gradients (`HiZFOConfig.max_grad_norm`) and freed them, and the ZO tensors never get a
  gradient. (The Trainer still logs a `grad_norm`; it is 0.0 for that reason.)
- `create_scheduler` installs a constant schedule on that placeholder, so the logged
  `learning_rate` is `HiZFOConfig.fo_lr`. The learning rates are Hi-ZFO's own
  (`fo_schedule`, `zo_schedule` in HiZFOConfig); `TrainingArguments.learning_rate`,
  `lr_scheduler_type`, warm-up and `optim` are not used.
- `training_step` runs the whole Hi-ZFO step (forwards, FO backward, AdamW, SPSA) and
  returns the detached loss, which the Trainer accumulates and logs like any step's.
- Gradient accumulation is refused (`gradient_accumulation_steps` must be 1): the Trainer
  would call `training_step` once per micro-batch, i.e. several Hi-ZFO updates per
  optimizer step, and a Hi-ZFO step on the concatenated micro-batches would hold all their
  activations at once, which is what accumulation exists to avoid. Raise
  `per_device_train_batch_size` instead (MeZO has no accumulation either).

Checkpoints and resume: every Trainer checkpoint (`save_strategy`) gets
`hizfo_state.pt` beside the Trainer's own files: `HiZFO.state_dict()` (FO set, AdamW
moments of the FO tensors, step counter, last profiling step, profiling history, seed)
and the position of the profiling stream. `train(resume_from_checkpoint=...)` loads it
after the Trainer has loaded the weights, so a resumed run ends at the same weights, bit
for bit, as one that was never interrupted (tests/packages/hizfo/test_integrations.py).
The z seeds need no saved state: step t draws z from a seed derived from (seed, t). The
profiling batches come from a train dataloader of their own whose random draws use a
torch random state of their own (`torch.random.fork_rng`), so profiling never changes the
training's data order and the stream is rebuilt exactly on resume. A checkpoint without
`hizfo_state.pt` (written by another trainer) resumes with a warning: Hi-ZFO starts
afresh (profiles again, new AdamW moments). `save_only_model=True` skips it, as it skips
the Trainer's optimizer.

The model is kept in eval mode during training (dropout off), because SPSA's two forwards
must see the same function (as MeZO does); trl's SFTTrainer therefore files its
token-accuracy and entropy metrics under "eval". transformers is imported only when
`HiZFOTrainer` is first used (PEP 562 module `__getattr__`); the mixin needs no import of
it, so `import hizfo` and `import hizfo.integrations` stay torch-only.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch

from hizfo.optimizer import HiZFO, HiZFOConfig

if TYPE_CHECKING:  # pragma: no cover
    from transformers import Trainer

__all__ = ["HiZFOTrainer", "HiZFOTrainerMixin"]  # noqa: F822 (HiZFOTrainer: __getattr__)

logger = logging.getLogger(__name__)


class _NoOpOptimizer(torch.optim.Optimizer):
    """The Trainer's optimizer slot, filled with nothing that can change a weight.

    It holds one empty placeholder tensor (torch refuses an optimizer without parameters),
    keeps no state, and its step does nothing; its only group's `lr` is what the Trainer's
    scheduler and logs read.
    """

    def __init__(self, lr: float) -> None:
        super().__init__([torch.zeros(0)], {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # noqa: D102
        return None


HIZFO_STATE_NAME = "hizfo_state.pt"  # beside the Trainer's optimizer.pt in a checkpoint
PROFILE_SEED_OFFSET = 10_007  # the profiling stream's random state: seed + this


class HiZFOTrainerMixin:
    """Makes a `transformers.Trainer` subclass a Hi-ZFO trainer: every step one Hi-ZFO
    step, Hi-ZFO's state in every checkpoint. Put it first among the bases.

    Args:
        *args, **kwargs: as for the Trainer class it is mixed into (model, args,
            train_dataset, data_collator, ...). `optimizers` must be left at its default.
        hizfo_config: the Hi-ZFO settings (learning rates, rho, profiling, SPSA).
        hizfo_names: the parameters Hi-ZFO trains. Default: those with
            requires_grad when the trainer is built, as the Trainer's own optimizer
            would take; the others are never updated.

    After construction `trainer.hizfo` is the `HiZFO` instance: its `fo_names`,
    `zo_names` and `history` say what was selected when.
    """

    def __init__(
        self,
        *args: Any,
        hizfo_config: HiZFOConfig,
        hizfo_names: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("optimizers", (None, None)) != (None, None):
            raise ValueError(
                f"{type(self).__name__} builds its own update; do not pass `optimizers`"
            )
        super().__init__(*args, **kwargs)
        if self.args.gradient_accumulation_steps != 1:
            raise ValueError(
                f"{type(self).__name__} needs gradient_accumulation_steps=1 (got "
                f"{self.args.gradient_accumulation_steps}): each Trainer step is one "
                "Hi-ZFO step on one batch; raise per_device_train_batch_size instead"
            )
        if self.args.lr_scheduler_type not in ("constant", "linear"):
            # "linear" is the TrainingArguments default, so it is not worth a warning.
            logger.warning(
                "%s ignores lr_scheduler_type=%s: Hi-ZFO's learning rates follow "
                "HiZFOConfig.fo_schedule and zo_schedule",
                type(self).__name__,
                self.args.lr_scheduler_type,
            )
        if hizfo_names is None:
            hizfo_names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.hizfo_config = hizfo_config
        max_steps = self.args.max_steps
        self.hizfo = HiZFO(
            self.model,
            hizfo_config,
            seed=self.args.seed,
            names=hizfo_names,
            total_steps=max_steps if max_steps > 0 else None,
        )
        # The profiling stream: a train dataloader of its own, drawn under a torch random
        # state of its own; (state when the current dataloader was opened, batches drawn
        # from it) rebuild it exactly on resume.
        self._profile_batches: Iterator[dict[str, Any]] | None = None
        start = torch.Generator().manual_seed(self.args.seed + PROFILE_SEED_OFFSET)
        self._profile_rng_state = start.get_state()
        self._profile_opened_at = self._profile_rng_state.clone()
        self._profile_drawn = 0

    # ---- the Trainer's own update, neutralised -------------------------------------

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """A no-op optimizer: Hi-ZFO updates the weights inside training_step."""
        if self.optimizer is None:
            self.optimizer = _NoOpOptimizer(lr=self.hizfo_config.fo_lr)
        return self.optimizer

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """A constant schedule on the no-op optimizer, so the logs show fo_lr."""
        if self.lr_scheduler is None:
            target = self.optimizer if optimizer is None else optimizer
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(target, lambda _: 1.0)
        return self.lr_scheduler

    # ---- the profiling stream ------------------------------------------------------

    @contextlib.contextmanager
    def _profile_random_state(self) -> Iterator[None]:
        """Run the block on the profiling stream's own torch random state; the global
        one (the training's data order, dropout) is left as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._profile_rng_state)
            try:
                yield
            finally:
                self._profile_rng_state = torch.get_rng_state()

    def _draw_profile_batch(self) -> dict[str, Any] | None:
        """The next raw batch of the profiling dataloader (opened when needed), or None
        when it is exhausted."""
        with self._profile_random_state():
            if self._profile_batches is None:
                self._profile_opened_at = self._profile_rng_state.clone()
                self._profile_drawn = 0
                self._profile_batches = iter(self.get_train_dataloader())
            batch = next(self._profile_batches, None)
        if batch is None:
            self._profile_batches = None
        else:
            self._profile_drawn += 1
        return batch

    def _next_profile_batch(self) -> dict[str, Any]:
        """The next batch of a train dataloader of its own, restarted when exhausted,
        so each profiling sees fresh batches and the training order is not disturbed."""
        for _ in range(2):
            batch = self._draw_profile_batch()
            if batch is not None:
                return self._prepare_inputs(batch)
        raise RuntimeError(
            f"{type(self).__name__}: the train dataloader yields no batch to profile on"
        )

    # ---- checkpoints: Hi-ZFO's state beside the Trainer's -----------------------------

    def hizfo_state_dict(self) -> dict[str, Any]:
        """What `hizfo_state.pt` holds: HiZFO.state_dict() and the profiling stream."""
        return {
            "hizfo": self.hizfo.state_dict(),
            "profile_stream": {
                "opened_at": self._profile_opened_at if self._profile_batches else None,
                "drawn": self._profile_drawn if self._profile_batches else 0,
                "rng": self._profile_rng_state,
            },
        }

    def load_hizfo_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `hizfo_state_dict()`: Hi-ZFO's state, and the profiling stream at the
        same batch (its dataloader re-opened from the same random state)."""
        self.hizfo.load_state_dict(state["hizfo"])
        stream = state["profile_stream"]
        self._profile_batches = None
        self._profile_drawn = 0
        if stream["opened_at"] is None:
            self._profile_rng_state = stream["rng"]
            return
        self._profile_rng_state = stream["opened_at"]
        for _ in range(stream["drawn"]):
            self._draw_profile_batch()
        if not torch.equal(self._profile_rng_state, stream["rng"]):
            logger.warning("the profiling stream did not replay to its saved random state")

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)  # type: ignore[misc]
        if self.args.should_save:
            torch.save(self.hizfo_state_dict(), os.path.join(output_dir, HIZFO_STATE_NAME))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)  # type: ignore[misc]
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, HIZFO_STATE_NAME)
        if not os.path.isfile(path):
            logger.warning(
                "%s holds no %s: Hi-ZFO starts afresh (profiling again, new AdamW moments), "
                "so this run will not match an uninterrupted one",
                checkpoint,
                HIZFO_STATE_NAME,
            )
            return
        # Written by this class next to the Trainer's own pickled files (rng_state.pth).
        self.load_hizfo_state_dict(torch.load(path, map_location="cpu", weights_only=False))

    # ---- the Hi-ZFO step -----------------------------------------------------------

    def _loss_closure(
        self, model: torch.nn.Module, inputs: dict[str, Any]
    ) -> Callable[[], torch.Tensor]:
        """The forward-only closure HiZFO takes: the Trainer's own compute_loss (label
        smoothing, compute_loss_func, autocast) as the mean loss of the batch."""

        def closure() -> torch.Tensor:
            with self.compute_loss_context_manager():
                return self.compute_loss(model, inputs)

        return closure

    def training_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Profile if due, then one Hi-ZFO step on `inputs`; returns the detached loss
        for the Trainer's logging. The weights are updated here and nowhere else."""
        model.eval()  # dropout off: both SPSA forwards must see the same function
        if self.hizfo.profile_due:
            batches = [
                self._next_profile_batch()
                for _ in itertools.repeat(None, self.hizfo_config.profile_batches)
            ]
            self.hizfo.profile([self._loss_closure(model, b) for b in batches])
        inputs = self._prepare_inputs(inputs)
        result = self.hizfo.step(self._loss_closure(model, inputs))
        return torch.tensor(result.loss, device=self.args.device)


def _build_trainer_class() -> type[Trainer]:
    """Define HiZFOTrainer; called once, on first use, because it imports transformers."""
    from transformers import Trainer

    class HiZFOTrainer(HiZFOTrainerMixin, Trainer):
        """A `transformers.Trainer` whose every step is one Hi-ZFO step
        (HiZFOTrainerMixin: arguments, checkpoints and resume are described there)."""

    HiZFOTrainer.__module__ = __name__
    return HiZFOTrainer


_trainer_class: type[Trainer] | None = None


def __getattr__(name: str) -> Any:
    """`HiZFOTrainer` is built on first access, importing transformers only then."""
    global _trainer_class
    if name == "HiZFOTrainer":
        if _trainer_class is None:
            _trainer_class = _build_trainer_class()
        return _trainer_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
