"""The `jsonl` task type: a task from the user's own train/dev/test JSONL files.

A suite names it with its files (paths relative to the suite file)::

    tasks:
      my-task:
        type: jsonl
        train: data/train.jsonl
        dev: data/dev.jsonl
        test: data/test.jsonl
        metric: rouge_l                  # exact_match | rouge_l | f1 | pass@1
        family: generative               # generative | math | code
        fields: {prompt: question, target: answer}

Each line is one JSON object with a prompt and a target (field names mapped by
``fields``; a ``pass@1`` task also needs a ``test`` field: code run after prompt +
completion in the sandbox, failing by raising). Every line of the three files is checked
when the suite is read, so a bad file stops the run before anything starts, with one
line naming the file, the line and the field. The files' SHA-1 joins the trial spec, so
changed data is a new trial (resume never reuses results of other data), and a worker
refuses files that changed after the suite was checked. The trial id hashes that SHA-1,
not the files' paths: the same suite and data in another folder keep their trial ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from bench.config import ConfigError, build
from bench.tasks.base import (
    Example,
    Task,
    TaskDataError,
    TaskError,
    _FunctionRef,
)

# metric as a suite spells it -> (lm-eval metric name, process_results function kind)
METRICS = {
    "exact_match": "exact_match",
    "rouge_l": "rougeL",
    "rougeL": "rougeL",
    "f1": "f1",
    "pass@1": "pass@1",
}
FAMILIES = ("generative", "math", "code")
# Generation stops by family: one line for generative answers, a blank line for worked
# math answers, lm-eval's HumanEval stops for code (a function body).
DEFAULT_STOPS = {
    "generative": ["\n"],
    "math": ["\n\n", "Question:"],
    "code": ["\nclass", "\ndef", "\n#", "\nif", "\nprint"],
}
SPLITS = ("train", "dev", "test")


@dataclass
class JsonlConfig:
    """A task from JSONL files: one JSON object per line with a prompt and a target."""

    train: str | None = None  # training examples (the loss covers the target only)
    dev: str | None = None  # held-out examples: the dev loss, and documents for the dev score
    test: str | None = None  # documents scored once, at the end of a trial
    metric: str = "exact_match"  # exact_match | rouge_l | f1 | pass@1 (code run in the sandbox)
    family: str = "generative"  # generative | math | code: the table's column, default stops
    # Field names in the files: {prompt: ..., target: ..., test: ...}; unset ones keep their own.
    fields: dict[str, str] = field(default_factory=dict)
    stop: list[str] | None = None  # generation stop sequences; None = the family's
    target_delimiter: str | None = None  # put before the target in training; None: " ", code ""
    description: str = ""  # shown by `hizfo-bench tasks`-style listings and in reports
    digest: str | None = None  # SHA-1 of the three files; set when the suite is read


class JsonlTask(Task):
    """A task built from a suite entry with ``type: jsonl`` (see the module docstring)."""

    source = "offline"
    lm_eval_yaml = ""
    config_class = JsonlConfig
    path_keys = SPLITS
    description = "your own train/dev/test JSONL files (prompt, target; pass@1 also test)"

    task_type = "jsonl"  # the entry-point name; bench/tasks/registry.py sets the one used

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        where = f"task {name}"
        try:
            cfg = build(JsonlConfig, config, where)
        except ConfigError as e:
            raise TaskError(str(e)) from None
        missing = [s for s in SPLITS if not getattr(cfg, s)]
        if missing:
            raise TaskError(
                f"{where}: {', '.join(missing)} file(s) missing: a jsonl task needs "
                "train, dev and test (paths relative to the suite file)"
            )
        if cfg.metric not in METRICS:
            raise TaskError(f"{where}: metric {cfg.metric!r} is not one of {', '.join(METRICS)}")
        if cfg.family not in FAMILIES:
            raise TaskError(f"{where}: family {cfg.family!r} is not one of {', '.join(FAMILIES)}")
        if not isinstance(cfg.fields, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in cfg.fields.items()
        ):
            raise TaskError(f"{where}: fields must map prompt/target/test to field names")
        needed = ("prompt", "target", "test") if cfg.metric == "pass@1" else ("prompt", "target")
        unknown = sorted(set(cfg.fields) - set(needed))
        if unknown:
            raise TaskError(
                f"{where}: fields: unknown key(s) {', '.join(unknown)}; valid keys: "
                f"{', '.join(needed)}"
            )
        if cfg.stop is not None and not all(isinstance(s, str) and s for s in cfg.stop):
            raise TaskError(f"{where}: stop must be a list of non-empty strings")
        cfg.fields = {key: cfg.fields.get(key, key) for key in needed}
        if cfg.stop is None:
            cfg.stop = list(DEFAULT_STOPS[cfg.family])
        if cfg.target_delimiter is None:
            cfg.target_delimiter = "" if cfg.family == "code" else " "
        for split in SPLITS:
            path = Path(getattr(cfg, split))
            if path.is_dir():
                raise TaskDataError(
                    f"{where}: {split} file {str(path)!r} is a directory, not a JSONL file"
                )
            if not path.is_file():
                raise TaskDataError(f"{where}: {split} file {str(path)!r} does not exist")
        digest = _digest([Path(getattr(cfg, s)) for s in SPLITS])
        if cfg.digest is not None and cfg.digest != digest:
            raise TaskDataError(
                f"{where}: the data files changed after the suite was read "
                f"(SHA-1 {digest[:12]}, the spec says {cfg.digest[:12]}); run the suite again"
            )
        cfg.digest = digest
        self.name, self.config = name, cfg
        self.family = cfg.family
        self.metric = f"{METRICS[cfg.metric]},none"
        if cfg.description:
            self.description = cfg.description
        self.rows = {split: self._read(split) for split in SPLITS}

    @classmethod
    def labels(cls, config: dict[str, Any]) -> tuple[str, str]:
        """(family, primary metric key) from a spec's task_config, no file read."""
        metric = str(config.get("metric", "exact_match"))
        return str(config.get("family", "generative")), f"{METRICS.get(metric, metric)},none"

    def _read(self, split: str) -> tuple[dict[str, str], ...]:
        path = Path(getattr(self.config, split))
        stat = path.stat()
        items = tuple(sorted(self.config.fields.items()))
        return read_rows(str(path), stat.st_size, stat.st_mtime_ns, items)

    @classmethod
    def id_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The files' digest names the data, not where the files lie: the paths are left
        out of the trial id once the digest is set (moving the data keeps the ids)."""
        if not config.get("digest"):
            return dict(config)
        return {k: v for k, v in config.items() if k not in cls.path_keys}

    def spec_config(self) -> dict[str, Any]:
        """The resolved config (defaults filled in, files' SHA-1 set) the trial spec keeps."""
        return {"type": self.task_type, **asdict(self.config)}

    # ---- the Task contract ---------------------------------------------------------

    def _examples(self, split: str) -> list[Example]:
        delim = self.config.target_delimiter or ""
        return [Example(prompt=r["prompt"], target=delim + r["target"]) for r in self.rows[split]]

    def train_examples(self) -> list[Example]:
        return self._examples("train")

    def dev_examples(self) -> list[Example]:
        return self._examples("dev")

    def dev_documents(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.rows["dev"]]

    def eval_documents(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.rows["test"]]

    def check_available(self) -> None:
        if self.config.metric == "pass@1":
            from bench.tasks.code import check_sandbox

            check_sandbox()

    def lm_eval_config(self) -> dict[str, Any]:
        if self.config.metric == "pass@1":
            kind, metrics = "code", ["pass@1"]
        else:
            kind = "math" if self.family == "math" else "text"
            primary = METRICS[self.config.metric]
            metrics = [primary, *(m for m in ("rougeL", "f1", "exact_match") if m != primary)]
        return {
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {}},
            "output_type": "generate_until",
            "test_split": "test",
            "doc_to_text": "{{prompt}}",
            "doc_to_target": "{{target}}",
            "process_results": _FunctionRef(f"hizfo_task_functions.process_jsonl_{kind}"),
            "metric_list": [
                {"metric": m, "aggregation": "mean", "higher_is_better": True} for m in metrics
            ],
            "generation_kwargs": {"until": list(self.config.stop or []), "do_sample": False},
            "num_fewshot": 0,
            "metadata": {"version": 1.0},
        }


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha1()
    for path in paths:
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


