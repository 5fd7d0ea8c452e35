"""`hizfo-bench calibrate`: how often the claims' verdicts are wrong on simulated runs
with a known truth (bench/analysis/calibrate.py; docs/claims.md)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench.cli.errors import UsageError


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from bench.analysis import calibrate
    from bench.report.claims import verdicts_of_run

    for name, low in (("seeds", 1), ("documents", 2), ("replicates", 10), ("workers", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise UsageError(f"--{name} must be at least {low}, got {value}")
    if args.json and not Path(args.json).parent.is_dir():
        raise UsageError(f"--json: folder {Path(args.json).parent} does not exist")
    seeds = (args.seeds,) if args.seeds else (3, 5)
    rates, seconds = calibrate.run(
        verdicts_of_run, seeds, args.documents, args.replicates, args.workers, args.seed
    )
    print(calibrate.render(rates, seconds))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "seeds": list(seeds),
                    "documents": args.documents,
                    "replicates": args.replicates,
                    "seed": args.seed,
                    "wall_seconds": seconds,
                    "nominal": calibrate.NOMINAL,
                    "rates": [r.to_dict() for r in rates],
                },
                indent=1,
            )
        )
        print(f"wrote {args.json}")
    return 0 if all(r.ok for r in rates) else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The calibrate subcommand."""
    cal = sub.add_parser(
        "calibrate",
        help="measure the claims' false-verdict rates and power on simulated runs",
        description="Runs the verdict code `report` uses on simulated runs with known truth "
        "(no effect at seed sd 0 / 0.5 / 1, planted score, time and never-reached effects, "
        "claim 3 with and without a ZO dose) and prints each verdict's rate per claim and "
        "setting. Exit status 1 when a false-verdict rate exceeds its bound. See "
        "docs/claims.md.",
    )
    cal.add_argument("--json", metavar="PATH", help="also write the rates as JSON")
    cal.add_argument("--seeds", type=int, help="seeds per simulated run (default: 3 and 5)")
    cal.add_argument("--documents", type=int, default=30, help="test documents (default 30)")
    cal.add_argument(
        "--replicates", type=int, default=400, help="simulated runs per setting (default 400)"
    )
    cal.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="processes (default: 2, or 1 on one core)",
    )
    cal.add_argument("--seed", type=int, default=0, help="random seed of the simulation")
    cal.set_defaults(func=_cmd_calibrate)
