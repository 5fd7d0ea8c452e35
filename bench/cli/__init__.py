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

SUBCOMMANDS = (
    "run",
    "show",
    "report",
    "compare",
    "history",
    "catalog",
    "suites",
    "cp",
    "perf",
    "calibrate",
    "published",
)

# `hizfo-bench COMMAND --help` ends with these, unless the command's module gives its own.
EXAMPLES = {
    "run": """\
examples:
  hizfo-bench run --suite smoke                     # every piece on the tiny model
  hizfo-bench run --suite mini --out results/runs/mini
  hizfo-bench run --suite mini --print-config       # each trial's resolved spec, run nothing
  hizfo-bench run --suite mini --methods mezo,hizfo --set train.steps=50
  hizfo-bench run --suite smoke --set +methods.lora.config.rank=8   # + adds an entry""",
    "show": "example:\n  hizfo-bench show results/runs/smoke mezo -n 3",
    "report": """\
examples:
  hizfo-bench report results/runs/mini
  hizfo-bench report results/history      # several runs: metrics over time
  hizfo-bench report results/runs/new results/reference/nightly --join   # one table""",
    "compare": """\
example:
  hizfo-bench compare results/reference/nightly results/runs/nightly --history results/history""",
    "history": "examples:\n  hizfo-bench history add results/runs/nightly\n  hizfo-bench history list",
    "perf": "example:\n  hizfo-bench perf --repeats 3 --warmup 1 --methods mezo,fo-adamw,hizfo",
}

_EPILOG = """\
first look: hizfo-bench suites; hizfo-bench run --suite smoke (every piece, tiny model)
the main job: hizfo-bench run --suite mini; then hizfo-bench report RUN_DIR
`hizfo-bench COMMAND --help` has each command's options, defaults and examples"""

__all__ = ["DEFAULT_RUNS", "SUBCOMMANDS", "UsageError", "build_parser", "main"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults formatter, except that defaults which say nothing (None, False,
    empty) are not shown, and text with line breaks (the examples) keeps its lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" not in text
            and default is not argparse.SUPPRESS
            and default not in (None, False, [], ())
            and (action.option_strings or action.nargs in (argparse.OPTIONAL, "*"))
        ):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(
        prog="hizfo-bench",
        epilog=_EPILOG,
        description="Benchmark hybrid zeroth-/first-order LLM fine-tuning (Hi-ZFO) against "
        "FO AdamW, MeZO, LoRA and plugin methods: run suites, report, compare, perf.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the workers' log lines live (Ray log forwarding) and library warnings",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    for name in SUBCOMMANDS:
        importlib.import_module(f"bench.cli.{name}").add_parser(sub)
    for name, text in EXAMPLES.items():
        if name in sub.choices and not sub.choices[name].epilog:
            sub.choices[name].epilog = text
    return parser


def main(argv: list[str] | None = None) -> int:
    from bench.config import ConfigError
    from bench.models import ModelSourceError
    from bench.record import ContractError
    from bench.registry import MethodError
    from bench.tasks import UnknownTaskError

    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # run.json's command line
    if not args.verbose:  # libraries' deprecation notices are not the user's business
        warnings.filterwarnings("ignore", category=FutureWarning)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    try:
        return args.func(args)
    except (
        UsageError,
        ConfigError,
        ContractError,  # a trial file a command must not read (a newer schema, ...)
        MethodError,
        ModelSourceError,
        UnknownTaskError,
    ) as e:
        print(f"hizfo-bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM during run (exit 143)
        from bench.orchestrate.signals import exit_code

        print(
            "hizfo-bench: interrupted; finished trials are saved (run again to resume)",
            file=sys.stderr,
        )
        return exit_code(e)
    except BrokenPipeError:  # `hizfo-bench run --dry-run | head`: the reader left
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
