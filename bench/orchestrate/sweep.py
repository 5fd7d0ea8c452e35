"""A sweep: run every trial spec not finished yet in a run directory, on Ray.

A worker process serves several trials one after the other (session.TRIALS_PER_WORKER,
Ray's ``max_calls``), so start-up and imports are paid once per worker, not per trial;
each trial still gets its own memory window (the heap is trimmed between trials and
MemoryMeter resets the peak and re-reads its baseline at every start), log file and
thread count. Trials are submitted longest first (estimated_cost), so the slots do not
sit idle at the end of a sweep waiting for one long trial.

The driver writes every trial file as soon as its result arrives, so an interrupted
sweep keeps what finished, and a second call on the same run directory skips those
trials (resume). A worker that dies (killed, out of
memory, segfault) is submitted again, ``max_retries`` times, and then recorded as failed;
each trial file lists its attempts (start, end, worker, outcome) and the time lost ones
took. A trial that raises is recorded as failed by the worker itself (run_trial never
raises), so neither stops the sweep. A result that cannot be written (a full disk, any
OSError) stops the sweep with one line (ResultWriteError): the finished trials stay, and
the interrupted one has no file, so a resume runs it again.

The Ray side (start policy, resources, worker body) is bench/orchestrate/session.py.
See docs/orchestration.md for the whole story, including multi-machine clusters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import store
from bench.orchestrate import deathwatch, runlock, session, stall
from bench.orchestrate.display import SweepDisplay, phase_label
from bench.orchestrate.resume_note import resume_line, resume_steps
from bench.record import TrialRecord
from bench.spec import TrialSpec
from bench.train.progress import clear_progress, progress_dir, read_progress

log = logging.getLogger("hizfo_bench.sweep")


@dataclass
class Sweep:
    """What one call of `run_sweep` did, with the figures for the overhead estimate."""

    records: list[TrialRecord] = field(default_factory=list)
    skipped: int = 0  # trials already finished in the run directory
    resumed: dict[str, int] = field(default_factory=dict)  # trial id -> checkpoint step
    slots: int = 0  # trials the cluster could run at once
    wall_seconds: float = 0.0  # the whole call: model preparation, Ray start, all trials
    startup_seconds: float = 0.0  # model preparation and Ray start, before the first submit
    lost_attempts: int = 0  # attempts whose worker died (retried or not)
    lost_seconds: float = 0.0  # the time those attempts ran

    def overhead(self) -> dict[str, float] | None:
        """Sweep wall-clock against (sum of trial times) / parallelism.

        Trial time is the worker's `total_seconds` (load + setup + train + eval).
        Parallelism is min(slots, trials run). The rest is orchestration: cluster
        start, worker start-up and imports, scheduling, idle slots at the tail,
        attempts lost to dead workers (``lost_seconds``, not in the trials' times)
        and, on a shared machine, contention.
        """
        times = [r.total_seconds for r in self.records if r.total_seconds]
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
            "lost_attempts": self.lost_attempts,
            "lost_seconds": self.lost_seconds,
        }


# A generated token costs about this many training tokens of a forward: decoding is one
# token per sequence per pass, latency-bound, where a training forward has the whole
# batch x length at once.
DECODE_TOKEN_COST = 4.0
# Test documents assumed when a task is scored on all of them (eval.limit: null).
FULL_TEST_DOCS = 500


def estimated_cost(spec: TrialSpec) -> float:
    """A trial's work in token-forward units, to submit the longest trials first.

    steps x the method's declared step cost (MethodTraits.step_cost, in forwards) x
    batch_size x max_length
    for training, + the dev loss points (their forward passes), + test documents x
    generation budget x DECODE_TOKEN_COST for the evaluation (dev scores likewise). A
    heuristic for ordering only: no time is predicted or reported from it.
    """
    from bench.registry import traits_of

    train, ev, dev = spec.train, spec.eval, spec.dev
    tokens = train.batch_size * train.max_length
    step_cost = traits_of(spec.method).step_cost
    steps = train.steps if step_cost > 0 else 0
    work = steps * step_cost * tokens
    docs = FULL_TEST_DOCS if ev.limit is None else ev.limit
    work += docs * ev.max_gen_toks * DECODE_TOKEN_COST
    points = steps // dev.eval_every if dev.eval_every and steps else 0
    if points:
        dev_tokens = (dev.batch_size or train.batch_size) * train.max_length
        work += points * dev.batches * dev_tokens
        if dev.score:
            work += points * dev.limit * (dev.max_gen_toks or ev.max_gen_toks) * DECODE_TOKEN_COST
    return float(work)


def longest_first(specs: Sequence[TrialSpec]) -> list[TrialSpec]:
    """`specs` by decreasing estimated_cost (ties in suite order): the longest-processing-
    time-first rule, so the last trials to start are short ones and the sweep's tail
    leaves few slots idle."""
    return sorted(specs, key=lambda s: -estimated_cost(s))


class ResultWriteError(RuntimeError):
    """A trial result could not be written (a full disk, say): the sweep stops."""


def _write_error(path: Path, e: OSError, kept: int) -> ResultWriteError:
    reason = e.strerror or str(e)
    return ResultWriteError(
        f"cannot write {path}: {reason} ({store.free_space(path)}); the sweep stopped, "
        f"{kept} finished trial(s) of it are kept, run it again to resume"
    )


@dataclass
class _Attempt:
    """One submission of a trial to a worker."""

    spec: TrialSpec
    number: int  # 1 for the first
    submitted: float  # Unix time
    history: list[dict[str, Any]] = field(default_factory=list)  # the earlier attempts


def pending_specs(specs: Sequence[TrialSpec], run_dir: Path) -> list[TrialSpec]:
    """The specs whose trial has not finished successfully in `run_dir` (resume)."""
    done = store.finished_ids(run_dir)
    return [s for s in specs if s.trial_id not in done]


def run_sweep(
    specs: Sequence[TrialSpec],
    run_dir: Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_trial: int | None = None,
    max_retries: int = 2,
    progress: bool = True,
    tracker: str = "none",
    log_to_driver: bool = False,
    trials_per_worker: int = session.TRIALS_PER_WORKER,
) -> Sweep:
    """Run every spec not finished yet in `run_dir` on Ray.

    Uses the Ray session already initialised in this process if there is one (and
    leaves it running), else connects to `address`, else starts a local cluster with
    `num_cpus` CPUs (default: all) and stops it at the end.

    `progress` shows the live display on stderr; `tracker` (bench/train/trackers.py)
    sends each trial's numbers to TensorBoard or W&B; `log_to_driver` forwards the
    workers' console lines (``-v``). Each trial's full log is ``<run>/logs/<id>.log``
    and its per-document eval records ``<run>/samples/<id>.jsonl`` either way.
    `trials_per_worker` trials share a worker process (1: a fresh process per trial).
    Trials are submitted longest first (longest_first).
    """
    from bench.train.trackers import check_tracker

    check_tracker(tracker)
    t_start = time.perf_counter()
    run_dir = Path(run_dir).resolve()  # workers may start in another folder
    sweep = Sweep()
    created = not run_dir.exists()
    try:
        _run_locked(
            specs,
            run_dir,
            sweep,
            t_start,
            address,
            num_cpus,
            cpus_per_trial,
            max_retries,
            progress,
            tracker,
            log_to_driver,
            trials_per_worker,
        )
    except session.ResourceError:
        # The cluster cannot hold a trial: nothing ran, so leave no run directory behind.
        if created:
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return sweep


def _run_locked(
    specs: Sequence[TrialSpec],
    run_dir: Path,
    sweep: Sweep,
    t_start: float,
    address: str | None,
    num_cpus: int | None,
    cpus_per_trial: int | None,
    max_retries: int,
    progress: bool,
    tracker: str,
    log_to_driver: bool,
    trials_per_worker: int,
) -> None:
    with runlock.held(run_dir):  # joins the plan's lock when a plan runs this sweep
        store.remove_temp_files(run_dir)
        todo = pending_specs(specs, run_dir)
        sweep.skipped = len(specs) - len(todo)
        if sweep.skipped:
            log.warning(
                "resuming %s: %d of %d trials already finished", run_dir, sweep.skipped, len(specs)
            )
        if not todo:
            return
        clear_progress(run_dir, [s.trial_id for s in todo])
        sweep.resumed = resume_steps(run_dir, [s.trial_id for s in todo])
        if line := resume_line(sweep.resumed):  # "resuming <trial> from step N"
            log.warning("%s", line)

        # Build built-in models once here, not in every worker at the same time.
        from bench.models import prepare

        for model in sorted({s.model for s in todo}):
            prepare(model)

        started_here = session.start_ray(address, num_cpus, log_to_driver=log_to_driver)
        pending: dict[Any, _Attempt] = {}
        try:
            res = session.cluster_resources(cpus_per_trial)
            sweep.slots = res.slots
            log.warning(
                "running %d trials, %d at a time (%s per trial)",
                len(todo),
                res.slots,
                f"1 GPU + {res.num_cpus:g} CPU" if res.num_gpus else f"{res.num_cpus:g} CPU",
            )
            remote = session.remote_trial(res, 0, trials_per_worker)
            driver = deathwatch.driver_identity()  # workers end when this process dies

            def submit(spec: TrialSpec, number: int, history: list[dict[str, Any]]) -> Any:
                # A trial over several devices holds them all, with CPUs in proportion.
                n = spec.resources.gpus if res.num_gpus else spec.resources.processes or 1
                many = {"num_gpus": n if res.num_gpus else 0, "num_cpus": n * res.num_cpus}
                task = remote.options(**many) if n > 1 else remote
                ref = task.remote(spec.to_dict(), str(run_dir), tracker, driver)
                pending[ref] = _Attempt(spec, number, time.time(), history)
                return ref

            sweep.startup_seconds = time.perf_counter() - t_start
            # Ray starts queued tasks of one shape in submission order.
            for s in longest_first(todo):
                submit(s, 1, [])
            display = SweepDisplay(
                len(todo),
                enabled=progress,
                redraw=not log_to_driver,
                phase=phase_label(s.phase for s in todo),
                slots=res.slots,
            )
            try:
                _collect(pending, run_dir, sweep, max_retries, display, submit)
            finally:
                display.close()
        finally:
            _release(pending, started_here)
    sweep.wall_seconds = time.perf_counter() - t_start


def _attempt_entry(
    attempt: _Attempt, run_dir: Path, end: float, outcome: str, worker: dict[str, Any] | None
) -> dict[str, Any]:
    """What one attempt was: its start (the worker's own line, else the submission), end,
    worker and outcome."""
    lines = session.read_attempts(run_dir, attempt.spec.trial_id, attempt.submitted)
    line = lines[-1] if lines else {}
    start = float(line.get("start", attempt.submitted))
    if worker is None and line:
        worker = {"pid": line.get("pid"), "host": line.get("host")}
    return {
        "attempt": attempt.number,
        "start": start,
        "end": end,
        "seconds": max(0.0, end - start),
        "worker": worker,
        "outcome": outcome,
    }


def _collect(
    pending: dict[Any, _Attempt],
    run_dir: Path,
    sweep: Sweep,
    max_retries: int,
    display: SweepDisplay,
    submit: Any,
) -> None:
    """Wait for each trial, write its file as soon as it arrives, keep the display current;
    a trial whose worker died is submitted again until it has had 1 + max_retries attempts;
    a trial without progress for longer than its stall limit is stopped and recorded
    failed (bench/orchestrate/stall.py)."""
    import ray

    from bench.train.recipe import failed_record

    while pending:
        # A timeout, so that Ctrl-C reaches Python (a blocking wait swallows it) and
        # the display sees the progress files between results.
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
        if not ready:
            display.update(_watch(pending, run_dir, sweep, display))
            continue
        attempt = pending.pop(ready[0])
        spec = attempt.spec
        try:
            record = ray.get(ready[0])
        except Exception as e:  # the worker died or Ray failed
            end = time.time()
            died = session.worker_died(e)
            outcome = f"worker died: {type(e).__name__}" if died else "failed"
            entry = _attempt_entry(attempt, run_dir, end, outcome, None)
            if died:
                sweep.lost_attempts += 1
                sweep.lost_seconds += entry["seconds"]
            if died and attempt.number <= max_retries:
                log.warning(
                    "%s: worker died (%s), attempt %d of %d",
                    spec.trial_id,
                    type(e).__name__,
                    attempt.number,
                    max_retries + 1,
                )
                submit(spec, attempt.number + 1, [*attempt.history, entry])
                continue
            record = failed_record(spec, session.failure_message(e, max_retries))
            record.traceback = str(e)
        else:
            end = time.time()
            worker = record.worker or {}
            who = {"pid": worker.get("pid"), "node_id": worker.get("node_id")}
            outcome = "ok" if record.ok else "failed"
            entry = _attempt_entry(attempt, run_dir, end, outcome, who)
        _keep(record, attempt, entry, run_dir, sweep, display)


def _keep(
    record: TrialRecord,
    attempt: _Attempt,
    entry: dict[str, Any],
    run_dir: Path,
    sweep: Sweep,
    display: SweepDisplay,
) -> None:
    """Write a trial's file with its attempts, count it, show it, drop its progress file."""
    spec = attempt.spec
    each = [*attempt.history, entry]
    lost = [a for a in each[:-1] if a["outcome"].startswith("worker died")]
    record.attempts = {
        "count": len(each),
        "lost_seconds": sum(a["seconds"] for a in lost),
        "each": each,
    }
    try:
        store.write_trial(run_dir, record)
    except OSError as e:
        target = store.trials_dir(run_dir) / f"{spec.trial_id}.json"
        raise _write_error(target, e, len(sweep.records)) from None
    sweep.records.append(record)
    display.finished(spec.trial_id, record.to_dict())
    (progress_dir(run_dir) / f"{spec.trial_id}.json").unlink(missing_ok=True)


def _watch(
    pending: dict[Any, _Attempt], run_dir: Path, sweep: Sweep, display: SweepDisplay
) -> dict[str, dict[str, Any] | None]:
    """The progress of every pending trial, for the display, each with its silence and
    stall limit; a trial silent for longer than its limit is stopped here: its worker is
    killed (its checkpoints stay) and it is recorded failed with a TimeoutError."""
    import ray

    from bench.train.recipe import failed_record

    now = time.time()
    shown: dict[str, dict[str, Any] | None] = {}
    for ref, attempt in list(pending.items()):
        spec = attempt.spec
        progress = read_progress(run_dir, spec.trial_id)
        if progress and attempt.number > 1 and progress.get("time", 0) < attempt.submitted:
            progress = None  # an earlier attempt's file: this one has not started yet
        silent = stall.silence(progress, now)
        if progress is None or silent is None:
            shown[spec.trial_id] = progress
            continue
        limit = stall.stall_limit(spec, progress)
        if silent <= limit:
            shown[spec.trial_id] = {**progress, "silent_seconds": silent, "stall_limit": limit}
            continue
        ray.cancel(ref, force=True)  # kills the worker: a hung step never returns
        pending.pop(ref)
        error = stall.stall_error(silent, progress)
        log.warning("%s: stopped, %s", spec.trial_id, error)
        record = failed_record(spec, error)
        source = "train.stall_timeout_s" if spec.train.stall_timeout_s else "derived"
        record.traceback = (
            f"stopped by the driver: no progress for {silent:.0f} s, over the stall limit "
            f"of {limit:.0f} s ({source}); last seen {progress.get('phase')} at step "
            f"{progress.get('step')} of {progress.get('total_steps')}"
        )
        entry = _attempt_entry(attempt, run_dir, time.time(), "stalled", None)
        _keep(record, attempt, entry, run_dir, sweep, display)
    return shown


def _release(pending: dict[Any, _Attempt], started_here: bool) -> None:
    import ray

    if started_here:
        ray.shutdown()
    else:
        # A cluster we did not start keeps running: do not leave our trials on it.
        for ref in pending:
            ray.cancel(ref, force=True)
