"""Suites: YAML files that expand into trial specs (methods x tasks x models x seeds).

A suite file::

    name: mini
    models: [smollm2-135m]
    tasks: [math-mini]              # a list, or a mapping name -> {train: ..., eval: ...}
    methods:                        # a list, or a mapping name -> {config:, train:, eval:}
      none: {}
      fo-adamw: {config: {lr: 1.0e-5}}
      mezo: {config: {lr: 1.0e-6}, train: {steps: 100}}
    seeds: [0]
    train: {steps: 40, batch_size: 8}      # defaults for every trial
    eval: {limit: 50, max_gen_toks: 96}

Precedence for train/eval settings: suite < task < method. Everything is checked
before anything runs: unknown keys, unknown methods and tasks, bad method configs.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.config import ConfigError, build, load_yaml, yaml_error_line
from bench.measure.sharpness import SharpnessConfig
from bench.spec import DevConfig, EvalConfig, ResourcesConfig, TrainConfig, TrialSpec

SUITES_DIR = Path(__file__).parent / "suites"
DEFAULT_SUITE = "mini"
_SUITE_KEYS = {
    "name",
    "description",
    "models",
    "tasks",
    "methods",
    "seeds",
    "train",
    "eval",
    "dev",
    "measure",
    "resources",
    "targets",
    "tuning",
}
_OVERRIDE_KEYS = {"config", "by_task", "train", "eval", "dev", "measure", "resources", "search"}
# Keys that only a method entry has (a task has no method config).
_METHOD_ONLY_KEYS = {"config", "by_task", "search"}


# Seeds seed torch, NumPy and the data order: torch takes any 64-bit seed, so a larger
# integer would pass here and fail in every worker.
MAX_SEED = 2**63 - 1


def check_name(name: Any, where: str) -> None:
    """A suite's `name` names its run folder (``results/runs/<name>-<time>``): it must be a
    plain file name, never a path (``../x``, ``a/b``) or empty."""
    plain = (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(c in name for c in "/\\\0")
        and name.isprintable()
    )
    if not plain:
        raise ConfigError(
            f"{where}: {name!r} is not a plain file name (it names the run folder "
            "results/runs/<name>-<time>: no '/', not empty, not '.' or '..')"
        )


def bundled_suites() -> list[str]:
    """The names of the suites shipped in bench/suites/."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def resolve_suite_path(name_or_path: str) -> Path:
    """A suite argument's file: a path to a file is that file; otherwise a bundled name
    wins (a folder named like a bundled suite, such as a run directory ``--out smoke``,
    does not shadow it); a folder or a missing path is a ConfigError saying which."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = SUITES_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    known = ", ".join(bundled_suites())
    if path.is_dir():
        raise ConfigError(
            f"suite {name_or_path!r} is a directory, not a suite file; "
            f"give a YAML file or a bundled suite: {known}"
        )
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        raise ConfigError(f"suite file {name_or_path!r} does not exist")
    raise ConfigError(f"unknown suite {name_or_path!r}; bundled suites: {known}, or a path")


def _as_mapping(
    value: Any, where: str, allowed: set[str] = _OVERRIDE_KEYS
) -> dict[str, dict[str, Any]]:
    if isinstance(value, list):
        return {str(v): {} for v in value}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = v or {}
            if not isinstance(v, dict):
                raise ConfigError(f"{where}.{k}: expected a mapping, got {v!r}")
            unknown = sorted(set(v) - allowed)
            if unknown:
                raise ConfigError(
                    f"{where}.{k}: unknown key(s) {', '.join(unknown)}; "
                    f"valid keys: {', '.join(sorted(allowed))}"
                )
            for key, sub in v.items():
                if sub is not None and not isinstance(sub, dict):
                    raise ConfigError(f"{where}.{k}.{key}: expected a mapping, got {sub!r}")
            out[str(k)] = v
        return out
    raise ConfigError(f"{where}: expected a list or a mapping, got {value!r}")


def read_suite(name_or_path: str) -> tuple[Path, dict[str, Any]]:
    """The suite file's path and its raw mapping (YAML checked, nothing else yet)."""
    path = resolve_suite_path(name_or_path)
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(yaml_error_line(path, e)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"suite {str(path)!r} cannot be read: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"suite {str(path)!r}: expected a mapping at the top level")
    return path, raw


def load_plan(
    name_or_path: str,
    *,
    check_sources: bool = True,
    overrides: tuple[str, ...] | list[str] = (),
    only: dict[str, list[Any]] | None = None,
) -> Suite:
    """Read and validate a suite: its final trial specs, tuning plan and targets.

    `overrides` are ``KEY=VALUE`` changes (``--set``) and `only` keeps the named
    methods / tasks / models / seeds (bench/overrides.py); both apply to the suite
    mapping before any check, so the result is validated exactly like a file.
    check_sources=False skips the model-source checks that need a hub (a dry run of a
    hub-backed suite offline); methods, tasks and configs are still validated.
    """
    from bench.overrides import apply_filters, apply_overrides
    from bench.tasks import resolve_paths

    path, raw = read_suite(name_or_path)
    if overrides:
        raw = apply_overrides(raw, overrides, suite_keys=_SUITE_KEYS, entry_keys=_OVERRIDE_KEYS)
    if only:
        raw = apply_filters(raw, only)
    raw = resolve_paths(raw, path.parent)  # a typed task's files: relative to the suite
    specs = expand(raw, where=path.name, check_sources=check_sources)
    suite = plan_from_raw(raw, specs, where=path.name)
    suite.name = raw.get("name", path.stem)
    return suite


def load_suite(
    name_or_path: str,
    *,
    check_sources: bool = True,
    overrides: tuple[str, ...] | list[str] = (),
    only: dict[str, list[Any]] | None = None,
) -> tuple[str, list[TrialSpec]]:
    """Read and validate a suite; return its name and the expanded (final) trial specs."""
    suite = load_plan(name_or_path, check_sources=check_sources, overrides=overrides, only=only)
    return suite.name, suite.specs


def expand(
    raw: dict[str, Any], where: str = "suite", *, check_sources: bool = True
) -> list[TrialSpec]:
    from bench.models import ModelSourceError, check_source
    from bench.registry import MethodError, load_method
    from bench.tasks import TaskError, get_task, split_definitions

    unknown = sorted(set(raw) - _SUITE_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(_SUITE_KEYS))}"
        )
    for key in ("models", "tasks", "methods"):
        if not raw.get(key):
            raise ConfigError(f"{where}: '{key}' is required and must not be empty")
    models = [str(m) for m in raw["models"]]
    # A task has no method config: `config` under a task would be silently ignored.
    # A task with `type` (jsonl, ...) is defined in the suite: its definition goes to the
    # task type, the rest are the usual per-task settings.
    definitions, raw_tasks = split_definitions(raw["tasks"])
    tasks = _as_mapping(raw_tasks, f"{where}.tasks", _OVERRIDE_KEYS - _METHOD_ONLY_KEYS)
    methods = _as_mapping(raw["methods"], f"{where}.methods")
    if "name" in raw:
        check_name(raw["name"], f"{where}.name")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not all(type(s) is int and 0 <= s <= MAX_SEED for s in seeds):
        raise ConfigError(
            f"{where}.seeds: expected a list of integers in 0..{MAX_SEED}, got {seeds!r}"
        )
    if not seeds:
        raise ConfigError(f"{where}.seeds: must name at least one seed, got []")
    if len(set(seeds)) < len(seeds):
        raise ConfigError(f"{where}.seeds: {seeds!r} repeats a seed (a trial would run twice)")
    for key in ("train", "eval", "dev", "measure", "resources"):
        if not isinstance(raw.get(key) or {}, dict):
            raise ConfigError(f"{where}.{key}: expected a mapping, got {raw[key]!r}")

    task_configs: dict[str, dict[str, Any]] = {}
    for task in tasks:
        try:
            # Unknown names always; hub data out of reach, a missing sandbox or a damaged
            # data file unless this is a dry run: all before any trial runs or writes a file.
            checked = get_task(task, definitions.get(task))
            task_configs[task] = checked.spec_config()
            if check_sources:
                checked.check_available()
        except TaskError as e:
            raise ConfigError(f"{where}.tasks: {task}: {e}") from None
    for model in models if check_sources else []:
        try:
            check_source(model)
        except ModelSourceError as e:
            raise ConfigError(f"{where}.models: {e}") from None
    # (method, task) -> the method's config on that task: `config`, with the task's
    # `by_task` entry over it (settings tuned per task, as claims-tune chooses them).
    method_configs: dict[tuple[str, str], dict[str, Any]] = {}
    for name, override in methods.items():
        try:
            cls = load_method(name)
        except MethodError as e:
            raise ConfigError(f"{where}.methods: {e}") from None
        by_task = override.get("by_task") or {}
        stray = sorted(set(by_task) - set(tasks))
        if stray:
            raise ConfigError(
                f"{where}.methods.{name}.by_task: {', '.join(map(str, stray))} "
                f"not among the suite's tasks ({', '.join(tasks)})"
            )
        built: dict[str, dict[str, Any]] = {}  # tasks without by_task share `config`
        for task in tasks:
            per_task = by_task.get(task)
            if per_task is not None and not isinstance(per_task, dict):
                raise ConfigError(
                    f"{where}.methods.{name}.by_task.{task}: expected a mapping, got {per_task!r}"
                )
            key = f"{where}.methods.{name}." + (f"by_task.{task}" if per_task else "config")
            if key not in built:
                cfg = build(
                    cls.config_class, {**(override.get("config") or {}), **(per_task or {})}, key
                )
                if check_sources and callable(getattr(cls, "check_model", None)):
                    for model in models:
                        try:
                            cls.check_model(cfg, model_skeleton(model))
                        except ValueError as e:
                            raise ConfigError(f"{key} (model {model}): {e}") from None
                built[key] = asdict(cfg)
            method_configs[name, task] = built[key]

    specs = []
    for model in models:
        for task, t_over in tasks.items():
            for method, m_over in methods.items():
                train = {**(raw.get("train") or {}), **(t_over.get("train") or {})}
                train.update(m_over.get("train") or {})
                evalc = {**(raw.get("eval") or {}), **(t_over.get("eval") or {})}
                evalc.update(m_over.get("eval") or {})
                train_cfg = build(TrainConfig, train, f"{where}.train ({method} on {task})")
                eval_cfg = build(EvalConfig, evalc, f"{where}.eval ({method} on {task})")
                devc = {**(raw.get("dev") or {}), **(t_over.get("dev") or {})}
                devc.update(m_over.get("dev") or {})
                dev_cfg = build(DevConfig, devc, f"{where}.dev ({method} on {task})")
                measc = {**(raw.get("measure") or {}), **(t_over.get("measure") or {})}
                measc.update(m_over.get("measure") or {})
                measure_cfg = build(SharpnessConfig, measc, f"{where}.measure ({method} on {task})")
                resc = {**(raw.get("resources") or {}), **(t_over.get("resources") or {})}
                resc.update(m_over.get("resources") or {})
                res_cfg = build(ResourcesConfig, resc, f"{where}.resources ({method} on {task})")
                _check_dev(
                    dev_cfg, train_cfg, task, f"{where} ({method} on {task})", task_configs[task]
                )
                for seed in seeds:
                    specs.append(
                        TrialSpec(
                            method=method,
                            task=task,
                            model=model,
                            seed=seed,
                            method_config=method_configs[method, task],
                            train=train_cfg,
                            eval=eval_cfg,
                            dev=dev_cfg,
                            measure=measure_cfg,
                            task_config=task_configs[task],
                            resources=res_cfg,
                        )
                    )
    ids = [s.trial_id for s in specs]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        # Equal specs share an id and a result file: one would overwrite the other.
        raise ConfigError(f"{where}: the same trial appears twice: {', '.join(repeated)}")
    return specs


