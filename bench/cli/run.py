"""`hizfo-bench run`: a suite's trials (tuning first, where it has any), then the table."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bench.cli.errors import DEFAULT_RUNS, UsageError


def check_flags(args: argparse.Namespace) -> None:
    """`run`'s flags against their ranges and this machine, before anything starts: a bad
    one is a UsageError (one line, exit 2) and no run directory is made."""
    import os

    for flag, value, least in (
        ("--num-cpus", args.num_cpus, 1),
        ("--cpus-per-trial", args.cpus_per_trial, 1),
        ("--max-retries", args.max_retries, 0),
    ):
        if value is not None and value < least:
            raise UsageError(f"{flag} {value}: must be >= {least}")
    local = not (args.address or os.environ.get("RAY_ADDRESS"))
    if local and args.cpus_per_trial is not None:
        # A local cluster has --num-cpus CPUs, or the machine's; more per trial would
        # leave every trial queued forever. (An existing cluster is checked on connecting.)
        have = args.num_cpus or os.cpu_count() or 1
        source = "--num-cpus" if args.num_cpus else "this machine"
        if args.cpus_per_trial > have:
            raise UsageError(
                f"--cpus-per-trial {args.cpus_per_trial}: {source} has {have} CPUs; "
                f"at most {have} per trial"
            )
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(
            f"--out {args.out}: is a file; give a run directory (an existing one resumes)"
        )
    if args.out and not Path(args.out).exists():
        # The folder will be made: its nearest existing parent must be a writable folder.
        parent = Path(args.out).absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise UsageError(f"--out {args.out}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"--out {args.out}: cannot create it, {parent} is not writable")


def run_manifest(
    args: argparse.Namespace, name: str, specs: list[Any], only: dict[str, list[Any]]
) -> dict[str, Any]:
    """What ``<run>/run.json`` records of this invocation (bench/orchestrate/manifest.py);
    a UsageError (one line, exit 2, nothing run) when `--out` was made by another suite
    and `--force-resume` is not given."""
    from bench.orchestrate.manifest import ResumeMismatch, check_resume, new_manifest
    from bench.suite import resolve_suite_path

    path = resolve_suite_path(args.suite).resolve()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        text = None
    manifest = new_manifest(
        name,
        path,
        text,
        specs,
        overrides=args.set,
        filters=only,
        argv=["hizfo-bench", *getattr(args, "argv", sys.argv[1:])],
    )
    out = Path(args.out) if args.out else None
    if out is not None and out.is_dir():
        try:
            check_resume(out, manifest, force=args.force_resume)
        except ResumeMismatch as e:
            raise UsageError(str(e)) from None
    return manifest


def _print_schema(which: str) -> int:
    """The suite files' JSON Schema (docs/suite.schema.json), nothing run."""
    import json

    from bench.suite import builtin_methods, suite_schema

    methods = builtin_methods() if which == "builtin" else None
    print(json.dumps(suite_schema(methods), indent=1))
    return 0


def _prepare(args: argparse.Namespace) -> dict[str, list[Any]]:
    """Flags checked, signals installed, the tracker's package found; the filters
    (``--methods`` ...) as lists. A problem is a UsageError before anything runs."""
    from bench.orchestrate import signals
    from bench.overrides import FILTER_KEYS, parse_filter
    from bench.train.trackers import TrackerError, check_tracker

    check_flags(args)
    # SIGTERM stops the run like Ctrl-C (exit 143), and Ctrl-C works even when the run
    # was started with SIGINT ignored (in the background of a script).
    signals.install()
    try:  # a tracker whose package is missing fails here, before anything runs
        check_tracker(args.tracker)
    except TrackerError as e:
        raise UsageError(str(e)) from None
    return {k: parse_filter(k, getattr(args, k)) for k in FILTER_KEYS if getattr(args, k)}


