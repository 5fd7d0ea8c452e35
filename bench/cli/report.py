"""`hizfo-bench report`: tables and plots of a run, or a history of several."""

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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The report subcommand."""
    report = sub.add_parser(
        "report",
        help="tables and plots of a run; metrics over time of several runs",
        description="One run dir: tables (md, tex, csv) and plots into RUN_DIR/report/. "
        "Several run dirs, or a folder of runs: each metric over time (history).",
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", help="report folder (default RUN_DIR/report, or beside the runs)")
    report.set_defaults(func=_cmd_report)
