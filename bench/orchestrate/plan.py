"""A suite's whole run: tuning on dev (when asked), target setting (when a target names
seeds), the final trials, then time-to-target.

The sweep (sweep.py) runs a list of trial specs; this runs the phases around it. The
target-setting stage trains the target's method on the target's own seeds (phase
``target``, never scored on test, never in the tables) and fixes each task's target and
budget before any final trial runs (bench/analysis/targets.py); ``targets.json`` in the
run directory holds them, to be committed with a suite as fixed ``value``s.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import store
from bench.analysis.targets import annotate, set_targets, target_specs
from bench.orchestrate import runlock
from bench.orchestrate.lm_eval_export import export_tasks
from bench.orchestrate.manifest import write_manifest
from bench.orchestrate.session import ResourceError
from bench.orchestrate.sweep import run_sweep
from bench.orchestrate.tuning import TuningPlan, final_specs, run_tuning


def run_plan(
    specs: Sequence[Any],
    run_dir: Path,
    *,
    tuning: TuningPlan | None = None,
    targets: Mapping[str, Any] | None = None,
    manifest: Mapping[str, Any] | None = None,
    **sweep_kwargs: Any,
) -> list[Any]:
    """Tune (when asked), set targets (when a target names seeds), run the final trials,
    then set every final trial's time-to-target.

    Returns the Sweep of each phase. Writes ``tuning.json`` (every point tried and the
    choice) and ``targets.json`` (the targets and budgets the stage fixed) into the run
    directory, and with `manifest` (bench/orchestrate/manifest.py) ``run.json``,
    ``suite.yaml`` and the suite's lm-eval task folders (``lm_eval_tasks/``, written
    by bench/orchestrate/lm_eval_export.py) first. Holds the run directory's lock (bench/orchestrate/runlock.py) from the
    first write to the last; RunDirBusyError when another run holds it.
    """
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    try:
        # One lock from the first write to the last: no second run may start between the
        # stages, nor race the targets and the annotation.
        with runlock.held(run_dir):
            if manifest is not None:
                write_manifest(run_dir, manifest)
                export_tasks(specs, run_dir)
            return _run_stages(specs, run_dir, tuning, targets, sweep_kwargs)
    except ResourceError:
        if created:  # the cluster cannot hold a trial: nothing ran, leave no run directory
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _run_stages(
    specs: Sequence[Any],
    run_dir: Path,
    tuning: TuningPlan | None,
    targets: Mapping[str, Any] | None,
    sweep_kwargs: dict[str, Any],
) -> list[Any]:
    sweeps = []
    final = list(specs)
    if tuning is not None and tuning.spaces:
        choices, tune_sweeps = run_tuning(
            specs, tuning, run_dir, lambda batch: run_sweep(batch, run_dir, **sweep_kwargs)
        )
        sweeps += tune_sweeps
        final = final_specs(specs, choices)
    resolved = None
    stage = target_specs(final, targets) if targets else []
    if stage:
        sweeps.append(run_sweep(stage, run_dir, **sweep_kwargs))
        stage_ids = {s.trial_id for s in stage}
        records = [r for r in store.read_trials(run_dir) if r.trial_id in stage_ids]
        resolved = set_targets(records, targets)
        (run_dir / "targets.json").write_text(json.dumps(resolved, indent=1))
    sweeps.append(run_sweep(final, run_dir, **sweep_kwargs))
    if targets:
        final_ids = {s.trial_id for s in final}
        records = [r for r in store.read_trials(run_dir) if r.trial_id in final_ids]
        for record in annotate(records, targets, resolved):
            store.write_trial(run_dir, record)
    return sweeps
