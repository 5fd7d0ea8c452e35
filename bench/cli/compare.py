"""`hizfo-bench compare`: the regression check of a run against a reference."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.errors import UsageError


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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The compare subcommand."""
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
