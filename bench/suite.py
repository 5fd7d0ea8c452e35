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

import contextlib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pydantic
import pydantic_core
import yaml

from bench.config import (
    ConfigError,
    Strict,
    adapter,
    build,
    error_line,
    fail_at,
    fail_line,
    known_keys,
    load_yaml,
    yaml_error_line,
)
from bench.orchestrate.tuning import TuningSection
from bench.spec import (
    DevConfig,
    EvalConfig,
    ResourcesConfig,
    SharpnessConfig,
    TrainConfig,
    TrialSpec,
)

_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
SUITES_DIR = Path(__file__).parent / "suites"
DEFAULT_SUITE = "mini"

# Seeds seed torch, NumPy and the data order: torch takes any 64-bit seed, so a larger
# integer would pass here and fail in every worker.
MAX_SEED = 2**63 - 1


def _plain_name_problem(name: Any) -> str | None:
    plain = (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(c in name for c in "/\\\0")
        and name.isprintable()
    )
    if plain:
        return None
    return (
        f"{name!r} is not a plain file name (it names the run folder "
        "results/runs/<name>-<time>: no '/', not empty, not '.' or '..')"
    )


def check_name(name: Any, where: str) -> None:
    """A suite's `name` names its run folder (``results/runs/<name>-<time>``): it must be a
    plain file name, never a path (``../x``, ``a/b``) or empty."""
    problem = _plain_name_problem(name)
    if problem:
        raise ConfigError(f"{where}: {problem}")


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


def _none_is_empty(value: Any) -> Any:
    return {} if value is None else value


def _section(cls: type) -> Any:
    """A train/eval/dev/measure/resources mapping: `cls`'s fields, each checked as `build`
    checks it (bench.config.adapter); null is the empty mapping."""
    return Annotated[adapter(cls), pydantic.BeforeValidator(_none_is_empty)]


SECTIONS = {
    "train": TrainConfig,
    "eval": EvalConfig,
    "dev": DevConfig,
    "measure": SharpnessConfig,
    "resources": ResourcesConfig,
}
_SECTION_DEFAULT = {"default_factory": dict, "validate_default": True}


class Sections(Strict):
    """The settings a suite gives every trial, a task its trials and a method its own
    (precedence: suite < task < method)."""

    train: _section(TrainConfig) = pydantic.Field(**_SECTION_DEFAULT)
    eval: _section(EvalConfig) = pydantic.Field(**_SECTION_DEFAULT)
    dev: _section(DevConfig) = pydantic.Field(**_SECTION_DEFAULT)
    measure: _section(SharpnessConfig) = pydantic.Field(**_SECTION_DEFAULT)
    resources: _section(ResourcesConfig) = pydantic.Field(**_SECTION_DEFAULT)


class TaskEntry(Sections):
    """A task's own train/eval/dev/measure/resources settings; with ``type`` (jsonl, ...)
    a task defined in the suite, whose other keys are its definition (the type checks it)."""

    model_config = pydantic.ConfigDict(
        extra="forbid",
        json_schema_extra=lambda schema: schema.pop("additionalProperties", None),
    )

    # A typed task's definition (split off the entry, bench.tasks.split_entry).
    definition: pydantic.json_schema.SkipJsonSchema[dict[str, Any] | None] = pydantic.Field(
        default=None, exclude=True
    )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _check_keys(cls, data: Any) -> Any:
        from bench.tasks.registry import split_entry

        if isinstance(data, Mapping) and "type" in data:
            definition, overrides = split_entry(data)
            return {**overrides, "definition": definition}
        return known_keys(cls, data)


class MethodEntry(Sections):
    """A method's config (``by_task``: per task, over it), its train/eval/dev/measure/
    resources settings and its search space for tuning."""

    config: dict[str, Any] | None = None
    by_task: dict[str, dict[str, Any] | None] | None = None
    search: dict[str, Any] | None = pydantic.Field(
        default=None, description="config key -> list or {log_uniform: [lo, hi]}"
    )


def _entries(value: Any) -> Any:
    """methods/tasks as a mapping of name -> settings: a list names entries without
    settings; a null (or empty) entry has none."""
    if value is None:
        return {}
    if isinstance(value, list):
        return {str(v): {} for v in value}
    if isinstance(value, Mapping):
        return {str(k): v or {} for k, v in value.items()}
    raise fail_at(f"expected a list or a mapping, got {value!r}")


_MIN_ONE = {"min_length": 1}


