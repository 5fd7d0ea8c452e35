"""TrialRecord: the result contract, defined once.

One JSON file per trial (``<run>/trials/<trial_id>.json``) holds one TrialRecord.
Trials, perf, the store, reports, compare and the tests' builders all go through this
class, so the fields below are the whole contract (docs/results.md explains each).
Bump SCHEMA when a field changes meaning; a new optional field does not need a bump.

Readers get a typed object: ``validate_record`` (through ``store.read_trials`` and
compare's ``load_records``) is the one check a trial file passes before anyone reads it
(report, compare, resume, show), and returns the TrialRecord: every required field
present, every field of the type annotated here (strictly: ``true`` is not a number,
``"3"`` not an int), ``status`` "ok" or "failed", and ``schema`` no newer than SCHEMA.
Fields this version does not know (written by a newer version, or added by hand) are
kept in ``extra`` and written back unchanged, so a round trip never loses data. The
field lists (REQUIRED_FIELDS, FRAME_COLUMNS) derive from the fields' metadata below, and
tests/packages/bench/test_record_docs.py holds docs/results.md's table to the fields.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import typing
from dataclasses import dataclass, field
from typing import Any

SCHEMA = 1

# Field metadata: a field every trial file must have (REQUIRED_FIELDS), and a field that is
# a column of the trial DataFrame (FRAME_COLUMNS; "column" names it when it is derived).
_REQUIRED = {"required": True}
_COLUMN = {"column": True}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class TrialRecord:
    """Everything one trial produced. Times are seconds, memory bytes, scores 0..1.

    Attributes:
        schema: version of this contract (SCHEMA).
        trial_id: readable id derived from the whole trial spec (equal specs, equal ids).
        method, task, model, seed: what ran.
        status: "ok" or "failed"; a record starts as "failed" until the trial finishes.
        error: one line saying why it failed, or None.
        score: the task's primary metric on the test set (0..1), None if not scored.
        metrics: every metric lm-eval reported, by name (stderr included).
        train_seconds: the train clock: the training loop only (docs/results.md).
        eval_seconds: lm-eval scoring of the test set.
        load_seconds, setup_seconds, total_seconds: loading, the method's setup (e.g.
            importance profiling) and the whole trial in the worker.
        peak_memory_bytes: the figure tables use; ``memory`` says which kind it is.
        memory: the meter's readings and the breakdown estimate.
        steps: optimisation steps run.
        passes: forward and backward passes over the whole training loop; where the method
            reports them, backward_equivalent (backward passes weighted by the share of
            a full backward each ran) and z_draws (passes over ZO weights drawing z).
        steps_per_second, tokens_per_second: throughput on the train clock.
        curve: training loss points, [{step, loss, seconds}], seconds on the train clock.
        eval_curve: evaluation points on dev, [{step, seconds, eval_seconds, forward,
            backward, dev_loss, dev_score}] (bench/train/evalpoints.py); [] when the suite
            sets no dev.eval_every.
        dev_eval_seconds: time spent in evaluation points (outside the train clock).
        time_to_target: when the trial first reached its task's dev target
            (bench/analysis/targets.py): {target, reached, seconds, steps, forward,
            backward}; None when the suite names no target.
        sharpness: sharpness of the trained solution (bench/measure/sharpness.py), None
            unless the suite measures it.
        warnings: things a reader of the numbers must know (e.g. pure low-precision
            training), or None.
        step_extra: what the method reported per step (StepStats.extra), one list per
            key, e.g. MeZO's projected gradients (its trajectory, with the seed).
        config: the trial spec (everything needed to re-run it).
        environment: versions, device, machine fingerprint, git commit.
        method_summary: what the method reports about itself (e.g. Hi-ZFO's FO set).
        started_at: local time the record was made (ISO 8601).
        model_info: parameter count and dtype of the loaded model.
        truncation: the examples whose prompt was cut from the left to fit
            train.max_length (bench/data.py), {"train": {examples, prompt_truncated,
            max_length}, "dev": {...}}; None for records made before it existed.
        eval_samples: test documents scored.
        traceback: the failure's traceback, when it failed inside the worker.
        worker: where and how the trial ran (pid, node, resources, start-up costs).
        attempts: how many times the sweep ran the trial (a worker that dies is retried):
            {count, lost_seconds (time the attempts before the final one ran), each:
            [{attempt, start, end (Unix seconds), seconds, worker {pid, host} or None,
            outcome ("ok", "failed" or "worker died: <error>")}]}; total_seconds is the
            final attempt's. None for trials not run by a sweep (perf, tests).
        checkpoint: the trial's checkpoints (bench/train/checkpoint.py): {path (the
            final checkpoint's folder relative to the run, or None), save_every,
            saved_steps, resumed_from_step (None unless it continued from a checkpoint),
            resumed_from, write_seconds}; None when it neither saved nor resumed.
        placement: where the trial ran (bench/train/distributed.py): {strategy (single,
            fsdp2 or device_map), processes, devices, backend}; None when it was not
            placed (a request the machine cannot meet) or ran outside a sweep's worker.
        step_seconds: perf rows (bench/perf/output.py): every timed round's step seconds,
            the samples `compare --history` tests step times on; None for trials.
        threads: perf rows: the torch threads the rounds ran with; None for trials.
        extra: fields this version does not know, kept for the round trip.
        read_keys: the keys of the object the record was read from (from_dict), None for
            a record made in code; not written (trials.csv flattens what a file holds).
    """

    trial_id: str = field(metadata=_REQUIRED | _COLUMN)
    method: str = field(metadata=_REQUIRED | _COLUMN)
    task: str = field(metadata=_REQUIRED | _COLUMN)
    model: str = field(metadata=_REQUIRED | _COLUMN)
    seed: int = field(metadata=_REQUIRED | _COLUMN)
    schema: int = field(default=SCHEMA, metadata=_REQUIRED)
    status: str = field(default="failed", metadata=_REQUIRED | _COLUMN)
    error: str | None = field(default=None, metadata=_REQUIRED | _COLUMN)
    score: float | None = field(default=None, metadata=_REQUIRED | _COLUMN)
    metrics: dict[str, Any] = field(default_factory=dict, metadata=_REQUIRED)
    train_seconds: float | None = field(default=None, metadata=_REQUIRED | _COLUMN)
    eval_seconds: float | None = field(default=None, metadata=_REQUIRED | _COLUMN)
    load_seconds: float | None = None
    setup_seconds: float | None = None
    total_seconds: float | None = field(default=None, metadata=_COLUMN)
    peak_memory_bytes: float | None = field(default=None, metadata=_REQUIRED | _COLUMN)
    memory: dict[str, Any] | None = field(default=None, metadata={"column": "memory_kind"})
    steps: int = field(default=0, metadata=_REQUIRED | _COLUMN)
    passes: dict[str, Any] | None = field(default_factory=lambda: {"forward": 0, "backward": 0})
    steps_per_second: float | None = field(default=None, metadata=_COLUMN)
    tokens_per_second: float | None = field(default=None, metadata=_COLUMN)
    curve: list[dict[str, Any]] = field(default_factory=list, metadata=_REQUIRED)
    eval_curve: list[dict[str, Any]] = field(default_factory=list)
    dev_eval_seconds: float | None = None
    time_to_target: dict[str, Any] | None = None
    sharpness: dict[str, Any] | None = None
    step_extra: dict[str, list[Any]] | None = None
    warnings: list[str] | None = None
    config: dict[str, Any] = field(default_factory=dict, metadata=_REQUIRED)
    environment: dict[str, Any] = field(default_factory=dict, metadata=_REQUIRED)
    method_summary: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=_now, metadata=_COLUMN)
    model_info: dict[str, Any] | None = None
    truncation: dict[str, Any] | None = None
    eval_samples: int | None = None
    traceback: str | None = None
    worker: dict[str, Any] | None = None
    attempts: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None
    placement: dict[str, Any] | None = None
    step_seconds: list[float] | None = None
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    read_keys: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    # Optional fields left out of the file while they hold None (keeps old files identical).
    _OMIT_WHEN_NONE = (
        "model_info",
        "eval_samples",
        "traceback",
        "worker",
        "dev_eval_seconds",
        "time_to_target",
        "sharpness",
        "step_extra",
        "warnings",
        "attempts",
        "checkpoint",
        "placement",
        "step_seconds",
        "threads",
    )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the trial file."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in NOT_WRITTEN:
                continue
            value = getattr(self, f.name)
            if value is None and f.name in self._OMIT_WHEN_NONE:
                continue
            out[f.name] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRecord:
        """A record from a trial file's object; unknown fields go to ``extra``.

        Raises ValueError when a required field is missing.
        """
        missing = [k for k in REQUIRED_FIELDS if k not in data]
        if missing:
            raise ValueError(f"trial record lacks {', '.join(missing)}")
        known = {f.name for f in dataclasses.fields(cls)} - set(NOT_WRITTEN)
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra, read_keys=tuple(data))

    def final_loss(self) -> float | None:
        """The last training-loss point of the curve, or None."""
        return float(self.curve[-1]["loss"]) if self.curve else None

    def to_row(self, run: str = "") -> dict[str, Any]:
        """One row of the trial DataFrame (FRAME_COLUMNS)."""
        row = {c: getattr(self, c, None) for c in FRAME_COLUMNS if hasattr(self, c)}
        row["memory_kind"] = (self.memory or {}).get("kind")
        row["phase"] = (self.config or {}).get("phase", "final")
        ttt = self.time_to_target or {}
        row["target_reached"] = ttt.get("reached") if ttt else None
        row["target_seconds"] = ttt.get("seconds") if ttt else None
        row["run"] = run
        return row


def _frame_columns() -> tuple[list[str], tuple[str, ...]]:
    """The trial DataFrame's columns, in the dataclass's order (a field marked a column,
    under its own name or the derived one its metadata names), then the columns `to_row`
    derives from the config, the target and the run; and those of them that are numbers."""
    hints = typing.get_type_hints(TrialRecord)
    columns: list[str] = []
    numeric: list[str] = []
    for f in dataclasses.fields(TrialRecord):
        name = f.metadata.get("column")
        if name is None:
            continue
        columns.append(f.name if name is True else name)
        if name is True and hints[f.name] == float | None:
            numeric.append(f.name)
    return [*columns, *_DERIVED_COLUMNS], (*numeric, "target_seconds")


# Fields of the object, not of the file: unknown fields (written as themselves) and the
# keys a record was read with.
NOT_WRITTEN = ("extra", "read_keys")

# Columns `to_row` derives from other fields (config's phase, time_to_target) and the run.
_DERIVED_COLUMNS = ("phase", "target_reached", "target_seconds", "run")

# Fields a trial file must have to be read as a trial at all.
REQUIRED_FIELDS = tuple(
    f.name for f in dataclasses.fields(TrialRecord) if f.metadata.get("required")
)
# Columns of the one-row-per-trial DataFrame that reports and the CLI read, and the numeric ones.
FRAME_COLUMNS, NUMERIC_COLUMNS = _frame_columns()


class ContractError(ValueError):
    """A trial file's object that breaks the contract; the message names the field.

    ``newer`` is set when the file's schema is newer than this code reads: nothing may
    read it, resume included (the others are skipped by reports and re-run by resume).
    """

    def __init__(self, message: str, *, newer: bool = False) -> None:
        super().__init__(message)
        self.newer = newer


@functools.cache
def _record_model() -> Any:
    """A pydantic model of TrialRecord's fields, derived from the dataclass (one definition):
    required fields as REQUIRED_FIELDS, the rest optional, unknown keys allowed (``extra``)."""
    import pydantic

    hints = typing.get_type_hints(TrialRecord)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(TrialRecord):
        if f.name in NOT_WRITTEN:
            continue
        kind = hints[f.name]
        if f.name == "status":
            kind = typing.Literal["ok", "failed"]
        elif f.name == "schema":
            kind = typing.Annotated[int, pydantic.Field(ge=1)]
        # An optional field may be absent (its default applies), null only where annotated so.
        spec = pydantic.Field(... if f.name in REQUIRED_FIELDS else None, alias=f.name)
        fields[f"{f.name}_"] = (kind, spec)  # "_": `schema` would shadow BaseModel.schema
    config = pydantic.ConfigDict(strict=True, extra="allow")
    return pydantic.create_model("TrialRecordContract", __config__=config, **fields)


def validate_record(data: Any) -> TrialRecord:
    """The trial file's object as a TrialRecord, or ContractError naming the first field that
    breaks the contract (``field 'memory': Input should be a valid dictionary (got [1, 2])``)."""
    import pydantic

    if not isinstance(data, dict):
        raise ContractError(f"not a trial record (a JSON {type(data).__name__}, not an object)")
    schema = data.get("schema")
    if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA:
        raise ContractError(
            f"schema {schema} is newer than this hizfo-bench reads (schema {SCHEMA}); "
            "read it with the hizfo-bench that wrote it",
            newer=True,
        )
    try:
        _record_model().model_validate(data)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(part) for part in err["loc"][:1])
        detail = ".".join(str(part) for part in err["loc"][1:] if isinstance(part, int))
        if err["type"] == "missing":
            raise ContractError(f"field {where!r} is missing") from None
        at = f" at {where}[{detail}]" if detail else ""
        raise ContractError(
            f"field {where!r}: {err['msg']}{at} (got {_short(err['input'])})"
        ) from None
    return TrialRecord.from_dict(data)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
