"""`hizfo-bench report`: tables and plots of a run; a history, or with ``--join`` one
table, of several."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.cli.errors import UsageError


def _cmd_report(args: argparse.Namespace) -> int:
    from bench import report, store

    paths = [Path(p) for p in args.run_dirs]
    runs = report.find_runs(paths)
    for p in paths:
        if not report.find_runs([p]):
            raise UsageError(f"{p} is not a run directory (no trials/ folder inside) nor holds any")
    if args.join:
        return _cmd_join(runs, args)
    if len(paths) == 1 and runs == paths:
        run_dir = paths[0]
        files = store.read_run(run_dir)  # a newer schema: ContractError, one line, exit 2
        if not files.records:
            raise UsageError(f"{run_dir} holds no trial files that keep the contract")
        for line in report.skipped_lines(files.skipped)[:1]:
            print(f"warning: {line}")
        print(report.summary_table(store.records_frame(files.records, run=run_dir.name)))
        written = report.write_report(run_dir, Path(args.out) if args.out else None)
    else:
        # Several runs (or a folder of them): a history, written beside the runs.
        out = Path(args.out) if args.out else _default_out(runs, "history")
        written = report.write_history(runs, out)
        print(f"history of {len(runs)} runs")
    print(f"\nwrote {len(written)} files into {os.path.commonpath(written)}")
    return 0


def _default_out(runs: list[Path], name: str) -> Path:
    """Beside the runs: their common parent's report/ (report/<name>/ when that parent is
    itself one of the runs)."""
    out = Path(os.path.commonpath(runs)) / "report"
    if out.parent in runs:
        out = out.parent / "report" / name
    return out


def _cmd_join(runs: list[Path], args: argparse.Namespace) -> int:
    from bench import store
    from bench.report.join import write_join

    if len(runs) < 2:
        raise UsageError(f"--join needs two or more run directories; got {len(runs)}")
    for run in runs:
        if not store.read_trials(run):
            raise UsageError(f"{run} holds no trial files")
    written = write_join(runs, Path(args.out) if args.out else _default_out(runs, "join"))
    print(written[0].read_text())
    print(f"joint table of {len(runs)} runs: wrote {', '.join(str(p) for p in written)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The report subcommand."""
    report = sub.add_parser(
        "report",
        help="tables and plots of a run; metrics over time of several runs",
        description="One run dir: tables (md, tex, csv), trials.csv, plots and index.html "
        "into RUN_DIR/report/. Several run dirs, or a folder of runs: each metric over "
        "time (history), or with --join one table over the runs.",
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", help="report folder (default RUN_DIR/report, or beside the runs)")
    report.add_argument(
        "--join",
        action="store_true",
        help="with several runs: one table over them (rows keyed by method and run), "
        "join.md and join.csv, instead of a history",
    )
    report.set_defaults(func=_cmd_report)