@functools.cache
def model_skeleton(source: str) -> Any:
    """The model's modules without its weights (built on the meta device from its config):
    what a method's ``check_model`` inspects before anything runs."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from bench.models import prepare

    config = AutoConfig.from_pretrained(prepare(source))
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _check_dev(
    dev: DevConfig, train: TrainConfig, task: str, where: str, task_config: dict[str, Any]
) -> None:
    """Evaluation points that cannot happen are a mistake in the suite: say so up front."""
    if dev.eval_every > train.steps:
        raise ConfigError(
            f"{where}: dev.eval_every {dev.eval_every} is larger than train.steps "
            f"{train.steps}: no evaluation point would happen"
        )
    if dev.eval_every and dev.score:
        from bench.tasks import get_task

        if not get_task(task, task_config).dev_documents():
            raise ConfigError(
                f"{where}: task {task} has no dev documents to score; set dev.score: false "
                "for it (its dev loss is still measured)"
            )


@dataclass
class Suite:
    """A validated suite: its final trial specs, and what the sweep does around them."""

    name: str
    specs: list[TrialSpec]
    tuning: Any = None  # bench.orchestrate.tuning.TuningPlan, or None
    targets: dict[str, Any] = field(default_factory=dict)  # task -> analysis.targets.Target


def _check_space(space: dict[str, Any], config_class: type, where: str) -> None:
    """Every value a search space can produce (each listed value, both ends of a range)
    passes the method config's own checks: a NaN, infinite or negative bound is reported
    before any tuning trial runs, not by the trial that draws it."""
    for key, dim in space.items():
        values = dim if isinstance(dim, list) else next(iter(dim.values()))
        for value in values:
            build(config_class, {key: value}, where)


def plan_from_raw(raw: dict[str, Any], specs: list[TrialSpec], where: str = "suite") -> Suite:
    """Targets and tuning of a suite, checked against its specs."""
    from bench.analysis.targets import TargetError, parse_targets
    from bench.orchestrate.tuning import parse_space, parse_tuning
    from bench.registry import load_method

    methods = _as_mapping(raw["methods"], f"{where}.methods")
    tasks = {s.task for s in specs}
    try:
        targets = parse_targets(raw.get("targets"), tasks, {s.method for s in specs})
    except TargetError as e:
        raise ConfigError(f"{where}: {e}") from None
    spaces = {
        name: parse_space(
            over["search"], load_method(name).config_class, f"{where}.methods.{name}.search"
        )
        for name, over in methods.items()
        if over.get("search")
    }
    for name, space in spaces.items():
        _check_space(space, load_method(name).config_class, f"{where}.methods.{name}.search")
    tuning = None
    if spaces or raw.get("tuning"):
        if not spaces:
            raise ConfigError(f"{where}.tuning: no method has a search space to tune")
        tuning = parse_tuning(raw.get("tuning"), f"{where}.tuning", spaces)
        if tuning.metric == "dev_score":
            for s in specs:
                if s.method in spaces and not s.dev.score:
                    raise ConfigError(
                        f"{where}.tuning.metric dev_score needs dev.score: true "
                        f"({s.method} on {s.task})"
                    )
    return Suite(raw.get("name", where), specs, tuning, targets)


def _schema_of(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    """`cls`'s JSON Schema as a reference into `defs` (its nested definitions merged in)."""
    from bench.config import adapter

    schema = adapter(cls).model_json_schema(ref_template="#/$defs/{model}")
    defs.update(schema.pop("$defs", {}))
    defs[cls.__name__] = schema
    return {"$ref": f"#/$defs/{cls.__name__}"}


