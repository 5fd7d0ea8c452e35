"""`hizfo-bench methods [NAME] | tasks | models | prepare`: what the suite can run."""

from __future__ import annotations

import argparse
import shlex
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
    # One line per field, the doc cut to the terminal's width; -v: the whole doc, wrapped.
    columns = shutil.get_terminal_size((120, 24)).columns
    room = max(40, columns - width - kinds - defaults - 11)
    for f in fields:
        doc = textwrap.shorten(f.doc, room, placeholder=" ...") if f.doc else ""
        if args.verbose:
            doc = textwrap.fill(
                f.doc, max(40, columns - 6), subsequent_indent=" " * 6, break_on_hyphens=False
            )
            print(f"  {f.name:{width}s}  {f.type:{kinds}s}  = {f.default}")
            print(f"      {doc}" if doc else "", end="\n" if doc else "")
            continue
        print(f"  {f.name:{width}s}  {f.type:{kinds}s}  = {f.default:{defaults}s}  {doc}".rstrip())
    if not args.verbose and any(len(" ".join(f.doc.split())) > room for f in fields):
        print(f"(docs cut to the terminal; `hizfo-bench methods {args.name} -v` shows them whole)")
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


def _cmd_tasks_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.orchestrate.lm_eval_export import export_task
    from bench.spec import EvalConfig
    from bench.tasks import TaskError, get_task

    folder = Path(args.dir)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())) and not args.force:
        raise UsageError(f"{folder} exists and is not empty; pass --force to replace it")
    eval_cfg, config = EvalConfig(), None
    if args.suite:
        from bench.suite import load_suite

        _, specs = load_suite(args.suite)  # a bad suite: ConfigError, one line
        mine = [s for s in specs if s.task == args.name]
        if not mine:
            names = sorted({s.task for s in specs})
            raise UsageError(f"suite {args.suite} has no task {args.name!r}; its tasks: {names}")
        eval_cfg, config = mine[0].eval, mine[0].task_config
    try:
        task = get_task(args.name, config)
        task.eval_documents()  # a task whose data is unavailable stops here, nothing written
    except TaskError as e:
        raise UsageError(str(e)) from None
    path, command = export_task(
        task,
        folder,
        max_gen_toks=args.max_gen_toks or eval_cfg.max_gen_toks,
        batch_size=eval_cfg.batch_size,
        limit=args.limit if args.limit is not None else eval_cfg.limit,
    )
    print(f"wrote {path.parent}/ ({path.name}, the test documents, the function shim)")
    print("score a checkpoint (a save: final folder, a hub id) as the suite does:")
    print("  " + shlex.join(command))
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
        epilog="examples:\n  hizfo-bench methods\n  hizfo-bench methods hizfo\n"
        "  hizfo-bench methods hizfo -v",
    )
    methods.add_argument(
        "name", nargs="?", help="a method: show its config fields, types, defaults and docs"
    )
    methods.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="each field's whole doc, wrapped (by default cut to the terminal's width)",
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
    tasks_sub = tasks.add_subparsers(dest="tasks_command", metavar="{export}")
    export = tasks_sub.add_parser(
        "export",
        help="write a task as an lm-eval task folder, to score any checkpoint with lm_eval",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  hizfo-bench tasks export math-mini lm-tasks/math-mini\n"
        "  hizfo-bench tasks export sums out/sums --suite my.yaml   # a suite's own task\n"
        "  lm_eval --model hf --model_args pretrained=<checkpoint> "
        "--include_path lm-tasks/math-mini --tasks hizfo_math_mini",
    )
    export.add_argument("name", help="a task (`hizfo-bench tasks`), or one of --suite's")
    export.add_argument("dir", help="the folder to write (lm_eval's --include_path)")
    export.add_argument(
        "--suite", help="take the task's definition and eval settings from this suite"
    )
    export.add_argument(
        "--max-gen-toks", type=int, help="generation budget (default: the suite's, else 128)"
    )
    export.add_argument(
        "--limit", type=int, help="test documents in the command (default: the suite's, else 100)"
    )
    export.add_argument("--force", action="store_true", help="replace DIR if it is not empty")
    export.set_defaults(func=_cmd_tasks_export)
    sub.add_parser("models", help="list built-in models").set_defaults(func=_cmd_models)
    prep = sub.add_parser(
        "prepare",
        help="build built-in models into the cache",
        epilog="example: hizfo-bench prepare smollm2-135m tiny",
    )
    prep.add_argument("models", nargs="+", help="built-in model names (`hizfo-bench models`)")
    prep.set_defaults(func=_cmd_prepare)
