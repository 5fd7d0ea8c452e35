"""`hizfo-bench cp SUITE FILE`: copy a bundled suite to a file of one's own to edit."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from bench.cli.errors import UsageError


def _cmd_cp(args: argparse.Namespace) -> int:
    from bench.suite import resolve_suite_path

    source = resolve_suite_path(args.suite)  # an unknown name lists the bundled suites
    target = Path(args.file)
    if target.is_dir():
        target = target / source.name
    if target.exists() and not args.force:
        raise UsageError(f"{target} exists; pass --force to overwrite it")
    if not target.parent.is_dir():
        raise UsageError(f"{target.parent} is not a directory")
    if target.exists() and target.resolve() == source.resolve():
        raise UsageError(f"{target} is the suite itself")
    # The copy is named after its file, so its runs (results/runs/<name>-<time>) do not
    # land beside the bundled suite's.
    text, renamed = re.subn(
        r"^name:[ \t]*\S.*$", f"name: {target.stem}", source.read_text(), count=1, flags=re.M
    )
    target.write_text(text)
    note = f" (name: {target.stem})" if renamed else ""
    print(f"wrote {target}{note}; edit it, then: hizfo-bench run --suite {target}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The cp subcommand."""
    cp = sub.add_parser(
        "cp",
        help="copy a bundled suite to a file to edit",
        epilog="examples:\n  hizfo-bench cp smoke my-smoke.yaml\n"
        "  hizfo-bench run --suite my-smoke.yaml --print-config",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cp.add_argument("suite", help="a bundled suite (`hizfo-bench suites`) or a suite file")
    cp.add_argument("file", help="the new file (or a folder: FOLDER/<suite>.yaml)")
    cp.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    cp.set_defaults(func=_cmd_cp)
