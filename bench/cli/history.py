"""`hizfo-bench history`: file runs under their machine; list what is filed."""

from __future__ import annotations

import argparse

from bench.cli.errors import UsageError


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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The history subcommand."""
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