def _named(entry: Any) -> Any:
    """What a suite may write for methods or tasks: a list of names, or a mapping of
    name -> `entry` (null: no settings); not empty."""
    return (
        Annotated[list[str], pydantic.Field(min_length=1)]
        | Annotated[dict[str, entry | None], pydantic.Field(min_length=1)]
    )


class SuiteFile(Sections):
    """A suite file: what `read` validates, what `specs` expands and `plan` completes
    (targets, tuning), and what ``run --schema`` prints (`suite_schema`).

    Validation needs a context: ``{"where": file name, "check_sources": bool}``; method
    configs are built from the registry (each method's own config class, a plugin's
    too), tasks are looked up and models checked, all before anything runs.
    """

    model_config = pydantic.ConfigDict(
        extra="forbid", title="hizfo-bench suite", json_schema_extra={"$schema": _SCHEMA}
    )

    name: str | None = None
    description: str | None = None
    models: list[str] = pydantic.Field(**_MIN_ONE)
    tasks: dict[str, TaskEntry] = pydantic.Field(**_MIN_ONE)
    methods: dict[str, MethodEntry] = pydantic.Field(**_MIN_ONE)
    seeds: list[Annotated[int, pydantic.Field(ge=0, le=MAX_SEED)]] = pydantic.Field(
        default=[0], min_length=1, json_schema_extra={"uniqueItems": True}
    )
    targets: dict[str, Any] | None = None
    tuning: TuningSection | None = None

    _where: str = pydantic.PrivateAttr("suite")
    _task_configs: dict[str, dict[str, Any]] = pydantic.PrivateAttr(default_factory=dict)
    # (method, task) -> the method's built config on that task
    _method_configs: dict[tuple[str, str], Any] = pydantic.PrivateAttr(default_factory=dict)

    @pydantic.field_validator("name", mode="before")
    @classmethod
    def _plain_name(cls, name: Any) -> Any:
        if problem := _plain_name_problem(name):
            raise fail_at(problem)
        return name

    @pydantic.field_validator("models", mode="before")
    @classmethod
    def _model_names(cls, models: Any) -> Any:
        return [str(m) for m in models] if isinstance(models, list) else models or []

    @pydantic.field_validator("tasks", mode="before", json_schema_input_type=_named(TaskEntry))
    @classmethod
    def _task_entries(cls, value: Any) -> Any:
        return _entries(value)

    @pydantic.field_validator("methods", mode="before", json_schema_input_type=_named(MethodEntry))
    @classmethod
    def _method_entries(cls, value: Any) -> Any:
        return _entries(value)

    @pydantic.field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, seeds: Any) -> Any:
        if not isinstance(seeds, list) or not all(
            type(s) is int and 0 <= s <= MAX_SEED for s in seeds
        ):
            raise fail_at(f"expected a list of integers in 0..{MAX_SEED}, got {seeds!r}")
        if not seeds:
            raise fail_at("must name at least one seed, got []")
        if len(set(seeds)) < len(seeds):
            raise fail_at(f"{seeds!r} repeats a seed (a trial would run twice)")
        return seeds

    @pydantic.model_validator(mode="after")
    def _resolve(self, info: pydantic.ValidationInfo) -> SuiteFile:
        """Tasks looked up, models checked, each method's config built from the registry."""
        context = info.context or {}
        self._where = where = context.get("where", "suite")
        check_sources = context.get("check_sources", True)
        try:
            self._task_configs = _task_configs(self.tasks, where, check_sources)
            if check_sources:
                _check_models(self.models, where)
            self._method_configs = _method_configs(self, where, check_sources)
        except ConfigError as e:
            raise fail_line(str(e)) from None
        return self

    @classmethod
    def read(cls, raw: Mapping[str, Any], where: str, check_sources: bool = True) -> SuiteFile:
        """`raw` (a suite mapping) validated: a ConfigError (one line) on the first problem."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: expected a mapping at the top level")
        context = {"where": where, "check_sources": check_sources}
        try:
            return cls.model_validate(dict(raw), context=context)
        except pydantic.ValidationError as e:
            raise ConfigError(error_line(e, where, _shaped(raw))) from None

    def specs(self) -> list[TrialSpec]:
        """The final trial specs: models x tasks x methods x seeds, settings merged (suite
        < task < method) and built, evaluation points checked; no trial twice."""
        specs = []
        for model in self.models:
            for task, t_entry in self.tasks.items():
                for method, m_entry in self.methods.items():
                    specs += self._cell(model, task, t_entry, method, m_entry)
        ids = [s.trial_id for s in specs]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            # Equal specs share an id and a result file: one would overwrite the other.
            raise ConfigError(f"{self._where}: the same trial appears twice: {', '.join(repeated)}")
        return specs

    def _cell(
        self, model: str, task: str, t_entry: TaskEntry, method: str, m_entry: MethodEntry
    ) -> list[TrialSpec]:
        """The specs of one (model, task, method), one per seed."""
        where = self._where
        built = {
            key: build(
                cls,
                _merged(getattr(self, key), getattr(t_entry, key), getattr(m_entry, key)),
                f"{where}.{key} ({method} on {task})",
            )
            for key, cls in SECTIONS.items()
        }
        _check_dev(
            built["dev"],
            built["train"],
            task,
            f"{where} ({method} on {task})",
            self._task_configs[task],
        )
        return [
            TrialSpec(
                method=method,
                task=task,
                model=model,
                seed=seed,
                method_config=self._method_configs[method, task],
                task_config=self._task_configs[task],
                **built,
            )
            for seed in self.seeds
        ]

    def plan(self, specs: list[TrialSpec]) -> Suite:
        """Targets and tuning of the suite, checked against its specs."""
        from bench.analysis.targets import TargetError, parse_targets
        from bench.orchestrate.tuning import plan_tuning

        where = self._where
        try:
            targets = parse_targets(
                self.targets, {s.task for s in specs}, {s.method for s in specs}
            )
        except TargetError as e:
            raise ConfigError(f"{where}: {e}") from None
        spaces = _search_spaces(self.methods, where)
        tuning = None
        if spaces or (self.tuning is not None and self.tuning.model_fields_set):
            if not spaces:
                raise ConfigError(f"{where}.tuning: no method has a search space to tune")
            tuning = plan_tuning(self.tuning or TuningSection(), spaces)
            if tuning.metric == "dev_score":
                for s in specs:
                    if s.method in spaces and not s.dev.score:
                        raise ConfigError(
                            f"{where}.tuning.metric dev_score needs dev.score: true "
                            f"({s.method} on {s.task})"
                        )
        return Suite(self.name or where, specs, tuning, targets)


def _shaped(raw: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` with methods and tasks as mappings, as the model sees them (an error's key
    path is read against it)."""
    out = dict(raw)
    for key in ("methods", "tasks"):
        with contextlib.suppress(pydantic_core.PydanticCustomError):
            out[key] = _entries(out.get(key))
    return out