def _dry_run(suite: Any, run_dir: Path) -> int:
    """List the trials (tuning, target setting, final), each done or to do; run nothing.
    After a tuning that finished (``tuning.json`` in the run dir), the final and target
    trials are listed with the chosen settings' ids; before it, a tuned trial's id is
    not known yet and it is never listed as done."""
    import json

    from bench import store
    from bench.analysis.selection import Choice
    from bench.analysis.targets import target_specs
    from bench.orchestrate.tuning import describe, final_specs, planned_trials, tuning_specs

    specs = suite.specs
    done = store.finished_ids(run_dir) if run_dir.exists() else set()
    tune = tuning_specs(specs, suite.tuning) if suite.tuning else []
    tuned = {(t.method, t.task, t.model) for t in tune}
    tuning = f" after {planned_trials(specs, suite.tuning)} tuning trials" if tune else ""
    print(f"suite {suite.name}: {len(specs)} trials{tuning} (run dir {run_dir})")
    if tune:  # the points of every stage; the trial ids below are the first stage's
        print("\n".join(describe(specs, suite.tuning)))
        chosen = run_dir / "tuning.json"
        if chosen.is_file():
            choices = [Choice(**c) for c in json.loads(chosen.read_text())["choices"]]
            specs, tuned = final_specs(specs, choices), set()
            print(f"tuning finished ({chosen}): the trials below carry its choices")
    targets = target_specs(specs, suite.targets)
    if targets:  # their ids change when tuning changes the reference's settings
        print(f"then {len(targets)} target-setting trials, then the final trials")
    for s in [*tune, *targets, *specs]:
        pending = s.phase != "tune" and (s.method, s.task, s.model) in tuned
        mark = "done" if s.trial_id in done and not pending else "todo"
        note = "  (target setting)" if s.phase == "target" else ""
        tuned_note = " (after tuning: its settings, and so its id, are set then)" if pending else ""
        print(f"  [{mark}]{tuned_note} {s.trial_id}{note}")
    return 0


