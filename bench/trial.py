"""One trial: load the model, train it with one method on one task, score it, measure.

`run_trial` never raises for a failure inside the trial: it returns a record with
status "failed" and the reason, so one bad trial cannot stop a sweep.

Measurements (the exact definitions the report relies on; all wall-clock times are
``time.perf_counter`` differences in the worker process):
- load_seconds: seeding, task data, method import and model loading (to the device).
- setup_seconds: the method's setup (e.g. Hi-ZFO's importance profiling).
- train_seconds: the training loop only: batching and collation, every step, the
  NaN check and the log lines, and on GPU a synchronise at the end. Loading, setup
  and evaluation are excluded.
- steps_per_second: steps / train_seconds. tokens_per_second: non-padding tokens of
  the training batches (attention_mask sum, prompt included) / train_seconds.
  Both null for a method that does not train.
- eval_seconds: wall-clock of the lm-eval scoring on the in-memory model.
- total_seconds: the whole trial in the worker, from run_trial's entry to its return
  (load + setup + train + eval + record keeping); what the sweep overhead is measured
  against.
- peak_memory_bytes (`memory.kind` says which one a record holds):
  - "cuda_max_allocated": torch.cuda.max_memory_allocated over setup and training,
    with the peak reset once the model is loaded, so it includes the weights.
    Allocator cache (reserved but unallocated memory) is not counted.
  - "cpu_rss_added": the worker's peak resident set size (VmHWM, reset through
    /proc/self/clear_refs once the model is loaded) minus its resident size at that
    moment: what setup and training add on top of the loaded model.
- memory.breakdown: estimates, computed from tensor sizes at the end of training
  (element size x numel, shared tensors counted once):
  - weights_bytes: parameters and buffers of the trained model, adapters included;
  - gradients_bytes: every parameter with requires_grad, as if its gradient were
    materialised (it is, at the peak of a backward pass); 0 without a backward pass;
  - optimizer_state_bytes: tensors in the state of every torch.optim.Optimizer the
    method holds, else the non-parameter tensors of method.state_dict();
  - activations_and_other_bytes: what the window added above the loaded model
    (peak_bytes - baseline_bytes, on either device) minus weights added by setup,
    gradients and optimizer state: activations, temporaries, buffers such as SPSA's
    noise, allocator slack and, on CPU, any other memory the process took.
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


def _tensor_bytes(tensors: Any) -> int:
    """Bytes held by `tensors`, each storage counted once (tied weights, views)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in tensors:
        key = (t.data_ptr(), t.numel())
        if t.data_ptr() and key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def _nested_tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _nested_tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _nested_tensors(v)]
    return []


def _find_optimizers(obj: Any, depth: int = 2) -> list[torch.optim.Optimizer]:
    """Optimizers a method holds as attributes, or attributes of its attributes."""
    found: list[torch.optim.Optimizer] = []
    values = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
    for v in values:
        if isinstance(v, torch.optim.Optimizer):
            found.append(v)
        elif isinstance(v, list | tuple):
            found.extend(o for o in v if isinstance(o, torch.optim.Optimizer))
        elif depth > 1 and not isinstance(v, torch.nn.Module | torch.Tensor | type):
            found.extend(_find_optimizers(v, depth - 1))
    return list({id(o): o for o in found}.values())


def memory_breakdown(
    model: torch.nn.Module,
    method: Any,
    memory: dict[str, Any],
    weights_at_load: int,
    *,
    backward: bool = True,
) -> dict[str, Any]:
    """Split the measured peak into weights, gradients, optimizer state and the rest.

    Estimates from tensor sizes (see the module docstring).
    """
    params = list(model.parameters())
    weights = _tensor_bytes([*params, *model.buffers()])
    # Without a backward pass no gradient exists, whatever requires_grad says.
    gradients = _tensor_bytes([p for p in params if p.requires_grad]) if backward else 0
    optimizers = _find_optimizers(method)
    if optimizers:
        state = [t for o in optimizers for s in o.state.values() for t in _nested_tensors(s)]
    else:
        try:
            state = _nested_tensors(method.state_dict())
        except Exception:  # a plugin's state_dict is not ours to debug here
            state = []
        param_ptrs = {p.data_ptr() for p in params}
        state = [t for t in state if t.data_ptr() not in param_ptrs]
    optimizer_state = _tensor_bytes(state)
    added_weights = max(weights - weights_at_load, 0)
    measured = memory["peak_bytes"] - memory["baseline_bytes"]  # what the window added
    return {
        "estimate": True,
        "weights_bytes": weights,
        "gradients_bytes": gradients,
        "optimizer_state_bytes": optimizer_state,
        "activations_and_other_bytes": max(
            measured - added_weights - gradients - optimizer_state, 0
        ),
    }


def _git_commit(repo: Path) -> tuple[str | None, bool | None]:
    """Commit of the clone this package runs from; None when it is not a clone's root
    (an installed wheel inside some unrelated repository must not report its commit)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        top = git("rev-parse", "--show-toplevel")
        if not top or Path(top).resolve() != repo.resolve():
            return None, None
        commit = git("rev-parse", "HEAD") or None
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, dirty


def environment(device: torch.device) -> dict[str, Any]:
    versions = {}
    for dist in ("torch", "transformers", "lm_eval", "ray", "peft", "datasets", "hizfo-bench"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    commit, dirty = _git_commit(Path(__file__).resolve().parent.parent)
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
        "load_seconds": None,
        "setup_seconds": None,
        "total_seconds": None,
        "peak_memory_bytes": None,
        "memory": None,
        "steps": 0,
        "passes": {"forward": 0, "backward": 0},
        "steps_per_second": None,
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
    t0 = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    record = new_record(spec, device)
    try:
        _train_and_score(spec, device, record, progress=progress)
        record["status"] = "ok"
    except Exception as e:  # a failed trial is a result, not a crash
        record["error"] = f"{type(e).__name__}: {e}"
        record["traceback"] = traceback.format_exc(limit=20)
        log.error("trial %s failed: %s", spec.trial_id, record["error"])
    record["total_seconds"] = time.perf_counter() - t0
    if record["status"] == "ok":
        log.info(
            "%s done: score %.4f, train %.1f s, eval %.1f s, total %.1f s",
            spec.trial_id,
            record["score"],
            record["train_seconds"],
            record["eval_seconds"],
            record["total_seconds"],
        )
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

    t_load = time.perf_counter()
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
    record["load_seconds"] = time.perf_counter() - t_load
    weights_at_load = _tensor_bytes([*model.parameters(), *model.buffers()])
    log.info("%s loaded in %.1f s, training %d steps", spec.trial_id, record["load_seconds"], steps)
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
    record["steps_per_second"] = steps / record["train_seconds"] if steps else None
    record["tokens_per_second"] = tokens / record["train_seconds"] if steps else None
    record["memory"] = meter.read()
    record["peak_memory_bytes"] = record["memory"]["reported_bytes"]
    try:
        record["memory"]["breakdown"] = memory_breakdown(
            model,
            method,
            record["memory"],
            weights_at_load,
            backward=record["passes"]["backward"] > 0,
        )
    except Exception as e:  # an estimate must never fail a finished training run
        record["memory"]["breakdown"] = {"error": f"{type(e).__name__}: {e}"}
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
