"""`hizfo-bench published`: check (or rewrite) the README's published blocks against the run
directories committed under results/published/ (bench/report/published.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.errors import UsageError


def _cmd_published(args: argparse.Namespace) -> int:
    from bench.report import published

    if args.add:
        try:
            dest = published.publish(
                Path(args.add), args.name or Path(args.add).name, Path(args.root)
            )
        except (FileNotFoundError, FileExistsError, ValueError) as e:
            raise UsageError(str(e)) from None
        print(f"published {args.add} as {dest} (kept: {', '.join(published.KEPT)}; report/)")
        return 0
    files = [Path(f) for f in args.files]
    for f in files:
        if not f.is_file():
            raise UsageError(f"{f} does not exist")
    stale = 0
    for f in files:
        text = f.read_text()
        try:
            new, changed = published.render_blocks(text, Path(args.root))
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(f"{f}: {e}") from None
        blocks = len(published.find_blocks(text))
        if args.write and changed:
            f.write_text(new)
            print(f"{f}: rewrote {len(changed)} of {blocks} block(s): {', '.join(changed)}")
        elif changed:
            stale += len(changed)
            print(
                f"{f}: {len(changed)} of {blocks} block(s) differ from the runs: {', '.join(changed)}"
            )
        else:
            print(f"{f}: {blocks} block(s) match the committed runs")
    return 1 if stale else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The published subcommand."""
    p = sub.add_parser(
        "published",
        help="check the README's published numbers against results/published/",
        description="Regenerates each `<!-- published: RUN FILE#PART -->` block of the given "
        "Markdown files from the run directories committed under --root (a fresh "
        "`report` of each) and compares. Exit 1 when a block differs (0 with --write, "
        "which rewrites them).",
    )
    p.add_argument("files", nargs="*", default=["README.md"], help="Markdown files (README.md)")
    p.add_argument("--root", default="results/published", help="published run directories")
    p.add_argument("--write", action="store_true", help="rewrite the blocks from the runs")
    p.add_argument(
        "--add",
        metavar="RUN_DIR",
        help="publish a run: copy its trials, samples, targets/tuning files (and suite.yaml, "
        "run.log when present) under --root and write its report",
    )
    p.add_argument("--name", help="the published folder's name (with --add; default: RUN_DIR's)")
    p.set_defaults(func=_cmd_published)