def _execute(
    args: argparse.Namespace, suite: Any, run_dir: Path, manifest: dict[str, Any]
) -> list[Any] | int:
    """Run the suite's plan (tuning, targets, final trials): its sweeps, or the exit
    status of a run that stopped on a file it could not write."""
    from bench import store
    from bench.orchestrate.plan import run_plan
    from bench.orchestrate.session import ResourceError
    from bench.orchestrate.sweep import ResultWriteError

    try:
        return run_plan(
            suite.specs,
            run_dir,
            tuning=suite.tuning,
            targets=suite.targets,
            manifest=manifest,
            address=args.address,
            num_cpus=args.num_cpus,
            cpus_per_trial=args.cpus_per_trial,
            max_retries=args.max_retries,
            tracker=args.tracker,
            log_to_driver=args.verbose,
        )
    except (store.RunDirBusyError, ResourceError) as e:
        raise UsageError(str(e)) from None
    except KeyboardInterrupt:  # say where the running trials resume; the CLI says the rest
        from bench.orchestrate.resume_note import interrupt_note

        print(interrupt_note(run_dir), file=sys.stderr)
        raise
    except ResultWriteError as e:  # a full disk: one line, finished trials kept
        print(f"hizfo-bench: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # any other file the run writes (tuning.json, targets.json, ...)
        where = e.filename or run_dir
        print(
            f"hizfo-bench: error: cannot write {where}: {e.strerror or e} "
            f"({store.free_space(where)}); finished trials are kept, run again to resume",
            file=sys.stderr,
        )
        return 1


def _overhead_line(sweep: Any) -> str | None:
    """The sweep's wall-clock against perfect packing of the trials' own times."""
    over = sweep.overhead()
    if not over:
        return None
    return (
        f"\n{len(sweep.records)} trials run"
        + (f" ({len(sweep.resumed)} resumed from a checkpoint)" if sweep.resumed else "")
        + f", {sweep.skipped} already finished; "
        f"wall {over['wall_seconds']:.0f} s (startup {over['startup_seconds']:.0f} s), "
        f"trials {over['trial_seconds_sum']:.0f} s / {over['parallelism']} slots = "
        f"{over['ideal_seconds']:.0f} s; overhead {over['overhead_seconds']:.0f} s "
        f"({100 * over['overhead_fraction']:.0f}% of wall"
        + (
            f"; {over['lost_attempts']} attempt(s) lost to dead workers, "
            f"{over['lost_seconds']:.0f} s)"
            if over["lost_attempts"]
            else ")"
        )
    )


def _summary(suite: Any, run_dir: Path, sweeps: list[Any], seconds: float) -> int:
    """The final trials' table and the last sweep's overhead; 0 when every trial is ok."""
    from bench import store
    from bench.report import summary_table

    frame = store.load_frame(run_dir)
    # The final trials of this suite (tuned settings change ids, so match by cell).
    cells = {(s.method, s.task, s.model, s.seed) for s in suite.specs}
    rows = zip(frame.method, frame.task, frame.model, frame.seed, frame.phase, strict=True)
    frame = frame[[(m, t, mo, se) in cells and ph != "tune" for m, t, mo, se, ph in rows]]
    print(f"\n{suite.name}: {len(frame)} trials in {run_dir} ({seconds:.0f} s)\n")
    print(summary_table(frame))
    if line := _overhead_line(sweeps[-1]):
        print(line)
    return 0 if (frame["status"] == "ok").all() else 1


def _cmd_run(args: argparse.Namespace) -> int:
    from bench.resume import settings_note
    from bench.suite import load_plan

    if args.schema:
        return _print_schema(args.schema)
    only = _prepare(args)
    # A dry run lists trials without touching a hub, so hub model ids pass offline.
    listing = args.dry_run or args.print_config
    suite = load_plan(args.suite, check_sources=not listing, overrides=args.set, only=only)
    name, specs = suite.name, suite.specs
    run_dir = (
        Path(args.out) if args.out else DEFAULT_RUNS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if args.print_config:
        from bench.cli.suites import print_config

        return print_config(suite, run_dir)
    # Another suite's run dir is refused first (one line, nothing run; not for a listing).
    manifest = None if args.dry_run else run_manifest(args, name, specs, only)
    if note := settings_note(specs, run_dir):  # an edited suite resumed into its old run dir
        print(note, file=sys.stderr)
    if args.dry_run:
        return _dry_run(suite, run_dir)
    print(f"suite {name}: {len(specs)} trials -> {run_dir}", file=sys.stderr)
    t0 = time.time()
    sweeps = _execute(args, suite, run_dir, manifest)
    if isinstance(sweeps, int):
        return sweeps
    return _summary(suite, run_dir, sweeps, time.time() - t0)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The run subcommand."""
    run = sub.add_parser("run", help="run a suite (resumes an existing --out directory)")
    run.add_argument("--suite", default="mini", help="bundled suite name or YAML path")
    run.add_argument("--out", help="run directory (default results/runs/<suite>-<time>)")
    run.add_argument(
        "--address",
        help="existing Ray cluster: host:port of its head, or 'auto' (default: start a local one)",
    )
    run.add_argument("--num-cpus", type=int, help="CPUs of the local Ray cluster")
    run.add_argument("--cpus-per-trial", type=int, help="CPU threads per trial")
    run.add_argument(
        "--max-retries",
        type=int,
        default=2,
        help="times a trial whose worker died is run again before it is recorded failed",
    )
    run.add_argument(
        "--force-resume",
        action="store_true",
        help="resume into an --out made by another suite (other name or settings; "
        "refused otherwise)",
    )
    run.add_argument("--dry-run", action="store_true", help="list the trials, run nothing")
    run.add_argument(
        "--print-config",
        action="store_true",
        help="print each trial's resolved spec (YAML) and the tuning points, run nothing",
    )
    run.add_argument(
        "--schema",
        nargs="?",
        const="installed",
        choices=("installed", "builtin"),
        help="print the JSON Schema of suite files (method configs of the installed methods, "
        "or of the built-in ones: docs/suite.schema.json) and exit",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change the suite: a dotted key as in the YAML (methods.mezo.config.lr=1e-5, "
        "train.steps=50, tasks.math-mini.eval.limit=10); the value is read as YAML; repeatable",
    )
    for key in ("methods", "tasks", "models", "seeds"):
        run.add_argument(
            f"--{key}", metavar="A,B", help=f"run only these {key} of the suite (comma-separated)"
        )
    run.add_argument(
        "--tracker",
        choices=("none", "tensorboard", "wandb"),
        default="none",
        help="also log each trial's loss, eval points and final metrics to TensorBoard "
        "(<run>/tb/) or W&B (one run per trial, grouped by run dir)",
    )
    run.set_defaults(func=_cmd_run)
