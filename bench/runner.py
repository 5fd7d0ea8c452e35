"""Run trials as Ray tasks: one trial per GPU where the cluster has GPUs, else per CPU slot.

Each trial runs in a fresh worker process (``max_calls=1``), so its memory figures
start clean and nothing leaks between methods. The driver writes every trial file as
soon as its result arrives, so an interrupted sweep keeps what finished, and a
second call on the same run directory skips those trials (resume). A worker that
dies (killed, out of memory, segfault) is retried ``max_retries`` times by Ray and
then recorded as failed; a trial that raises is recorded as failed by the worker
itself (bench.trial.run_trial never raises), so neither stops the sweep.

See docs/orchestration.md for the whole story, including multi-machine clusters.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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


class ResourceError(RuntimeError):
    """The cluster cannot hold even one trial with the resources asked for."""


@dataclass
class Resources:
    num_gpus: float  # per trial
    num_cpus: float  # per trial
    slots: int  # trials that can run at once


def plan_resources(
    nodes: Mapping[str, float] | Iterable[Mapping[str, float]], cpus_per_trial: int | None
) -> Resources:
    """One GPU per trial when the cluster has GPUs; otherwise CPU slots.

    `nodes` is the resource dict of each alive node (or one dict for the whole
    cluster). Asking for a GPU on a cluster without one would wait forever, so the
    choice is made from what the nodes report; CPUs per GPU trial come from the
    tightest GPU node, because a request no single node can satisfy also waits forever.
    """
    node_list = [nodes] if isinstance(nodes, Mapping) else list(nodes)
    gpu_nodes = [n for n in node_list if int(n.get("GPU", 0)) > 0]
    if gpu_nodes:
        fit = min(max(1, int(n.get("CPU", 0)) // int(n["GPU"])) for n in gpu_nodes)
        per_cpu = cpus_per_trial or fit
        biggest = max(int(n.get("CPU", 0)) for n in gpu_nodes)
        if per_cpu > biggest:
            raise ResourceError(
                f"{per_cpu} CPUs per trial, but the largest GPU node has {biggest} CPUs"
            )
        slots = sum(min(int(n["GPU"]), int(n.get("CPU", 0)) // per_cpu) for n in gpu_nodes)
        return Resources(num_gpus=1, num_cpus=per_cpu, slots=max(1, slots))
    per_cpu = cpus_per_trial or 1
    biggest = max((int(n.get("CPU", 0)) for n in node_list), default=0)
    if per_cpu > biggest:
        raise ResourceError(f"{per_cpu} CPUs per trial, but the largest node has {biggest} CPUs")
    slots = sum(int(n.get("CPU", 0)) // per_cpu for n in node_list)
    return Resources(num_gpus=0, num_cpus=per_cpu, slots=max(1, slots))


def _worker_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _WORKER_ENV_KEYS if k in os.environ}
    # Workers log one line per `log_every` steps; library progress bars would flood the
    # driver's console through Ray's log forwarding.
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TQDM_DISABLE", "1")
    return env


def _process_age_seconds() -> float | None:
    """Seconds since this process started (Linux), to see worker start-up cost."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _quiet_library_output() -> None:
    """Silence library progress bars and lm-eval's warnings in this (throwaway) worker.

    lm-eval passes ``disable=False`` to its tqdm bars explicitly, so TQDM_DISABLE
    cannot reach them; with ``max_calls=1`` the process serves one trial and exits,
    so forcing every bar off here touches nothing else. lm-eval's logger level is
    reset on every evaluation, so its warnings are dropped at the handler instead.
    """
    from tqdm import std

    original = std.tqdm.__init__

    def quiet_init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    std.tqdm.__init__ = quiet_init  # type: ignore[method-assign]

    def drop_lm_eval_warnings(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not record.name.startswith("lm_eval")

    for handler in logging.getLogger().handlers:
        handler.addFilter(drop_lm_eval_warnings)


def _execute(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Body of the Ray task: threads sized to the CPUs Ray gave this trial."""
    t0 = time.perf_counter()
    age = _process_age_seconds()
    import ray
    import torch

    from bench.trial import run_trial

    context = ray.get_runtime_context()
    assigned = context.get_assigned_resources()
    torch.set_num_threads(max(1, int(assigned.get("CPU", 1))))
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    _quiet_library_output()
    # Per-trial step progress goes to the driver through Ray's log forwarding; the
    # libraries stay at WARNING so their chatter does not drown it.
    logging.getLogger("hizfo_bench").setLevel(logging.INFO)
    import_seconds = time.perf_counter() - t0
    record = run_trial(TrialSpec.from_dict(spec_dict))
    record["worker"] = {
        "pid": os.getpid(),
        "node_id": context.get_node_id(),
        "assigned_resources": assigned,
        "process_age_at_start_seconds": age,  # spawn until the task body ran
        "import_seconds": import_seconds,  # torch + bench imports before the trial
    }
    return record


@dataclass
class Sweep:
    """What one call of `run_sweep` did, with the figures for the overhead estimate."""

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0  # trials already finished in the run directory
    slots: int = 0  # trials the cluster could run at once
    wall_seconds: float = 0.0  # the whole call: model preparation, Ray start, all trials
    startup_seconds: float = 0.0  # model preparation and Ray start, before the first submit

    def overhead(self) -> dict[str, float] | None:
        """Sweep wall-clock against (sum of trial times) / parallelism.

        Trial time is the worker's `total_seconds` (load + setup + train + eval).
        Parallelism is min(slots, trials run). The rest is orchestration: cluster
        start, worker start-up and imports, scheduling, idle slots at the tail and,
        on a shared machine, contention.
        """
        times = [r["total_seconds"] for r in self.records if r.get("total_seconds")]
        if not times:
            return None
        parallelism = max(1, min(self.slots, len(self.records)))
        ideal = sum(times) / parallelism
        return {
            "wall_seconds": self.wall_seconds,
            "startup_seconds": self.startup_seconds,
            "trial_seconds_sum": sum(times),
            "parallelism": parallelism,
            "ideal_seconds": ideal,
            # A lower bound no scheduler can beat: the longest trial.
            "critical_path_seconds": max(ideal, max(times)),
            "overhead_seconds": self.wall_seconds - ideal,
            "overhead_fraction": (self.wall_seconds - ideal) / self.wall_seconds,
        }


def _failure_message(e: Exception, max_retries: int) -> str:
    import ray.exceptions as rex

    first = (str(e).strip().splitlines() or [""])[0]
    if isinstance(e, rex.RayTaskError):
        # The task body raised outside run_trial (an import error in the worker, say).
        cause = e.cause if getattr(e, "cause", None) is not None else e
        return f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0]}"
    if isinstance(e, rex.WorkerCrashedError | rex.OutOfMemoryError | rex.NodeDiedError):
        return f"worker died, {max_retries + 1} attempts: {type(e).__name__}: {first}"
    return f"{type(e).__name__}: {first}"


def run_sweep(
    specs: Sequence[TrialSpec],
    run_dir: Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_trial: int | None = None,
    max_retries: int = 2,
    progress: bool = True,
) -> Sweep:
    """Run every spec not finished yet in `run_dir` on Ray.

    Uses the Ray session already initialised in this process if there is one (and
    leaves it running), else connects to `address`, else starts a local cluster with
    `num_cpus` CPUs (default: all) and stops it at the end.
    """
    import ray
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    sweep = Sweep()
    with store.run_dir_lock(run_dir):
        store.remove_temp_files(run_dir)
        done = store.finished_ids(run_dir)
        todo = [s for s in specs if s.trial_id not in done]
        sweep.skipped = len(specs) - len(todo)
        if sweep.skipped:
            log.warning(
                "resuming %s: %d of %d trials already finished",
                run_dir,
                sweep.skipped,
                len(specs),
            )
        if not todo:
            return sweep

        # Build built-in models once here, not in every worker at the same time.
        from bench.models import prepare

        for model in sorted({s.model for s in todo}):
            prepare(model)

        started_here = not ray.is_initialized()
        if started_here:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            # RAY_ADDRESS (set by `ray job submit`, or by hand) means an existing cluster.
            address = address or os.environ.get("RAY_ADDRESS") or None
            if address:
                kwargs["address"] = address
                if num_cpus:
                    log.warning("--num-cpus is ignored when connecting to an existing cluster")
            else:
                # Without "local", ray.init joins any `ray start` cluster on this machine
                # (someone else's, on a shared box) instead of starting our own.
                kwargs["address"] = "local"
                if num_cpus:
                    kwargs["num_cpus"] = num_cpus
            ray.init(**kwargs)
        pending: dict[Any, TrialSpec] = {}
        bar = None
        try:
            nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
            res = plan_resources(nodes, cpus_per_trial)
            sweep.slots = res.slots
            log.warning(
                "running %d trials, %d at a time (%s per trial)",
                len(todo),
                res.slots,
                f"1 GPU + {res.num_cpus:g} CPU" if res.num_gpus else f"{res.num_cpus:g} CPU",
            )
            # The env goes with each task (not only with ray.init) so it also reaches
            # workers of a cluster this process did not start.
            remote = ray.remote(
                num_cpus=res.num_cpus,
                num_gpus=res.num_gpus,
                max_calls=1,
                max_retries=max_retries,
                runtime_env={"env_vars": _worker_env()},
            )(_execute)
            sweep.startup_seconds = time.perf_counter() - t_start
            pending = {remote.remote(s.to_dict()): s for s in todo}
            failed = 0
            bar = tqdm(total=len(todo), desc="trials", unit="trial", disable=not progress)
            bar.set_postfix(running=min(len(pending), res.slots), failed=0)
            while pending:
                # A timeout, so that Ctrl-C reaches Python: a blocking wait swallows it.
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                if not ready:
                    continue
                spec = pending.pop(ready[0])
                try:
                    record = ray.get(ready[0])
                except Exception as e:  # the worker died (after retries) or Ray failed
                    from bench.trial import failed_record

                    record = failed_record(spec, _failure_message(e, max_retries))
                    record["traceback"] = str(e)
                store.write_trial(run_dir, record)
                sweep.records.append(record)
                failed += record["status"] != "ok"
                if record["status"] != "ok":
                    bar.write(f"failed: {spec.trial_id}: {record['error']}")
                bar.update(1)
                bar.set_postfix(running=min(len(pending), res.slots), failed=failed)
        finally:
            if bar is not None:
                bar.close()
            if started_here:
                ray.shutdown()
            else:
                # A cluster we did not start keeps running: do not leave our trials on it.
                for ref in pending:
                    ray.cancel(ref, force=True)
    sweep.wall_seconds = time.perf_counter() - t_start
    return sweep
