"""What every subcommand shares: the one-line usage error and the default run folder."""

from __future__ import annotations

from pathlib import Path

DEFAULT_RUNS = Path("results") / "runs"


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""
