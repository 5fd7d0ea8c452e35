"""The `hizfo-bench` command: run, report, methods, tasks, models."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
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
    from bench import runner, store
    from bench.report import summary_table
    from bench.suite import load_suite

    name, specs = load_suite(args.suite)
    run_dir = (
        Path(args.out) if args.out else DEFAULT_RUNS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if args.dry_run:
        done = store.finished_ids(run_dir) if run_dir.exists() else set()
        print(f"suite {name}: {len(specs)} trials (run dir {run_dir})")
        for s in specs:
            mark = "done" if s.trial_id in done else "todo"
            print(f"  [{mark}] {s.trial_id}")
        return 0
    print(f"suite {name}: {len(specs)} trials -> {run_dir}", file=sys.stderr)
    t0 = time.time()
    runner.run_trials(
        specs,
        run_dir,
        address=args.address,
        num_cpus=args.num_cpus,
        cpus_per_trial=args.cpus_per_trial,
    )
    frame = store.load_frame(run_dir)
    frame = frame[frame["trial_id"].isin({s.trial_id for s in specs})]
    print(f"\n{name}: {len(frame)} trials in {run_dir} ({time.time() - t0:.0f} s)\n")
    print(summary_table(frame))
    return 0 if (frame["status"] == "ok").all() else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from bench import store
    from bench.report import summary_table

    run_dir = Path(args.run_dir)
    if not store.trials_dir(run_dir).is_dir():
        raise UsageError(f"{run_dir} is not a run directory (no trials/ folder inside)")
    print(summary_table(store.load_frame(run_dir)))
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from bench.registry import available_methods

    for name, target in available_methods().items():
        print(f"{name:12s} {target}")
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from bench.tasks import available_tasks

    print(f"{'task':14s} {'family':11s} {'source':8s} {'train':>6s} {'test':>5s}  metric")
    for name, cls in available_tasks().items():
        sizes = cls().sizes() if cls.source == "offline" else {"train": "hub", "test": "hub"}
        print(
            f"{name:14s} {cls.family:11s} {cls.source:8s} {sizes['train']:>6} "
            f"{sizes['test']:>5}  {cls.metric}"
        )
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hizfo-bench", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every trial step")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a suite (resumes an existing --out directory)")
    run.add_argument("--suite", default="mini", help="bundled suite name or YAML path")
    run.add_argument("--out", help="run directory (default results/runs/<suite>-<time>)")
    run.add_argument("--address", help="address of an existing Ray cluster (default: local)")
    run.add_argument("--num-cpus", type=int, help="CPUs of the local Ray cluster")
    run.add_argument("--cpus-per-trial", type=int, help="CPU threads per trial")
    run.add_argument("--dry-run", action="store_true", help="list the trials, run nothing")
    run.set_defaults(func=_cmd_run)

    report = sub.add_parser("report", help="tables of a run directory")
    report.add_argument("run_dir")
    report.set_defaults(func=_cmd_report)

    sub.add_parser("methods", help="list registered methods").set_defaults(func=_cmd_methods)
    sub.add_parser("tasks", help="list tasks").set_defaults(func=_cmd_tasks)
    sub.add_parser("models", help="list built-in models").set_defaults(func=_cmd_models)
    prep = sub.add_parser("prepare", help="build built-in models into the cache")
    prep.add_argument("models", nargs="+")
    prep.set_defaults(func=_cmd_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    from bench.config import ConfigError
    from bench.models import ModelSourceError
    from bench.registry import MethodError
    from bench.tasks import UnknownTaskError

    args = build_parser().parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
