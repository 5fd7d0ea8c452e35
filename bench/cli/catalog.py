"""`hizfo-bench methods | tasks | models | prepare`: what the suite can run."""

from __future__ import annotations

import argparse


def _cmd_methods(args: argparse.Namespace) -> int:
    from bench.registry import available_methods

    for name, target in available_methods().items():
        print(f"{name:12s} {target}")
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from bench.tasks import available_tasks

    # Hub sizes would need a download; offline sizes are cheap (data generated or cached).
    # dev: held-out examples for the dev loss / documents for the dev score ("-": none).
    print(
        f"{'task':18s} {'family':11s} {'source':8s} {'train':>6s} {'dev':>9s} {'test':>5s}  metric"
    )
    for name, cls in available_tasks().items():
        hub = {"train": "hub", "dev": "hub", "dev_scored": "hub", "test": "hub"}
        sizes = cls().sizes() if cls.source == "offline" else hub
        dev = f"{sizes['dev']}/{sizes['dev_scored'] or '-'}"
        print(
            f"{name:18s} {cls.family:11s} {cls.source:8s} {sizes['train']:>6} "
            f"{dev:>9} {sizes['test']:>5}  {cls.metric}"
        )
        if args.verbose:
            print(f"{'':18s} {cls.description}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from bench.models import builtin_models, cache_dir

    for name, text in builtin_models().items():
        ready = (cache_dir() / "models" / name / "config.json").exists()
        print(f"{name:14s} {'prepared' if ready else 'not prepared':13s} {text}")
    print("also: a path to a transformers model folder, or a hub id (needs HF_HUB_OFFLINE=0)")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from bench.models import prepare

    for source in args.models:
        print(f"{source}: {prepare(source)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The methods, tasks, models and prepare subcommands."""
    sub.add_parser("methods", help="list registered methods").set_defaults(func=_cmd_methods)
    sub.add_parser("tasks", help="list tasks").set_defaults(func=_cmd_tasks)
    sub.add_parser("models", help="list built-in models").set_defaults(func=_cmd_models)
    prep = sub.add_parser("prepare", help="build built-in models into the cache")
    prep.add_argument("models", nargs="+")
    prep.set_defaults(func=_cmd_prepare)