def suite_schema(methods: list[str] | None = None) -> dict[str, Any]:
    """The JSON Schema of a suite file (editors complete and check suites with it).

    `methods` are the method names whose config is spelled out (default: every
    registered one); any other method name takes any config mapping (a plugin). The
    bounds and choices are the ones `build` checks; cross-field rules (dev.eval_every
    <= train.steps, known tasks and models) are checked only by hizfo-bench itself.
    docs/suite.schema.json holds the built-in methods' version (``run --schema``).
    """
    from bench.registry import available_methods, load_method

    defs: dict[str, Any] = {}
    sections = {
        "train": _schema_of(TrainConfig, defs),
        "eval": _schema_of(EvalConfig, defs),
        "dev": _schema_of(DevConfig, defs),
        "measure": _schema_of(SharpnessConfig, defs),
        "resources": _schema_of(ResourcesConfig, defs),
    }
    names = sorted(available_methods()) if methods is None else sorted(methods)
    entry = {k: v for k, v in sections.items()}
    search = {"type": "object", "description": "config key -> list or {log_uniform: [lo, hi]}"}

    def method_entry(config: dict[str, Any]) -> dict[str, Any]:
        by_task = {"type": "object", "additionalProperties": config}
        props = {"config": config, "by_task": by_task, **entry, "search": search}
        return {"type": ["object", "null"], "properties": props, "additionalProperties": False}

    per_method = {
        name: method_entry(_schema_of(load_method(name).config_class, defs)) for name in names
    }
    task_entry = {"type": ["object", "null"], "properties": entry}
    string_list = {"type": "array", "items": {"type": "string"}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "hizfo-bench suite",
        "type": "object",
        "additionalProperties": False,
        "required": ["models", "tasks", "methods"],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "models": {**string_list, "minItems": 1},
            "tasks": {
                "anyOf": [
                    {**string_list, "minItems": 1},
                    {"type": "object", "additionalProperties": task_entry, "minProperties": 1},
                ]
            },
            "methods": {
                "anyOf": [
                    {**string_list, "minItems": 1},
                    {
                        "type": "object",
                        "properties": per_method,
                        "additionalProperties": method_entry({"type": "object"}),
                        "minProperties": 1,
                    },
                ]
            },
            "seeds": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
                "minItems": 1,
                "uniqueItems": True,
            },
            **sections,
            "targets": {"type": "object"},
            "tuning": {"type": "object"},
        },
        "$defs": dict(sorted(defs.items())),
    }


def builtin_methods() -> list[str]:
    """The methods hizfo-bench itself registers (baselines/), not installed plugins."""
    from bench.registry import available_methods

    return [n for n, target in available_methods().items() if target.startswith("baselines.")]
