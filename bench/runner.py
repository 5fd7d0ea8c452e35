"""Run trials as Ray tasks: one trial per GPU where the cluster has GPUs, else per CPU slot.

Each trial runs in a fresh worker process (``max_calls=1``), so its memory figures
start clean and nothing leaks between methods. The driver writes every trial file as
soon as its result arrives, so an interrupted sweep keeps what finished, and a
second call on the same run directory skips those trials (resume).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import store
from bench.suite import TrialSpec

log = logging.getLogger("hizfo_bench.runner")

# Environment every trial worker gets: offline unless the user opted in to the hub.
_WORKER_ENV_KEYS = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HIZFO_BENCH_CACHE",
    "HF_HOME",
    "TOKENIZERS_PARALLELISM",
    "TRANSFORMERS_VERBOSITY",
)


@dataclass
class Resources:
    num_gpus: float  # per trial
    num_cpus: float  # per trial
    slots: int  # trials that can run at once


def plan_resources(cluster: dict[str, float], cpus_per_trial: int | None) -> Resources:
    """One GPU per trial when the cluster has GPUs; otherwise CPU slots.

    Asking for a GPU on a cluster without one would wait forever, so the choice is
    made from what the cluster reports.
    """
    gpus = int(cluster.get("GPU", 0))
    cpus = int(cluster.get("CPU", 1))
    if gpus > 0:
        per_cpu = cpus_per_trial or max(1, cpus // gpus)
        return Resources(num_gpus=1, num_cpus=min(per_cpu, cpus), slots=gpus)
    per_cpu = min(cpus_per_trial or 1, cpus)
    return Resources(num_gpus=0, num_cpus=per_cpu, slots=max(1, cpus // per_cpu))


def _worker_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _WORKER_ENV_KEYS if k in os.environ}
    # Workers log one line per `log_every` steps; library progress bars would flood the
    # driver's console through Ray's log forwarding.
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TQDM_DISABLE", "1")
    return env


def _execute(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Body of the Ray task: threads sized to the CPUs Ray gave this trial."""
    import ray
    import torch

    from bench.trial import run_trial

    assigned = ray.get_runtime_context().get_assigned_resources()
    torch.set_num_threads(max(1, int(assigned.get("CPU", 1))))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_trial(TrialSpec.from_dict(spec_dict))


def run_trials(
    specs: Sequence[TrialSpec],
    run_dir: Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_trial: int | None = None,
    max_retries: int = 2,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every spec not finished yet in `run_dir`; return the records of this call."""
    import ray
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    done = store.finished_ids(run_dir)
    todo = [s for s in specs if s.trial_id not in done]
    if len(todo) < len(specs):
        log.warning(
            "resuming %s: %d of %d trials already finished",
            run_dir,
            len(specs) - len(todo),
            len(specs),
        )
    if not todo:
        return []

    # Build built-in models once here, not in every worker at the same time.
    from bench.models import prepare

    for model in sorted({s.model for s in todo}):
        prepare(model)

    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": True,
            "runtime_env": {"env_vars": _worker_env()},
        }
        if address:
            kwargs["address"] = address
        elif num_cpus:
            kwargs["num_cpus"] = num_cpus
        ray.init(**kwargs)
    res = plan_resources(ray.cluster_resources(), cpus_per_trial)
    log.warning(
        "running %d trials, %d at a time (%s per trial)",
        len(todo),
        res.slots,
        f"{res.num_gpus:g} GPU" if res.num_gpus else f"{res.num_cpus:g} CPU",
    )
    remote = ray.remote(
        num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_calls=1, max_retries=max_retries
    )(_execute)

    pending = {remote.remote(s.to_dict()): s for s in todo}
    records: list[dict[str, Any]] = []
    failed = 0
    bar = tqdm(total=len(todo), desc="trials", unit="trial", disable=not progress)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(ready[0])
            try:
                record = ray.get(ready[0])
            except Exception as e:  # the worker died (after retries) or Ray failed
                from bench.trial import failed_record

                record = failed_record(spec, f"{type(e).__name__}: {e}")
            store.write_trial(run_dir, record)
            records.append(record)
            failed += record["status"] != "ok"
            bar.update(1)
            bar.set_postfix(running=min(len(pending), res.slots), failed=failed)
    finally:
        bar.close()
        if started_here:
            ray.shutdown()
    return records
