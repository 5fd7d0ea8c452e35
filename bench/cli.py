"""The `hizfo-bench` command: run, show, report, compare, methods, tasks, models."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

# Offline unless the user opts in (HF_HUB_OFFLINE=0): nothing here may reach a hub by
# accident. Set before transformers / datasets / lm-eval are imported anywhere.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_RUNS = Path("results") / "runs"


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def _cmd_run(args: argparse.Namespace) -> int:
    from bench import store
    from bench.orchestrate.plan import run_plan
    from bench.orchestrate.session import ResourceError
    from bench.orchestrate.tuning import describe, planned_trials, tuning_specs
    from bench.overrides import FILTER_KEYS, parse_filter
    from bench.report import summary_table
    from bench.suite import load_plan
    from bench.train.trackers import TrackerError, check_tracker

    try:  # a tracker whose package is missing fails here, before anything runs
        check_tracker(args.tracker)
    except TrackerError as e:
        raise UsageError(str(e)) from None
    only = {k: parse_filter(k, getattr(args, k)) for k in FILTER_KEYS if getattr(args, k)}
    # A dry run lists trials without touching a hub, so hub model ids pass offline.
    suite = load_plan(args.suite, check_sources=not args.dry_run, overrides=args.set, only=only)
    name, specs = suite.name, suite.specs
    run_dir = (
        Path(args.out) if args.out else DEFAULT_RUNS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if args.dry_run:
        done = store.finished_ids(run_dir) if run_dir.exists() else set()
        tune = tuning_specs(specs, suite.tuning) if suite.tuning else []
        tuning = f" after {planned_trials(specs, suite.tuning)} tuning trials" if tune else ""
        print(f"suite {name}: {len(specs)} trials{tuning} (run dir {run_dir})")
        if tune:  # the points of every stage; the trial ids below are the first stage's
            print("\n".join(describe(specs, suite.tuning)))
        for s in [*tune, *specs]:
            mark = "done" if s.trial_id in done else "todo"
            print(f"  [{mark}] {s.trial_id}")
        return 0
    print(f"suite {name}: {len(specs)} trials -> {run_dir}", file=sys.stderr)
    t0 = time.time()
    try:
        sweeps = run_plan(
            specs,
            run_dir,
            tuning=suite.tuning,
            targets=suite.targets,
            address=args.address,
            num_cpus=args.num_cpus,
            cpus_per_trial=args.cpus_per_trial,
            max_retries=args.max_retries,
            tracker=args.tracker,
            log_to_driver=args.verbose,
        )
    except (store.RunDirBusyError, ResourceError) as e:
        raise UsageError(str(e)) from None
    frame = store.load_frame(run_dir)
    # The final trials of this suite (tuned settings change ids, so match by cell).
    sweep = sweeps[-1]
    cells = {(s.method, s.task, s.model, s.seed) for s in specs}
    rows = zip(frame.method, frame.task, frame.model, frame.seed, frame.phase, strict=True)
    frame = frame[[(m, t, mo, se) in cells and ph != "tune" for m, t, mo, se, ph in rows]]
    print(f"\n{name}: {len(frame)} trials in {run_dir} ({time.time() - t0:.0f} s)\n")
    print(summary_table(frame))
    over = sweep.overhead()
    if over:
        # Sweep wall-clock against perfect packing of the trials' own times.
        print(
            f"\n{len(sweep.records)} trials run, {sweep.skipped} already finished; "
            f"wall {over['wall_seconds']:.0f} s (startup {over['startup_seconds']:.0f} s), "
            f"trials {over['trial_seconds_sum']:.0f} s / {over['parallelism']} slots = "
            f"{over['ideal_seconds']:.0f} s; overhead {over['overhead_seconds']:.0f} s "
            f"({100 * over['overhead_fraction']:.0f}% of wall)"
        )
    return 0 if (frame["status"] == "ok").all() else 1


def _find_samples(run_dir: Path, trial: str) -> Path:
    """The samples file of the one trial whose id is `trial` or starts with it."""
    folder = run_dir / "samples"
    if not folder.is_dir():
        raise UsageError(f"{run_dir} has no samples/ folder (not a run dir, or nothing scored yet)")
    exact = folder / f"{trial}.jsonl"
    if exact.is_file():
        return exact
    matches = sorted(p for p in folder.glob("*.jsonl") if p.stem.startswith(trial))
    if not matches:
        raise UsageError(f"no trial {trial!r} with samples in {run_dir}")
    if len(matches) > 1:
        shown = ", ".join(p.stem for p in matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise UsageError(f"{trial!r} matches {len(matches)} trials: {shown}")
    return matches[0]


def _clip(text: object, limit: int) -> str:
    """One block of text, its tail kept (the end of a prompt is what the model answers)."""
    text = str(text)
    return text if len(text) <= limit else "..." + text[-limit:]


def _cmd_show(args: argparse.Namespace) -> int:
    from bench.evaluate import read_samples

    path = _find_samples(Path(args.run_dir), args.trial)
    samples = read_samples(path)
    scores = [s["score"] for s in samples if s.get("score") is not None]
    mean = f", mean score {sum(scores) / len(scores):.4f}" if scores else ""
    print(f"{path.stem}: {len(samples)} documents{mean}")
    for sample in samples[: max(0, args.n)]:
        print(f"\n--- doc {sample['doc_id']}  score {sample.get('score')}")
        print(f"prompt:     {_clip(sample.get('prompt'), 600)}")
        print(f"generation: {_clip(sample.get('generation'), 600)}")
        for name, value in (sample.get("filtered") or {}).items():
            print(f"  {name}: {_clip(value, 200)}")
        print(f"target:     {_clip(sample.get('target'), 600)}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from bench import report, store

    paths = [Path(p) for p in args.run_dirs]
    runs = report.find_runs(paths)
    for p in paths:
        if not report.find_runs([p]):
            raise UsageError(f"{p} is not a run directory (no trials/ folder inside) nor holds any")
    if len(paths) == 1 and runs == paths:
        run_dir = paths[0]
        if not store.read_trials(run_dir):
            raise UsageError(f"{run_dir} holds no trial files")
        print(report.summary_table(store.load_frame(run_dir)))
        written = report.write_report(run_dir, Path(args.out) if args.out else None)
    else:
        # Several runs (or a folder of them): a history, written beside the runs.
        out = Path(args.out) if args.out else Path(os.path.commonpath(runs)) / "report"
        if out.parent in runs:  # a single run given as a folder of runs: keep it apart
            out = out.parent / "report" / "history"
        written = report.write_history(runs, out)
        print(f"history of {len(runs)} runs")
    print(f"\nwrote {len(written)} files into {os.path.commonpath(written)}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from bench.analysis import history, regress
    from bench.analysis.timing import TimeTolerance
    from bench.report.compare import render_table, write_verdict

    tol = regress.Tolerances(
        abs_tol=args.abs_tol,
        k=args.k,
        time=TimeTolerance(factor=args.time_factor, alpha=args.alpha, last=args.history_runs),
        memory_factor=args.memory_factor,
        memory_slack_bytes=args.memory_slack_mib * 2**20,
        check_time=not args.ignore_time,
        check_memory=not args.ignore_memory,
        loss_rtol_same_platform=args.loss_rtol,
        loss_factor=args.loss_factor,
        check_loss=not args.ignore_loss,
        ratio_tol_time=args.ratio_tol,
        check_ratios=not args.ignore_ratios,
    )
    try:
        current = regress.load_records(args.current)
        baseline = None
        if args.history:
            key = history.run_machine_key(current)
            baseline = history.baselines(
                args.history, key, last=args.history_runs, exclude=args.current, match=args.match
            )
        verdict = regress.compare(
            regress.load_records(args.reference),
            current,
            tol,
            match=args.match,
            reference_name=args.reference,
            current_name=args.current,
            baseline=baseline,
            history_name=args.history,
        )
    except regress.UnusableInput as e:
        raise UsageError(str(e)) from None
    print(render_table(verdict))
    cur = Path(args.current)
    default = (cur if cur.is_dir() else cur.parent) / "report" / "compare.json"
    out = write_verdict(verdict, Path(args.json) if args.json else default)
    print(f"verdict written to {out}")
    return 0 if verdict.passed else 1


def _cmd_history(args: argparse.Namespace) -> int:
    from bench.analysis import history, regress

    if args.action == "add":
        if not args.run_dirs:
            raise UsageError("history add needs at least one RUN_DIR")
        try:
            for run in args.run_dirs:
                print(f"{run} -> {history.add_run(run, args.root)}")
        except regress.UnusableInput as e:
            raise UsageError(str(e)) from None
        return 0
    machines = history.describe(args.root)
    if not machines:
        print(f"no history in {args.root}")
    for m in machines:
        cpu = (m["machine"] or {}).get("cpu_model")
        print(f"{m['machine_key']}  {cpu}  {len(m['runs'])} run(s): {', '.join(m['runs'])}")
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from bench.registry import available_methods

    for name, target in available_methods().items():
        print(f"{name:12s} {target}")
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from bench.tasks import available_tasks

    # Hub sizes would need a download; offline sizes are cheap (data generated or cached).
    # dev: held-out examples for the dev loss / documents for the dev score ("-": none).
    print(
        f"{'task':18s} {'family':11s} {'source':8s} {'train':>6s} {'dev':>9s} {'test':>5s}  metric"
    )
    for name, cls in available_tasks().items():
        hub = {"train": "hub", "dev": "hub", "dev_scored": "hub", "test": "hub"}
        sizes = cls().sizes() if cls.source == "offline" else hub
        dev = f"{sizes['dev']}/{sizes['dev_scored'] or '-'}"
        print(
            f"{name:18s} {cls.family:11s} {cls.source:8s} {sizes['train']:>6} "
            f"{dev:>9} {sizes['test']:>5}  {cls.metric}"
        )
        if args.verbose:
            print(f"{'':18s} {cls.description}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from bench.models import builtin_models, cache_dir

    for name, text in builtin_models().items():
        ready = (cache_dir() / "models" / name / "config.json").exists()
        print(f"{name:14s} {'prepared' if ready else 'not prepared':13s} {text}")
    print("also: a path to a transformers model folder, or a hub id (needs HF_HUB_OFFLINE=0)")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from bench.models import prepare

    for source in args.models:
        print(f"{source}: {prepare(source)}")
    return 0


def _cmd_perf(args: argparse.Namespace) -> int:
    from bench import perf

    if args.repeats < 1 or args.warmup < 0:
        raise UsageError("--repeats must be >= 1 and --warmup >= 0")
    settings = perf.PerfSettings(
        model=args.model,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        dtype=args.dtype,
        device=args.device,
        repeats=args.repeats,
        warmup=args.warmup,
        methods=tuple(m for m in args.methods.split(",") if m),
        naive=not args.no_naive,
        large=args.large,
        threads=args.threads,
    )
    summary = perf.run_perf(settings, log=lambda s: print(s, file=sys.stderr))
    perf.write_outputs(
        summary,
        out=Path(args.out) if args.out else None,
        json_path=Path(args.json) if args.json else None,
    )
    print(perf.render(summary))
    missed = [t for m in summary["models"] for t in m["targets"] if t["met"] is False]
    return 1 if args.strict and missed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hizfo-bench", description=__doc__)
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the workers' log lines live (Ray log forwarding) and library warnings",
    )
    sub = parser.add_subparsers(dest="command", required=True)

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
    run.add_argument("--dry-run", action="store_true", help="list the trials, run nothing")
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

    show = sub.add_parser(
        "show",
        help="a few per-document eval records of a trial (prompt, generation, target, score)",
    )
    show.add_argument("run_dir", metavar="RUN_DIR")
    show.add_argument("trial", metavar="TRIAL", help="trial id, or a prefix of one")
    show.add_argument("-n", type=int, default=3, help="records to print (default 3)")
    show.set_defaults(func=_cmd_show)

    report = sub.add_parser(
        "report",
        help="tables and plots of a run; metrics over time of several runs",
        description="One run dir: tables (md, tex, csv) and plots into RUN_DIR/report/. "
        "Several run dirs, or a folder of runs: each metric over time (history).",
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", help="report folder (default RUN_DIR/report, or beside the runs)")
    report.set_defaults(func=_cmd_report)

    cmp = sub.add_parser(
        "compare",
        help="regression check of a run against a reference (exit 1 on a regression)",
        description="Compare CURRENT with REFERENCE trial by trial. Exit 0: no regression; "
        "1: a regression; 2: unusable input. See docs/reports.md.",
    )
    cmp.add_argument("reference", help="reference run dir, or a trial JSON file or folder")
    cmp.add_argument("current", help="run dir (or trial JSON file or folder) to check")
    cmp.add_argument("--json", help="verdict file (default CURRENT/report/compare.json)")
    cmp.add_argument(
        "--match",
        choices=("key", "id"),
        default="key",
        help="match trials by (method, task, model, seed) (default; survives config "
        "changes, with a warning) or by exact trial id",
    )
    cmp.add_argument("--abs-tol", type=float, default=0.02, help="score drop always allowed")
    cmp.add_argument("--k", type=float, default=2.0, help="standard errors of drop allowed")
    cmp.add_argument(
        "--history",
        help="results history (e.g. results/history): step times are compared only with "
        "earlier runs of CURRENT's machine filed there; without it: 'no baseline'",
    )
    cmp.add_argument(
        "--history-runs", type=int, default=5, help="newest history runs used as baseline"
    )
    cmp.add_argument(
        "--time-factor",
        type=float,
        default=1.25,
        help="smallest step-time slowdown flagged (the 95%% CI must lie above it)",
    )
    cmp.add_argument(
        "--alpha", type=float, default=0.01, help="Mann-Whitney significance level for times"
    )
    cmp.add_argument("--memory-factor", type=float, default=1.1, help="peak memory factor")
    cmp.add_argument("--memory-slack-mib", type=float, default=16.0, help="plus these MiB")
    cmp.add_argument("--ignore-time", action="store_true", help="do not check step times")
    cmp.add_argument("--ignore-memory", action="store_true", help="do not check peak memory")
    cmp.add_argument(
        "--loss-rtol",
        type=float,
        default=1e-4,
        help="relative loss change allowed on the same platform (fixed-seed runs repeat)",
    )
    cmp.add_argument(
        "--loss-factor",
        type=float,
        default=1.05,
        help="across platforms a loss may grow to this factor (+ 0.02)",
    )
    cmp.add_argument("--ignore-loss", action="store_true", help="do not check losses")
    cmp.add_argument(
        "--ratio-tol", type=float, default=0.25, help="relative growth allowed for perf time ratios"
    )
    cmp.add_argument("--ignore-ratios", action="store_true", help="do not check perf ratios")
    cmp.set_defaults(func=_cmd_compare)

    hist = sub.add_parser(
        "history",
        help="file a run under its machine in the results history (compare --history)",
        description="add: copy RUN_DIR's trial files to ROOT/<machine key>/<run>/; "
        "list: the machines and runs in ROOT. See docs/reports.md.",
    )
    hist.add_argument("action", choices=("add", "list"))
    hist.add_argument("run_dirs", nargs="*", metavar="RUN_DIR")
    hist.add_argument("--root", default="results/history", help="history folder")
    hist.set_defaults(func=_cmd_history)

    sub.add_parser("methods", help="list registered methods").set_defaults(func=_cmd_methods)
    sub.add_parser("tasks", help="list tasks").set_defaults(func=_cmd_tasks)
    sub.add_parser("models", help="list built-in models").set_defaults(func=_cmd_models)
    prep = sub.add_parser("prepare", help="build built-in models into the cache")
    prep.add_argument("models", nargs="+")
    prep.set_defaults(func=_cmd_prepare)

    pf = sub.add_parser(
        "perf", help="step time and peak memory of each method against forward/inference"
    )
    pf.add_argument("--model", default="smollm2-135m", help="model source (default embedded)")
    pf.add_argument("--batch-size", type=int, default=8)
    pf.add_argument("--seq-len", type=int, default=64)
    pf.add_argument("--dtype", default="float32")
    pf.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    pf.add_argument("--repeats", type=int, default=5, help="timed calls per phase (median)")
    pf.add_argument("--warmup", type=int, default=1, help="untimed calls before them")
    pf.add_argument("--methods", default="mezo,fo-adamw,hizfo,lora", help="comma-separated")
    pf.add_argument("--no-naive", action="store_true", help="skip the naive MeZO reference")
    pf.add_argument(
        "--large",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="on GPU, also random-init 1B-class Llama shapes (default on)",
    )
    pf.add_argument("--threads", type=int, help="torch intra-op threads")
    pf.add_argument("--json", help="write the summary (perf.json) here")
    pf.add_argument("--out", help="write a run directory: trials/<id>.json and perf.json")
    pf.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    pf.set_defaults(func=_cmd_perf)
    return parser


def main(argv: list[str] | None = None) -> int:
    from bench.config import ConfigError
    from bench.models import ModelSourceError
    from bench.registry import MethodError
    from bench.tasks import UnknownTaskError

    args = build_parser().parse_args(argv)
    if not args.verbose:  # libraries' deprecation notices are not the user's business
        warnings.filterwarnings("ignore", category=FutureWarning)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    try:
        return args.func(args)
    except (UsageError, ConfigError, MethodError, ModelSourceError, UnknownTaskError) as e:
        print(f"hizfo-bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "hizfo-bench: interrupted; finished trials are saved (run again to resume)",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:  # `hizfo-bench run --dry-run | head`: the reader left
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
