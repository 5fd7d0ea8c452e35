"""`hizfo-bench suites`: the bundled suites, with their descriptions and trial counts;
and `run --print-config`'s printer (each trial's resolved spec, the tuning points)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def suite_summary(name_or_path: str) -> tuple[str, str, str]:
    """(name, description, trials) of one suite; trials says how many tuning trials run
    first. Nothing is run and no hub is asked (as a dry run)."""
    from bench.config import ConfigError
    from bench.orchestrate.tuning import planned_trials
    from bench.suite import load_plan, read_suite

    path, raw = read_suite(name_or_path)
    description = " ".join(str(raw.get("description") or "").split())
    try:
        suite = load_plan(name_or_path, check_sources=False)
    except ConfigError as e:
        return str(raw.get("name", path.stem)), description, f"invalid: {e}"
    trials = str(len(suite.specs))
    if suite.tuning:
        trials += f" (+{planned_trials(suite.specs, suite.tuning)} tuning)"
    return suite.name, description, trials


def _cmd_suites(args: argparse.Namespace) -> int:
    from bench.suite import SUITES_DIR

    rows = [(p.stem, *suite_summary(str(p))[1:]) for p in sorted(SUITES_DIR.glob("*.yaml"))]
    width = max(len(r[0]) for r in rows)
    counts = max(len(r[2]) for r in rows)
    print(f"{'suite':{width}s}  {'trials':>{counts}s}  description")
    for name, description, trials in rows:
        print(f"{name:{width}s}  {trials:>{counts}s}  {description}".rstrip())
    print(
        "run one: hizfo-bench run --suite NAME; copy one to edit: hizfo-bench cp NAME FILE; "
        "its trials: hizfo-bench run --suite NAME --print-config"
    )
    return 0


def print_config(suite: Any, run_dir: Path) -> int:
    """Each final trial's resolved spec as YAML (a list; the file parses back), then the
    tuning plan with every point and its values as YAML comments."""
    import yaml

    from bench.orchestrate.tuning import describe, planned_trials

    specs = suite.specs
    tuning = f", after {planned_trials(specs, suite.tuning)} tuning trials" if suite.tuning else ""
    print(f"# suite {suite.name}: {len(specs)} trials{tuning} (run dir {run_dir})")
    for spec in specs:
        print(yaml.safe_dump([{"trial_id": spec.trial_id, **spec.to_dict()}], sort_keys=False))
    if suite.tuning:
        print("# tuning (the trial ids above take the chosen values after tuning):")
        for line in describe(specs, suite.tuning):
            print(f"# {line}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The suites subcommand."""
    sub.add_parser(
        "suites",
        help="list the bundled suites: name, trials, description",
        epilog="examples:\n  hizfo-bench suites\n  hizfo-bench cp smoke my-suite.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).set_defaults(func=_cmd_suites)