def _merged(*levels: pydantic.BaseModel) -> dict[str, Any]:
    """The keys each level sets, later levels over earlier ones."""
    out: dict[str, Any] = {}
    for level in levels:
        out.update({k: getattr(level, k) for k in level.model_fields_set})
    return out


def _task_configs(
    tasks: Mapping[str, TaskEntry], where: str, check_sources: bool
) -> dict[str, dict[str, Any]]:
    """Each task's spec config; unknown names always, and (unless this is a dry run) hub
    data out of reach, a missing sandbox or a damaged data file: ConfigErrors."""
    from bench.tasks import TaskError, get_task

    out = {}
    for task, entry in tasks.items():
        try:
            checked = get_task(task, entry.definition)
            out[task] = checked.spec_config()
            if check_sources:
                checked.check_available()
        except TaskError as e:
            raise ConfigError(f"{where}.tasks: {task}: {e}") from None
    return out


def _check_models(models: list[str], where: str) -> None:
    from bench.models import ModelSourceError, check_source

    for model in models:
        try:
            check_source(model)
        except ModelSourceError as e:
            raise ConfigError(f"{where}.models: {e}") from None


def _method_configs(
    suite: SuiteFile, where: str, check_sources: bool
) -> dict[tuple[str, str], Any]:
    """(method, task) -> the method's config on that task, built once: `config`, with the
    task's `by_task` entry over it (settings tuned per task, as claims-tune chooses them)."""
    from bench.registry import MethodError, load_method

    out: dict[tuple[str, str], Any] = {}
    for name, entry in suite.methods.items():
        try:
            cls = load_method(name)
        except MethodError as e:
            raise ConfigError(f"{where}.methods: {e}") from None
        by_task = entry.by_task or {}
        stray = sorted(set(by_task) - set(suite.tasks))
        if stray:
            raise ConfigError(
                f"{where}.methods.{name}.by_task: {', '.join(map(str, stray))} "
                f"not among the suite's tasks ({', '.join(suite.tasks)})"
            )
        built: dict[str, Any] = {}  # tasks without by_task share `config`
        for task in suite.tasks:
            per_task = by_task.get(task)
            key = f"{where}.methods.{name}." + (f"by_task.{task}" if per_task else "config")
            if key not in built:
                built[key] = build(
                    cls.config_class, {**(entry.config or {}), **(per_task or {})}, key
                )
                if check_sources:
                    _check_model(cls, built[key], suite.models, key)
            out[name, task] = built[key]
    return out