@cache
def _no_constant(name: str) -> Any:
    """NaN, Infinity and -Infinity, which Python's json reads but JSON does not have: an
    answer of NaN would train on the text "nan"."""
    raise ValueError(f"{name} is not a JSON value")


def read_rows(
    path: str, size: int, mtime_ns: int, fields: tuple[tuple[str, str], ...]
) -> tuple[dict[str, str], ...]:
    """The rows of one JSONL file as {prompt, target[, test]} (cached by size and mtime);
    a bad line is a TaskDataError naming the file, the line and the field."""
    del size, mtime_ns  # cache keys only: a changed file is read again
    rows = []
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise TaskDataError(f"cannot read {path} ({e.strerror or e})") from None
    for lineno, raw in enumerate(data.splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TaskDataError(f"{path}:{lineno}: not UTF-8 ({e.reason})") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_no_constant)
        except ValueError as e:
            raise TaskDataError(f"{path}:{lineno}: not valid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise TaskDataError(
                f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
            )
        row = {}
        for key, name in fields:
            if name not in obj:
                have = ", ".join(sorted(obj)) or "none"
                raise TaskDataError(
                    f"{path}:{lineno}: field {name!r} ({key}) is missing (fields here: {have})"
                )
            value = obj[name]
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)  # a numeric answer reads as its text
            if not isinstance(value, str) or (key != "test" and not value.strip()):
                raise TaskDataError(
                    f"{path}:{lineno}: field {name!r} ({key}) must be non-empty text, "
                    f"got {json.dumps(value)[:40]}"
                )
            row[key] = value
        rows.append(row)
    if not rows:
        raise TaskDataError(f"{path}: holds no examples (one JSON object per line)")
    return tuple(rows)
