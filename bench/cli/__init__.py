"""The `hizfo-bench` command. One module per subcommand (or family of them), each with
`add_parser(sub)` and its command functions; a new subcommand is one module plus one entry
in SUBCOMMANDS."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

# Offline unless the user opts in (HF_HUB_OFFLINE=0): nothing here may reach a hub by
# accident. Set before transformers / datasets / lm-eval are imported anywhere.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.cli.errors import DEFAULT_RUNS, UsageError  # noqa: E402 (after the environment)

SUBCOMMANDS = ("run", "show", "report", "compare", "history", "catalog", "perf", "calibrate")

__all__ = ["DEFAULT_RUNS", "SUBCOMMANDS", "UsageError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="hizfo-bench",
        description="Benchmark hybrid zeroth-/first-order LLM fine-tuning (Hi-ZFO) against "
        "FO AdamW, MeZO, LoRA and plugin methods: run suites, report, compare, perf.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the workers' log lines live (Ray log forwarding) and library warnings",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"bench.cli.{name}").add_parser(sub)
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
