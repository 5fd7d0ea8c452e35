"""The Ray session of a sweep: start policy, resources per trial, and the worker body.

Apart from the sweep logic (bench/orchestrate/sweep.py), so a sweep reads as: plan,
submit, collect. See docs/orchestration.md for clusters and resources.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.orchestrate import signals
from bench.record import TrialRecord
from bench.spec import TrialSpec

log = logging.getLogger("hizfo_bench.sweep")

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


def _drop_lm_eval_warnings(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or not record.name.startswith("lm_eval")


def _quiet_library_output() -> None:
    """Silence library progress bars and lm-eval's warnings in this trial worker.

    lm-eval passes ``disable=False`` to its tqdm bars explicitly, so TQDM_DISABLE
    cannot reach them; a trial worker serves only trials (TRIALS_PER_WORKER of them), so
    forcing every bar off here touches nothing else. lm-eval's logger level is reset on
    every evaluation, so its warnings are dropped at the console handler instead (the
    trial log file keeps them). Idempotent: a worker calls it once per trial it serves.
    """
    from tqdm import std

    if not getattr(std.tqdm.__init__, "_hizfo_quiet", False):
        original = std.tqdm.__init__

        def quiet_init(self: Any, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            original(self, *args, **kwargs)

        quiet_init._hizfo_quiet = True  # type: ignore[attr-defined]
        std.tqdm.__init__ = quiet_init  # type: ignore[method-assign]

    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):  # the trial log keeps them
            handler.addFilter(_drop_lm_eval_warnings)  # a filter is added once


def _console_filter(record: logging.LogRecord) -> bool:
    """Library FutureWarnings stay off the console; the trial log keeps them."""
    return not (record.name == "py.warnings" and "FutureWarning" in record.getMessage())


def _trial_logging(run_dir: Path | None, trial_id: str) -> logging.Handler | None:
    """Route this worker's logging and warnings: console for errors, a file for everything.

    The file, ``<run>/logs/<trial_id>.log``, gets the trial's own lines (INFO) and the
    libraries' warnings, ``warnings.warn`` included (captured into logging). It is
    opened for appending, so a retried trial keeps its earlier attempts' lines. The
    console (Ray forwards it only with ``-v``) keeps its old content minus
    FutureWarnings. Call before the heavy imports, whose warnings it should catch.
    """
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    root = logging.getLogger()
    for handler in root.handlers:
        handler.addFilter(_console_filter)
    logging.captureWarnings(True)
    warnings.simplefilter("default")  # each distinct warning once, FutureWarning included
    if run_dir is None:
        return None
    path = Path(run_dir) / "logs" / f"{trial_id}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root.addHandler(handler)
    logging.getLogger("hizfo_bench").setLevel(logging.INFO)
    logging.getLogger("hizfo_bench").info(
        "%s: worker pid %d on %s", trial_id, os.getpid(), socket.gethostname()
    )
    return handler


def _propagate_transformers_logs() -> None:
    """transformers logs through a handler of its own; send its lines to ours instead."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()


# Trials one worker process serves before Ray replaces it (the task's max_calls). Start-up
# and imports (torch, transformers, lm-eval: seconds per process, see the record's
# worker.process_age_at_start_seconds and import_seconds) are paid once per worker
# instead of once per trial; the bound keeps a slow leak (fragmented heap, a library's
# cache) from growing over a long sweep. 1 gives a fresh process per trial.
TRIALS_PER_WORKER = 16

# Trials this process has served (the worker's own count, reported in the record).
_served = 0


def attempts_file(run_dir: Path, trial_id: str) -> Path:
    """``<run>/logs/<trial_id>.attempts.jsonl``: one line per attempt a worker started
    ({start, pid, host}), appended by the worker, read by the driver (sweep.py)."""
    return Path(run_dir) / "logs" / f"{trial_id}.attempts.jsonl"


