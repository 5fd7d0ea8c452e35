"""`hizfo-bench methods [NAME] | tasks | models | prepare`: what the suite can run."""

from __future__ import annotations

import argparse
import shutil
import textwrap

from bench.cli.errors import UsageError

_FAMILY_ORDER = ("math", "code", "generative")


def _cmd_methods(args: argparse.Namespace) -> int:
    from bench.registry import MethodError, available_methods, config_fields, load_method

    if not args.name:
        for name, target in available_methods().items():
            print(f"{name:16s} {target}")
        print("`hizfo-bench methods NAME` shows a method's config fields")
        return 0
    try:
        cls = load_method(args.name)
    except MethodError as e:
        raise UsageError(str(e)) from None
    doc = (cls.__doc__ or "").strip().splitlines()
    print(f"{args.name}: {doc[0] if doc else cls.__name__}")
    print(
        f"config ({cls.config_class.__name__}), set as methods.{args.name}.config.KEY in a suite:"
    )
    fields = config_fields(cls.config_class)
    width = max((len(f.name) for f in fields), default=4)
    kinds = max((len(f.type) for f in fields), default=4)
    defaults = max((len(f.default) for f in fields), default=4)
    # One line per field: the doc's first sentence, cut to the terminal's width.
    room = max(40, shutil.get_terminal_size((120, 24)).columns - width - kinds - defaults - 11)
    for f in fields:
        doc = textwrap.shorten(f.doc, room, placeholder=" ...") if f.doc else ""
        print(f"  {f.name:{width}s}  {f.type:{kinds}s}  = {f.default:{defaults}s}  {doc}".rstrip())
    return 0


def _sort_key(item: tuple[str, type]) -> tuple:
    name, cls = item
    family = _FAMILY_ORDER.index(cls.family) if cls.family in _FAMILY_ORDER else 99
    return (family, cls.source != "offline", name)


def _cmd_tasks(args: argparse.Namespace) -> int:
    from bench.tasks import available_tasks, task_types

    # Hub sizes would need a download; offline sizes are cheap (data generated or cached).
    # dev: held-out examples for the dev loss / documents for the dev score ("-": none).
    print(
        f"{'task':18s} {'family':11s} {'source':8s} {'train':>6s} {'dev':>9s} {'test':>5s}  metric"
    )
    for name, cls in sorted(available_tasks().items(), key=_sort_key):
        hub = {"train": "hub", "dev": "hub", "dev_scored": "hub", "test": "hub"}
        sizes = cls().sizes() if cls.source == "offline" else hub
        dev = f"{sizes['dev']}/{sizes['dev_scored'] or '-'}"
        print(
            f"{name:18s} {cls.family:11s} {cls.source:8s} {sizes['train']:>6} "
            f"{dev:>9} {sizes['test']:>5}  {cls.metric}"
        )
        if args.verbose:
            print(f"{'':18s} {cls.description}")
    for name, cls in task_types().items():
        print(f"type {name}: {cls.description} (docs/tasks.md)")
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
    fmt = argparse.ArgumentDefaultsHelpFormatter
    methods = sub.add_parser(
        "methods",
        help="list registered methods, or one method's config fields",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  hizfo-bench methods\n  hizfo-bench methods hizfo",
    )
    methods.add_argument(
        "name", nargs="?", help="a method: show its config fields, types, defaults and docs"
    )
    methods.set_defaults(func=_cmd_methods)
    tasks = sub.add_parser("tasks", help="list tasks and task types", formatter_class=fmt)
    # Also accepted before the subcommand (`hizfo-bench -v tasks`); SUPPRESS keeps that one.
    tasks.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="a one-line description of each task",
    )
    tasks.set_defaults(func=_cmd_tasks)
    sub.add_parser("models", help="list built-in models").set_defaults(func=_cmd_models)
    prep = sub.add_parser(
        "prepare",
        help="build built-in models into the cache",
        epilog="example: hizfo-bench prepare smollm2-135m tiny",
    )
    prep.add_argument("models", nargs="+", help="built-in model names (`hizfo-bench models`)")
    prep.set_defaults(func=_cmd_prepare)
