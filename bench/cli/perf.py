"""`hizfo-bench perf`: step time and peak memory of each method against its floors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.cli.errors import UsageError


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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The perf subcommand."""
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
