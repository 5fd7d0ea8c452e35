"""One trial as a recipe: setup, train, evaluate. The loop reads top to bottom here.

`run_trial` never raises for a failure inside the trial: it returns a record with status
"failed" and the reason, so one bad trial cannot stop a sweep.

Measurements (the exact definitions the report relies on; all wall-clock times are
``time.perf_counter`` differences in the worker process):
- load_seconds: seeding, task data, method import and model loading (to the device).
- setup_seconds: the method's setup (e.g. Hi-ZFO's importance profiling).
- train_seconds: the train clock: the training loop only: batching and collation, every
  step, the hooks (NaN check, log lines) and on GPU a synchronise at the end. Loading,
  setup, evaluation, and anything a hook runs inside ``clock.paused()`` are excluded.
- steps_per_second: steps / train_seconds. tokens_per_second: non-padding tokens of
  the training batches (attention_mask sum, prompt included) / train_seconds.
  Both null for a method that does not train.
- eval_seconds: wall-clock of the lm-eval scoring on the in-memory model.
- total_seconds: the whole trial in the worker, from run_trial's entry to its return.
- peak_memory_bytes and memory: see bench/measure/memory.py.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bench import models
from bench.config import build
from bench.data import collate, truncation_counts
from bench.evaluate import evaluate, write_samples
from bench.measure.environment import environment
from bench.measure.memory import (
    MemoryMeter,
    memory_breakdown,
    release_freed_memory,
    tensor_bytes,
)
from bench.measure.sharpness import measure_sharpness
from bench.method import TrainContext, causal_lm_loss
from bench.record import TrialRecord
from bench.registry import load_method
from bench.spec import TrialSpec
from bench.tasks import get_task
from bench.train import precision
from bench.train.checkpoint import (
    CountedStream,
    TrialCheckpoints,
    UnreadableCheckpoint,
    resumable,
    rng_states,
    set_rng_states,
)
from bench.train.evalpoints import DevEvaluator, MetricsFile, preserved_rng
from bench.train.hooks import (
    ConsoleLog,
    DivergenceGuard,
    Hook,
    Hooks,
    LoopState,
    StepExtraRecorder,
    TrainClock,
    loss_point,
)
from bench.train.progress import Heartbeat, ProgressFile
from bench.train.trackers import tracker_hooks

log = logging.getLogger("hizfo_bench.train")

PROFILE_SEED_OFFSET = 10_007  # the profiling batch stream's seed is the trial's + this


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy ships with the dependencies
        pass


def new_record(spec: TrialSpec, device: torch.device) -> TrialRecord:
    """A record with every contract field, marked failed until the trial succeeds."""
    return TrialRecord(
        trial_id=spec.trial_id,
        method=spec.method,
        task=spec.task,
        model=spec.model,
        seed=spec.seed,
        config=spec.to_dict(),
        environment=environment(device),
    )


def trial_checkpoints(spec: TrialSpec, run_dir: Path | None) -> TrialCheckpoints | None:
    """The trial's checkpoints (bench/train/checkpoint.py), kept in a run folder only.
    Only a final trial writes a final model: a tuning or target-setting trial is judged
    on dev only."""
    if run_dir is None:
        return None
    cfg = spec.train
    final = cfg.save == "final" and spec.phase == "final"
    return TrialCheckpoints(run_dir, spec.trial_id, save_every=cfg.save_every, final=final)


def failed_record(spec: TrialSpec, error: str) -> TrialRecord:
    """The record of a trial whose worker never returned (it died, or Ray failed)."""
    record = new_record(spec, torch.device("cpu"))
    record.error = error
    return record


class TrialRecipe:
    """Setup, train and evaluate one trial spec, filling one TrialRecord."""

    def __init__(
        self,
        spec: TrialSpec,
        device: torch.device,
        *,
        progress: bool = False,
        hooks: list[Hook] | None = None,
        run_dir: Path | None = None,
    ) -> None:
        self.spec, self.device, self.progress = spec, device, progress
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.record = new_record(spec, device)
        self.extra_hooks: list[Hook] = list(hooks or [])  # the caller's: trackers, tests
        self.checkpoints = trial_checkpoints(spec, self.run_dir)
        self.resumed: dict[str, Any] | None = None  # the loop state a checkpoint restored
        # The progress file's heartbeat (bench/train/progress.py), in a run folder only.
        self.heartbeat = Heartbeat(self.run_dir, spec.trial_id) if self.run_dir else None

    # ---- setup: data, method, model, profiling -------------------------------------

    def setup(self) -> None:
        spec, cfg, record = self.spec, self.spec.train, self.record
        t_load = time.perf_counter()
        seed_everything(spec.seed)
        self.task = get_task(spec.task, spec.task_config)
        method_cls = load_method(spec.method)
        config = spec.method_config  # built and validated where the spec was made
        if isinstance(config, dict):  # a plugin this process had not found when it was made
            config = build(method_cls.config_class, config, spec.method)
        self.method = method_cls(config)
        self.precision = precision.resolve(cfg.precision, cfg.dtype, self.device.type)
        if self.precision.warning:
            record.warnings = [self.precision.warning]
        self.loss_fn = precision.loss_in(self.precision, self.device, causal_lm_loss)
        self.model, self.tokenizer, info = models.load(
            spec.model, dtype=self.precision.weights_dtype, device=self.device
        )
        self.model = self.place(self.model)
        if self.heartbeat is not None:  # forward passes outside the steps are progress
            self.heartbeat.attach(self.model)
        record.model_info = {
            "parameters": info.parameters,
            "dtype": info.dtype,
            "precision": self.precision.name,
        }
        self.examples = self.task.train_examples()[: cfg.train_examples]
        # Fails here, before training, when a target alone cannot fit max_length.
        cut = truncation_counts(self.examples, self.tokenizer, cfg.max_length)
        record.truncation = {"train": cut.to_dict()}
        if cut.prompt_truncated:
            log.info(
                "%s: %d of %d training prompts cut from the left to fit max_length %d",
                spec.trial_id,
                cut.prompt_truncated,
                cut.examples,
                cut.max_length,
            )
        self.steps = cfg.steps if method_cls.trains else 0

        self.profile_stream = self._stream(PROFILE_SEED_OFFSET)
        ctx = TrainContext(
            total_steps=self.steps,
            seed=spec.seed,
            device=self.device,
            loss_fn=self.loss_fn,
            sample_batches=lambda n: [self._collate(next(self.profile_stream)) for _ in range(n)],
        )
        record.load_seconds = time.perf_counter() - t_load
        self.weights_at_load = tensor_bytes([*self.model.parameters(), *self.model.buffers()])
        log.info(
            "%s loaded in %.1f s, training %d steps", spec.trial_id, record.load_seconds, self.steps
        )
        self.dev_batches = self._dev_batches()
        self.meter = MemoryMeter(self.device)
        release_freed_memory()  # the window starts after loading's temporaries are gone
        self.meter.start(self.weights_at_load)
        t_setup = time.perf_counter()
        self.model = self.method.setup(self.model, ctx)
        record.setup_seconds = time.perf_counter() - t_setup
        self.resumed = self._resume()

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """Where the loaded model lives: on self.device, as loaded. A trial over several
        devices overrides it (bench/train/distributed.py: FSDP2 shards, device maps)."""
        return model

    def _stream(self, seed_offset: int = 0, skip: int = 0) -> CountedStream:
        """A seeded batch stream of the training examples, `skip` batches in."""
        cfg = self.spec.train
        return CountedStream(self.examples, cfg.batch_size, self.spec.seed + seed_offset, skip)

    def _resume(self) -> dict[str, Any] | None:
        """Load the trial's newest checkpoint that loads, if a run before this one left one
        (a retry, a resumed sweep), into the model and the method, and return its loop
        state. A checkpoint that does not load is skipped with a warning naming its
        folder and file (in the log and the record's warnings), for the next older one,
        or step 0."""
        ckpt = self.checkpoints
        found = ckpt.complete() if ckpt and self.steps else []
        try:
            if found and not resumable(self.method):
                log.warning(
                    "%s: %s cannot resume; training from step 0", self.spec.trial_id, found[0]
                )
                return None
            for folder in found:
                try:
                    loop = ckpt.load(folder, self.model, self.method)
                except UnreadableCheckpoint as e:
                    ckpt.skip(e)
                    continue
                self.profile_stream = self._stream(
                    PROFILE_SEED_OFFSET, skip=loop["streams"]["profile"]
                )
                log.info("%s resumes from step %d (%s)", self.spec.trial_id, loop["step"], folder)
                return loop
            return None
        finally:
            if ckpt and ckpt.skipped:
                self.record.warnings = [*(self.record.warnings or []), *ckpt.skipped]

    def _collate(self, batch: list) -> dict[str, torch.Tensor]:
        return collate(batch, self.tokenizer, self.spec.train.max_length, self.device)

    def _dev_batches(self) -> list[dict[str, torch.Tensor]]:
        """The fixed dev batches of every evaluation point: the first ones of dev."""
        dev = self.spec.dev
        if not dev.eval_every or not self.steps:
            return []
        size = dev.batch_size or self.spec.train.batch_size
        examples = self.task.dev_examples()[: dev.batches * size]
        cut = truncation_counts(examples, self.tokenizer, self.spec.train.max_length)
        self.record.truncation = {**(self.record.truncation or {}), "dev": cut.to_dict()}
        return [self._collate(examples[i : i + size]) for i in range(0, len(examples), size)]

    def _dev_evaluator(self) -> DevEvaluator | None:
        dev, spec = self.spec.dev, self.spec
        if not self.dev_batches:
            return None

        def score() -> float:
            with precision.compute(self.precision, self.device):
                return evaluate(
                    self.model,
                    self.tokenizer,
                    self.task,
                    limit=dev.limit,
                    batch_size=spec.eval.batch_size,
                    max_gen_toks=dev.max_gen_toks or spec.eval.max_gen_toks,
                    split="dev",
                ).score

        return DevEvaluator(
            dev.eval_every,
            model_ref=lambda: self.model,
            batches=self.dev_batches,
            loss_fn=self.loss_fn,
            score=score if dev.score else None,
        )

    def trial_hooks(self, bar: Any = None) -> Hooks:
        """Every hook of this trial's loop, in one list: the built-in observers, the
        run folder's files (metrics stream, progress for the driver) and the caller's."""
        self.extras = StepExtraRecorder()
        hooks: list[Hook] = [DivergenceGuard(), ConsoleLog(bar), self.extras]
        if self.run_dir is not None:
            trial_id = self.spec.trial_id
            hooks.append(MetricsFile(self.run_dir / "metrics" / f"{trial_id}.jsonl"))
            hooks.append(ProgressFile(self.run_dir, trial_id, self.heartbeat))
        return Hooks([*hooks, *self.extra_hooks])

    # ---- train: the loop, on the train clock ----------------------------------------

    def train(self) -> None:
        spec, record, steps = self.spec, self.record, self.steps
        log_every, ckpt = spec.train.log_every, self.checkpoints
        stream = self._stream()
        clock = TrainClock()
        state = LoopState(record=record, total_steps=steps, clock=clock)
        start = self.resumed["step"] if self.resumed else 0
        bar = tqdm(
            range(start, steps),
            initial=start,
            total=steps,
            desc=spec.trial_id[:48],
            disable=not self.progress,
            leave=False,
        )
        hooks = self.trial_hooks(bar)
        evaluator = self._dev_evaluator()
        window: list[float] = []  # losses since the last curve point
        if self.resumed:  # where the checkpoint left: data, random states, curves, clock
            stream = self._restore(state, window)
        elif evaluator:  # step 0: where every method starts
            hooks.on_eval_point(state, evaluator.measure(state))
        clock.start(*(self.resumed["clock"] if self.resumed else (0.0, 0.0)))
        beat = self.heartbeat
        if beat is not None:  # inside the loop only a finished step is progress
            beat.write(phase="training", step=start, total_steps=steps)
            beat.armed = False
        for step in bar:
            batch = self._collate(next(stream))
            state.tokens += int(batch["attention_mask"].sum())
            stats = self.method.step(batch, step)
            state.step = step + 1
            state.passes["forward"] += stats.forward_passes
            state.passes["backward"] += stats.backward_passes
            hooks.on_step(state, stats)
            window.append(stats.loss)
            if state.step % log_every == 0 or state.step == steps:
                point = loss_point(state, window)
                record.curve.append(point)
                window.clear()
                hooks.on_log(state, point)
            if evaluator and evaluator.due(state):
                with beat.forwards_count() if beat else contextlib.nullcontext():
                    dev_point = evaluator.measure(state)
                hooks.on_eval_point(state, dev_point)
            if ckpt and ckpt.due(state.step, steps):  # off the train clock
                loop = self._loop_state(state, stream, window)
                with clock.paused():
                    self._checkpoint(loop, final=False)
        if beat is not None:
            beat.armed = True
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        final = self._loop_state(state, stream, window) if self._final_due() else None
        record.train_seconds = clock.seconds
        record.dev_eval_seconds = self._dev_eval_seconds(clock) if evaluator else None
        hooks.on_end(state)
        record.passes = dict(state.passes)
        record.steps = steps
        record.steps_per_second = steps / record.train_seconds if steps else None
        record.tokens_per_second = state.tokens / record.train_seconds if steps else None
        self._read_memory()
        record.method_summary = self.method.summary()
        if final is not None:  # after the memory reading: writing is no part of training
            self._checkpoint(final, final=True)

    # ---- checkpoints: what the loop saves and restores (bench/train/checkpoint.py) ---

    def _checkpoint(self, loop: dict[str, Any], *, final: bool) -> None:
        assert self.checkpoints is not None
        self.checkpoints.write(
            loop["step"], self.model, self.tokenizer, self.method, loop, final=final
        )

    def _final_due(self) -> bool:
        ckpt = self.checkpoints
        return bool(ckpt and ckpt.final and ckpt.resumed_from != ckpt.folder)

    def _dev_eval_seconds(self, clock: TrainClock) -> float:
        """Evaluation points' time so far: the clock's pauses less checkpoint writing,
        plus what the segments before a resume spent."""
        before = self.resumed["dev_eval_seconds"] if self.resumed else 0.0
        writing = self.checkpoints.write_seconds if self.checkpoints else 0.0
        return before + clock.paused_seconds - writing

    def _loop_state(
        self, state: LoopState, stream: CountedStream, window: list[float]
    ) -> dict[str, Any]:
        """Everything the loop needs to continue after `state.step` steps."""
        record = self.record
        return {
            "step": state.step,
            "tokens": state.tokens,
            "passes": dict(state.passes),
            "curve": list(record.curve),
            "eval_curve": list(record.eval_curve),
            "window": list(window),
            "step_extra": {k: list(v) for k, v in self.extras.columns.items()},
            "clock": (state.clock.seconds, state.clock.cpu_seconds),
            "dev_eval_seconds": self._dev_eval_seconds(state.clock),
            "streams": {"train": stream.drawn, "profile": self.profile_stream.drawn},
            "rng": rng_states(),
        }

    def _restore(self, state: LoopState, window: list[float]) -> CountedStream:
        """Put the loop back where `self.resumed` (a loop state) left it; returns the
        training stream at its position."""
        loop, record = self.resumed, self.record
        state.step, state.tokens, state.passes = loop["step"], loop["tokens"], loop["passes"]
        record.curve, record.eval_curve = list(loop["curve"]), list(loop["eval_curve"])
        window[:] = loop["window"]
        self.extras.columns = {k: list(v) for k, v in loop["step_extra"].items()}
        set_rng_states(loop["rng"])
        return self._stream(skip=loop["streams"]["train"])

    def _read_memory(self) -> None:
        record = self.record
        record.memory = self.meter.read()
        record.peak_memory_bytes = record.memory["reported_bytes"]
        try:
            record.memory["breakdown"] = memory_breakdown(
                self.model,
                self.method,
                record.memory,
                self.weights_at_load,
                backward=record.passes["backward"] > 0,
            )
        except Exception as e:  # an estimate must never fail a finished training run
            record.memory["breakdown"] = {"error": f"{type(e).__name__}: {e}"}

    # ---- measure: the trained solution, on fixed training batches ------------------

    def measure(self) -> None:
        cfg = self.spec.measure
        if not cfg.sharpness:
            return
        if self.heartbeat is not None:  # its own phase on the live display
            self.heartbeat.write(phase="sharpness")
        # The same first training examples for every method and seed (paired), in fp32
        # with autocast off: the plain loss, not the precision-wrapped self.loss_fn.
        size = cfg.batch_size
        examples = self.task.train_examples()[: cfg.examples]
        batches = [self._collate(examples[i : i + size]) for i in range(0, len(examples), size)]

        def loss_on(model: torch.nn.Module) -> torch.Tensor:
            return sum(causal_lm_loss(model, b) for b in batches) / len(batches)

        with preserved_rng():
            self.record.sharpness = measure_sharpness(self.model, loss_on, cfg)
        log.info(
            "%s sharpness: random-direction %.4g, top Hessian eigenvalue %s (%.1f s)",
            self.spec.trial_id,
            self.record.sharpness["random_direction"]["mean_rise"],
            (self.record.sharpness.get("hessian") or {}).get("top_eigenvalue"),
            self.record.sharpness["seconds"],
        )

    # ---- evaluate: the test set, once ----------------------------------------------

    def evaluate(self) -> None:
        if self.heartbeat is not None:  # its own phase on the live display
            self.heartbeat.write(phase="scoring")
        t1 = time.perf_counter()
        with precision.compute(self.precision, self.device):
            result = self._evaluate_test()
        self.record.eval_seconds = time.perf_counter() - t1
        self.record.score = result.score
        self.record.metrics = result.metrics
        self.record.eval_samples = result.n_samples
        if self.run_dir is not None:  # per-document records, for `hizfo-bench show`
            write_samples(self.run_dir, self.spec.trial_id, result.samples)

    def _evaluate_test(self):
        return evaluate(
            self.model,
            self.tokenizer,
            self.task,
            limit=self.spec.eval.limit,
            batch_size=self.spec.eval.batch_size,
            max_gen_toks=self.spec.eval.max_gen_toks,
        )


def run_trial(
    spec: TrialSpec,
    *,
    progress: bool = False,
    run_dir: Path | None = None,
    tracker: str = "none",
    hooks: list[Hook] | None = None,
    recipe: TrialRecipe | None = None,
) -> dict[str, Any]:
    """Run one trial and return its result record (bench/record.py); never raises.

    With `run_dir`, the trial's side files go there (progress, samples, tracker runs,
    checkpoints), and a checkpoint a previous attempt left there is resumed from;
    `tracker` is none | tensorboard | wandb (bench/train/trackers.py); `hooks` are extra
    loop hooks (bench/train/hooks.py); `recipe`, a recipe built by the caller (a trial
    over several devices, bench/train/distributed.py) instead of a TrialRecipe here.
    """
    t0 = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if recipe is None:
        recipe = TrialRecipe(spec, device, progress=progress, run_dir=run_dir, hooks=hooks)
    record = recipe.record
    try:
        recipe.extra_hooks += tracker_hooks(tracker, run_dir, spec.trial_id, spec.to_dict())
        recipe.setup()
        recipe.train()
        if spec.phase == "final":  # tuning and target-setting trials: dev only, never
            recipe.measure()  # sharpness or test
            recipe.evaluate()
        record.status = "ok"
        if recipe.checkpoints:  # the final one stays; the intermediate ones are done with
            recipe.checkpoints.finish()
    except Exception as e:  # a failed trial is a result, not a crash
        record.error = f"{type(e).__name__}: {e}"
        record.traceback = traceback.format_exc(limit=20)
        log.error("trial %s failed: %s", spec.trial_id, record.error)
    if recipe.checkpoints and recipe.checkpoints.used:
        record.checkpoint = recipe.checkpoints.summary()
    record.total_seconds = time.perf_counter() - t0
    if record.ok and record.score is not None:
        log.info(
            "%s done: score %.4f, train %.1f s, eval %.1f s, total %.1f s",
            spec.trial_id,
            record.score,
            record.train_seconds,
            record.eval_seconds,
            record.total_seconds,
        )
    return record.to_dict()