def _note_attempt(run_dir: Path, trial_id: str) -> None:
    """Append this attempt's start and worker to the attempts file; never raises (a full
    disk costs the attempt its start time, not its result)."""
    import contextlib
    import json

    line = {"start": time.time(), "pid": os.getpid(), "host": socket.gethostname()}
    with contextlib.suppress(OSError):
        path = attempts_file(run_dir, trial_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")


def read_attempts(run_dir: Path, trial_id: str, since: float) -> list[dict[str, Any]]:
    """The attempt lines of a trial that started at or after `since` (this sweep's), in
    order; [] when the worker's filesystem is out of the driver's sight."""
    import json

    out = []
    try:
        lines = attempts_file(run_dir, trial_id).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and float(item.get("start", 0)) >= since:
            out.append(item)
    return out


def worker_died(e: BaseException) -> bool:
    """True when a trial's worker process (or its node) died: the attempts the sweep
    retries. An exception raised by the trial itself is not retried."""
    import ray.exceptions as rex

    died = (rex.WorkerCrashedError, rex.NodeDiedError, rex.OutOfMemoryError)
    return isinstance(e, died + (rex.LocalRayletDiedError,))


def _release_memory() -> None:
    """Between trials of one worker (bench.measure.memory.release_freed_memory)."""
    from bench.measure.memory import release_freed_memory

    release_freed_memory()


def _watch_driver(driver: dict[str, Any] | None) -> None:
    """End this worker when its driver dies (bench/orchestrate/deathwatch.py): a watch
    thread, and a check before every checkpoint write."""
    if not driver:
        return
    from bench.orchestrate import deathwatch
    from bench.train import checkpoint

    deathwatch.watch(driver)
    checkpoint.WRITE_GUARDS[:] = [lambda: deathwatch.exit_if_orphaned(driver)]


def _execute(
    spec_dict: dict[str, Any],
    run_dir: str | None = None,
    tracker: str = "none",
    driver: dict[str, Any] | None = None,
) -> TrialRecord:
    """Body of the Ray task: threads sized to the CPUs Ray gave this trial; its
    TrialRecord, with where it ran (``worker``).

    `run_dir` (absolute) is where the worker writes the trial's log, progress,
    samples and tracker files; the driver alone writes the trial file. A worker serves
    up to TRIALS_PER_WORKER trials one after the other; everything per trial (log file,
    threads, memory window) is set up again here.
    """
    global _served
    _watch_driver(driver)  # first: a worker of a dead driver writes nothing more
    t0 = time.perf_counter()
    age = _process_age_seconds()
    _served += 1
    spec = TrialSpec.from_dict(spec_dict)
    folder = Path(run_dir) if run_dir else None
    if folder is not None:
        from bench.train.progress import write_progress

        _note_attempt(folder, spec.trial_id)
        write_progress(folder, spec.trial_id, phase="loading", step=0, total_steps=0, loss=None)
    log_file = _trial_logging(folder, spec.trial_id)
    # A reused worker must not keep writing into this trial's log: the handler goes
    # whatever happens.
    try:
        # Per-trial step lines go to the trial log (and with -v to the driver's console
        # through Ray's log forwarding); the libraries stay at WARNING.
        logging.getLogger("hizfo_bench").setLevel(logging.INFO)
        import ray
        import torch

        from bench.registry import refresh_methods
        from bench.train.distributed import run_placed_trial
        from bench.train.trackers import log_result

        # A reused worker looks the methods up again: a plugin installed since it started
        # (between two sweeps on one cluster, say) must be found like in a fresh process.
        refresh_methods()
        _propagate_transformers_logs()
        context = ray.get_runtime_context()
        assigned = context.get_assigned_resources()
        torch.set_num_threads(max(1, int(assigned.get("CPU", 1))))
        _quiet_library_output()
        _release_memory()
        import_seconds = time.perf_counter() - t0
        try:
            # On the devices its resources ask for (one, unless resources.gpus > 1).
            record = run_placed_trial(spec, run_dir=folder, tracker=tracker)
        finally:
            _release_memory()  # the model and the method's state are gone with run_trial
        record.worker = {
            "pid": os.getpid(),
            "node_id": context.get_node_id(),
            "assigned_resources": assigned,
            # The GPUs Ray gave this trial and what the trial saw of them (Ray sets
            # CUDA_VISIBLE_DEVICES per task: "0", "1", "0,1" for a trial of two).
            "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            # Spawn until the task body ran (on a reused worker: its age when this began).
            "process_age_at_start_seconds": age,
            "import_seconds": import_seconds,  # torch + bench imports before the trial
            "trials_served": _served,  # 1 for the worker's first trial, 2 for its second ...
        }
        try:
            log_result(tracker, folder, record.to_dict())
        except Exception as e:  # a tracker must never cost a finished trial its result
            log.warning("%s: tracker %s failed: %s", spec.trial_id, tracker, e)
    finally:
        if log_file is not None:  # flushed and closed before the result leaves the worker
            logging.getLogger().removeHandler(log_file)
            log_file.close()
    return record


def start_ray(address: str | None, num_cpus: int | None, *, log_to_driver: bool = False) -> bool:
    """Connect to or start a Ray cluster unless this process has one; True if started here.

    Uses the Ray session already initialised in this process if there is one, else
    `address` (or RAY_ADDRESS), else a new local cluster with `num_cpus` CPUs.
    Workers' console lines reach this console only with `log_to_driver` (``-v``):
    otherwise the live display and the trial logs (``<run>/logs``) say what happens.
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": log_to_driver,
        # Ray's own INFO lines ("Started a local Ray instance") only with -v.
        "logging_level": logging.INFO if log_to_driver else logging.WARNING,
    }
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
        # A private cluster that lives as long as this process needs no token (Ray >=
        # 2.59 turns token authentication on by default and warns about it).
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # ray.init sets its own SIGTERM handler (it aborts a driver inside ray.wait); the
    # CLI's, SIGTERM like Ctrl-C, stays in force (bench/orchestrate/signals.py).
    signals.keeping_ours(lambda: ray.init(**kwargs))
    return True


def cluster_resources(cpus_per_trial: int | None) -> Resources:
    """The resource plan for the connected cluster's alive nodes."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return plan_resources(nodes, cpus_per_trial)


def remote_trial(
    res: Resources, max_retries: int = 0, trials_per_worker: int = TRIALS_PER_WORKER
) -> Any:
    """The Ray remote function that runs one trial with `res`; a worker process serves
    up to `trials_per_worker` trials (1: a fresh process each). The sweep retries dead
    workers itself, one attempt per submission, so that each attempt is recorded: Ray's
    own `max_retries` stays 0 there."""
    import ray

    if trials_per_worker < 1:
        raise ValueError(f"trials_per_worker must be >= 1, got {trials_per_worker}")
    # The env goes with each task (not only with ray.init) so it also reaches
    # workers of a cluster this process did not start. Same env, same worker pool:
    # Ray hands a finished worker the next trial instead of starting a process.
    return ray.remote(
        num_cpus=res.num_cpus,
        num_gpus=res.num_gpus,
        max_calls=trials_per_worker,
        max_retries=max_retries,
        runtime_env={"env_vars": _worker_env()},
    )(_execute)


def failure_message(e: Exception, max_retries: int) -> str:
    """One line for a trial whose worker never returned a record."""
    import ray.exceptions as rex

    first = (str(e).strip().splitlines() or [""])[0]
    if isinstance(e, rex.RayTaskError):
        # The task body raised outside run_trial (an import error in the worker, say).
        cause = e.cause if getattr(e, "cause", None) is not None else e
        return f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0]}"
    if isinstance(e, rex.WorkerCrashedError | rex.OutOfMemoryError | rex.NodeDiedError):
        return f"worker died, {max_retries + 1} attempts: {type(e).__name__}: {first}"
    if isinstance(e, rex.LocalRayletDiedError):
        return f"worker died, {max_retries + 1} attempts: {type(e).__name__}: {first}"
    return f"{type(e).__name__}: {first}"