def _check_model(cls: type, config: Any, models: list[str], where: str) -> None:
    """The method's own check of each model (``check_model``: LoRA's target modules)."""
    if not callable(getattr(cls, "check_model", None)):
        return
    for model in models:
        try:
            cls.check_model(config, model_skeleton(model))
        except ValueError as e:
            raise ConfigError(f"{where} (model {model}): {e}") from None


def _search_spaces(methods: Mapping[str, MethodEntry], where: str) -> dict[str, dict[str, Any]]:
    """Each searched method's space (bench.orchestrate.tuning.parse_space), every value it
    can produce checked against the method's config."""
    from bench.orchestrate.tuning import parse_space
    from bench.registry import load_method

    spaces = {}
    for name, entry in methods.items():
        if entry.search:
            at = f"{where}.methods.{name}.search"
            config_class = load_method(name).config_class
            spaces[name] = parse_space(entry.search, config_class, at)
            _check_space(spaces[name], config_class, at)
    return spaces


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


SUITE_KEYS = tuple(SuiteFile.model_fields)
ENTRY_KEYS = tuple(MethodEntry.model_fields)


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
        raw = apply_overrides(raw, overrides, suite_keys=SUITE_KEYS, entry_keys=ENTRY_KEYS)
    if only:
        raw = apply_filters(raw, only)
    raw = resolve_paths(raw, path.parent)  # a typed task's files: relative to the suite
    model = SuiteFile.read(raw, path.name, check_sources)
    suite = model.plan(model.specs())
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
    """The final trial specs of suite mapping `raw` (validated: ConfigErrors, one line)."""
    return SuiteFile.read(raw, where, check_sources).specs()


def plan_from_raw(raw: dict[str, Any], specs: list[TrialSpec], where: str = "suite") -> Suite:
    """Targets and tuning of suite mapping `raw`, checked against its specs."""
    return SuiteFile.read(raw, where, check_sources=False).plan(specs)


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


class _Methods(pydantic.BaseModel):
    """The schema's methods mapping: one entry per named method, any other a plugin's."""

    model_config = pydantic.ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, MethodEntry | None]


def _method_entry(name: str, config_class: type) -> type[MethodEntry]:
    """MethodEntry with `config` (and `by_task`'s values) as `config_class`'s schema."""
    config = adapter(config_class)
    return pydantic.create_model(
        "Entry_" + re.sub(r"\W", "_", name),
        __base__=MethodEntry,
        __doc__=None,
        config=(config | None, None),
        by_task=(dict[str, config | None] | None, None),
    )


def suite_model(methods: list[str]) -> type[SuiteFile]:
    """SuiteFile with `methods`' configs spelled out (for the JSON Schema)."""
    from bench.registry import load_method

    named = {
        re.sub(r"\W", "_", name): (
            _method_entry(name, load_method(name).config_class) | None,
            pydantic.Field(None, alias=name),
        )
        for name in sorted(methods)
    }
    per_method = pydantic.create_model("Methods", __base__=_Methods, __doc__=None, **named)
    spelled_out = (
        Annotated[list[str], pydantic.Field(min_length=1)]
        | Annotated[per_method, pydantic.Field(json_schema_extra={"minProperties": 1})]
    )
    entries = pydantic.field_validator(
        "methods", mode="before", json_schema_input_type=spelled_out
    )(SuiteFile._method_entries.__func__)
    return pydantic.create_model(
        "Suite", __base__=SuiteFile, __doc__=None, __validators__={"_method_entries": entries}
    )


def suite_schema(methods: list[str] | None = None) -> dict[str, Any]:
    """The JSON Schema of a suite file (editors complete and check suites with it): the
    model's (`SuiteFile`, `suite_model`).

    `methods` are the method names whose config is spelled out (default: every
    registered one); any other method name takes any config mapping (a plugin). The
    bounds and choices are the ones `build` checks; cross-field rules (dev.eval_every
    <= train.steps, known tasks and models) are checked only by hizfo-bench itself.
    docs/suite.schema.json holds the built-in methods' version (``run --schema``).
    """
    from bench.registry import available_methods

    names = sorted(available_methods()) if methods is None else sorted(methods)
    return suite_model(names).model_json_schema(ref_template="#/$defs/{model}")


def builtin_methods() -> list[str]:
    """The methods hizfo-bench itself registers (baselines/), not installed plugins."""
    from bench.registry import available_methods

    return [n for n, target in available_methods().items() if target.startswith("baselines.")]
