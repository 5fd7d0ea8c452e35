"""One trial: load the model, train it with one method on one task, score it, measure.

`run_trial` never raises for a failure inside the trial: it returns a record with
status "failed" and the reason, so one bad trial cannot stop a sweep.

Measurements (the exact definitions the report relies on):
- train_seconds: wall-clock of the training loop only (batches, steps and, on GPU,
  a synchronise at the end); model loading, method setup and evaluation excluded.
  Method setup (e.g. Hi-ZFO's importance profiling) is timed as setup_seconds.
- eval_seconds: wall-clock of the lm-eval scoring.
- peak_memory_bytes: on GPU, torch.cuda.max_memory_allocated over setup and training,
  reset after the model is loaded (so it includes the weights); on CPU, the peak
  resident set size during setup and training minus the resident size once the model
  is loaded, i.e. what training adds on top of the loaded model. `memory.kind` says
  which one a record holds.
"""

from __future__ import annotations

import logging
import math
import platform
import random
import subprocess
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from bench.store import SCHEMA
from bench.suite import TrialSpec

log = logging.getLogger("hizfo_bench.trial")


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


# ---- measurement helpers -------------------------------------------------------------


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_cpu_peak() -> None:
    # Writing 5 to clear_refs resets VmHWM (the peak RSS) to the current RSS (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")


class MemoryMeter:
    """Peak memory over a window that starts when `start` is called."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_rss_added"
        self.baseline = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:
            _reset_cpu_peak()
            self.baseline = _proc_status_bytes("VmRSS")

    def read(self) -> dict[str, Any]:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
            return {
                "kind": self.kind,
                "baseline_bytes": self.baseline,
                "peak_bytes": peak,
                "reported_bytes": peak,
            }
        peak = _proc_status_bytes("VmHWM")
        return {
            "kind": self.kind,
            "baseline_bytes": self.baseline,
            "peak_bytes": peak,
            "reported_bytes": max(peak - self.baseline, 0),
        }


def environment(device: torch.device) -> dict[str, Any]:
    versions = {}
    for dist in ("torch", "transformers", "lm_eval", "ray", "peft", "datasets", "hizfo-bench"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=repo,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": str(device),
        "device_name": device_name,
        "torch_threads": torch.get_num_threads(),
        "git_commit": commit,
        "git_dirty": dirty,
        "hostname": platform.node(),
    }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy ships with the dependencies
        pass


# ---- the trial -----------------------------------------------------------------------


def new_record(spec: TrialSpec, device: torch.device) -> dict[str, Any]:
    """A record with every contract field, marked failed until the trial succeeds."""
    return {
        "schema": SCHEMA,
        "trial_id": spec.trial_id,
        "method": spec.method,
        "task": spec.task,
        "model": spec.model,
        "seed": spec.seed,
        "status": "failed",
        "error": None,
        "score": None,
        "metrics": {},
        "train_seconds": None,
        "eval_seconds": None,
        "setup_seconds": None,
        "peak_memory_bytes": None,
        "memory": None,
        "steps": 0,
        "passes": {"forward": 0, "backward": 0},
        "tokens_per_second": None,
        "curve": [],
        "config": spec.to_dict(),
        "environment": environment(device),
        "method_summary": {},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def failed_record(spec: TrialSpec, error: str) -> dict[str, Any]:
    """The record of a trial whose worker never returned (it died, or Ray failed)."""
    record = new_record(spec, torch.device("cpu"))
    record["error"] = error
    return record


def run_trial(spec: TrialSpec, *, progress: bool = False) -> dict[str, Any]:
    """Run one trial and return its result record (DESIGN.md §7); never raises."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    record = new_record(spec, device)
    try:
        _train_and_score(spec, device, record, progress=progress)
        record["status"] = "ok"
    except Exception as e:  # a failed trial is a result, not a crash
        record["error"] = f"{type(e).__name__}: {e}"
        record["traceback"] = traceback.format_exc(limit=20)
        log.error("trial %s failed: %s", spec.trial_id, record["error"])
    return record


def _train_and_score(
    spec: TrialSpec, device: torch.device, record: dict[str, Any], *, progress: bool
) -> None:
    from tqdm.auto import tqdm

    from bench import models
    from bench.config import build
    from bench.data import batch_stream, collate
    from bench.evaluate import evaluate
    from bench.method import TrainContext
    from bench.registry import load_method
    from bench.tasks import get_task

    seed_everything(spec.seed)
    task = get_task(spec.task)
    method_cls = load_method(spec.method)
    method = method_cls(build(method_cls.config_class, spec.method_config, spec.method))
    model, tokenizer, info = models.load(spec.model, dtype=spec.train.dtype, device=device)
    record["model_info"] = {"parameters": info.parameters, "dtype": info.dtype}

    examples = task.train_examples()[: spec.train.train_examples]
    cfg = spec.train
    steps = cfg.steps if method_cls.trains else 0

    def collate_on_device(batch: list) -> dict[str, torch.Tensor]:
        return collate(batch, tokenizer, cfg.max_length, device)

    profile_stream = batch_stream(examples, cfg.batch_size, seed=spec.seed + 10_007)
    ctx = TrainContext(
        total_steps=steps,
        seed=spec.seed,
        device=device,
        sample_batches=lambda n: [collate_on_device(next(profile_stream)) for _ in range(n)],
    )
    meter = MemoryMeter(device)
    meter.start()
    t_setup = time.perf_counter()
    model = method.setup(model, ctx)
    record["setup_seconds"] = time.perf_counter() - t_setup

    stream = batch_stream(examples, cfg.batch_size, seed=spec.seed)
    window: list[float] = []
    tokens = 0
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=spec.trial_id[:48], disable=not progress, leave=False)
    for step in bar:
        batch = collate_on_device(next(stream))
        tokens += int(batch["attention_mask"].sum())
        stats = method.step(batch, step)
        if not math.isfinite(stats.loss):
            raise DivergenceError(f"training loss is {stats.loss} at step {step}")
        record["passes"]["forward"] += stats.forward_passes
        record["passes"]["backward"] += stats.backward_passes
        window.append(stats.loss)
        if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
            elapsed = time.perf_counter() - t0
            mean = sum(window) / len(window)
            record["curve"].append({"step": step + 1, "loss": mean, "seconds": elapsed})
            window.clear()
            bar.set_postfix(loss=f"{mean:.4f}")
            log.info(
                "%s step %d/%d loss %.4f (%.2f s/step)",
                spec.trial_id,
                step + 1,
                steps,
                mean,
                elapsed / (step + 1),
            )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    record["train_seconds"] = time.perf_counter() - t0
    record["steps"] = steps
    record["tokens_per_second"] = tokens / record["train_seconds"] if steps else None
    record["memory"] = meter.read()
    record["peak_memory_bytes"] = record["memory"]["reported_bytes"]
    record["method_summary"] = method.summary()

    t1 = time.perf_counter()
    result = evaluate(
        model,
        tokenizer,
        task,
        limit=spec.eval.limit,
        batch_size=spec.eval.batch_size,
        max_gen_toks=spec.eval.max_gen_toks,
    )
    record["eval_seconds"] = time.perf_counter() - t1
    record["score"] = result.score
    record["metrics"] = result.metrics
    record["eval_samples"] = result.n_samples
