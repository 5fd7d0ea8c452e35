"""Score an in-memory model on a task through lm-eval's simple_evaluate.

Besides the aggregate metrics, the result keeps lm-eval's per-document records
(``log_samples``), one per test document: what the model saw and wrote, the target, and
every per-document metric under the same keys as the aggregates. Researchers read them
to see *why* a score moved (``hizfo-bench show``), and a paired bootstrap between two
trials needs each document's primary-metric value under a stable doc id.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.tasks.base import Task


@dataclass
class EvalResult:
    """What one lm-eval run on the test set produced.

    Attributes:
        score: the task's primary metric, 0..1.
        metrics: every aggregate metric lm-eval reported, by lm-eval key
            (``"exact_match,strict-match"``), stderr included.
        n_samples: test documents scored.
        samples: one dict per test document, ordered by ``doc_id``:
            ``doc_id`` (lm-eval's index in the test split), ``prompt``, ``generation``
            (the raw model output), ``filtered`` (the output after each filter, by filter
            name), ``target``, ``metrics`` (per-document values, same keys as
            ``metrics`` above) and ``score`` (the primary metric's value for this
            document, None when lm-eval gives it no number).
    """

    score: float
    metrics: dict[str, float] = field(default_factory=dict)
    n_samples: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)


def evaluate(
    model: torch.nn.Module,
    tokenizer,
    task: Task,
    *,
    limit: int | None,
    batch_size: int,
    max_gen_toks: int,
    split: str = "test",
) -> EvalResult:
    """Run the task's lm-eval config on `model` (no copy, no reload) and return its metrics.

    `split` is "test" (scored once, at the end of a trial) or "dev" (evaluation points).
    """
    import lm_eval
    import lm_eval.tasks
    from lm_eval.models.huggingface import HFLM

    for name in ("lm-eval", "lm_eval"):
        logging.getLogger(name).setLevel(logging.WARNING)

    was_training = model.training
    model.eval()
    try:
        with tempfile.TemporaryDirectory(prefix="hizfo-eval-") as tmp:
            task_name = task.write_lm_eval_task(Path(tmp), max_gen_toks=max_gen_toks, split=split)
            manager = lm_eval.tasks.TaskManager(include_path=tmp, include_defaults=False)
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=[task_name],
                limit=limit,
                task_manager=manager,
                log_samples=True,
                bootstrap_iters=1000,
                verbosity="WARNING",
            )
    finally:
        model.train(was_training)
    raw = out["results"][task_name]
    metrics = {
        k: float(v)
        for k, v in raw.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k != "alias"
    }
    metrics = {k: (v if math.isfinite(v) else float("nan")) for k, v in metrics.items()}
    if task.metric not in metrics:
        raise KeyError(
            f"lm-eval did not report {task.metric!r} for {task.name}; got {sorted(metrics)}"
        )
    n = out.get("n-samples", {}).get(task_name, {}).get("effective", 0)
    samples = per_document(out.get("samples", {}).get(task_name, []), task.metric)
    return EvalResult(
        score=metrics[task.metric], metrics=metrics, n_samples=int(n), samples=samples
    )


def _number(value: Any) -> float | None:
    """A per-document metric as a float, or None (some metrics log tuples for aggregation)."""
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> Any:
    """Unwrap lm-eval's one-element lists (one request per document, one response each)."""
    while isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    return value


def per_document(logged: Iterable[dict[str, Any]], primary: str) -> list[dict[str, Any]]:
    """Merge lm-eval's logged samples (one per document and filter) into one per document.

    `logged` is what simple_evaluate returns or what ``lm_eval --log_samples`` writes.

    lm-eval logs each document once per filter (``strict-match``, ``flexible-extract``),
    with the metric values under bare names (``exact_match``); the aggregates are keyed
    ``"<metric>,<filter>"``. Keying the per-document values the same way lets a reader
    pair a document's value with the aggregate it feeds.
    """
    docs: dict[Any, dict[str, Any]] = {}
    for sample in logged:
        doc_id = sample["doc_id"]
        filter_name = sample.get("filter", "none")
        arguments = sample.get("arguments") or [[""]]
        if isinstance(arguments, dict):  # as lm_eval --log_samples writes them to its file
            arguments = [list(request.values()) for request in arguments.values()]
        first = arguments[0] if arguments else [""]
        prompt = first[0] if isinstance(first, list | tuple) and first else first
        doc = docs.setdefault(
            doc_id,
            {
                "doc_id": doc_id,
                "prompt": prompt if isinstance(prompt, str) else str(prompt),
                "generation": _text(sample.get("resps")),
                "filtered": {},
                "target": sample.get("target"),
                "metrics": {},
                "score": None,
            },
        )
        doc["filtered"][filter_name] = _text(sample.get("filtered_resps"))
        for metric in sample.get("metrics", []):
            doc["metrics"][f"{metric},{filter_name}"] = _number(sample.get(metric))
    for doc in docs.values():
        doc["score"] = doc["metrics"].get(primary)
    return [docs[k] for k in sorted(docs, key=lambda k: (str(type(k)), k))]


def samples_path(run_dir: Path, trial_id: str) -> Path:
    """Where a trial's per-document records live: ``<run>/samples/<trial_id>.jsonl``."""
    return Path(run_dir) / "samples" / f"{trial_id}.jsonl"


def write_samples(run_dir: Path, trial_id: str, samples: list[dict[str, Any]]) -> Path:
    """Write one JSON line per document; atomically (temp file and rename), like trial files.

    A retried or resumed trial replaces the file whole, so a reader never sees two
    attempts mixed.
    """
    path = samples_path(run_dir, trial_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        for sample in samples:
            f.write(json.dumps(sample, default=str, ensure_ascii=False) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The per-document records of a samples file, in file order."""
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]
