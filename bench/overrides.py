"""Command-line changes to a suite before it expands: ``--set KEY=VALUE`` and filters.

``--set`` takes a dotted path into the suite mapping, as the YAML file spells it::

    methods.mezo.config.lr=1e-5      train.steps=50      tasks.math-mini.eval.limit=10

The value is read as a YAML scalar (``50`` an int, ``1e-5`` a number, ``null`` None,
``[0, 1]`` a list), then the suite goes through the same checks as the file
(bench/suite.py, bench/config.py): a misspelt leaf key or a value of the wrong type is
the same error it would be in the YAML. The path itself is checked here, where the
message can name the ``--set`` that was wrong: the first key must be a suite key, and a
method or task must be one the suite has, unless the key starts with ``+``, which adds
the entry::

    +methods.lora.config.rank=8      +methods.none=      +tasks.my-task.type=jsonl

Replacing a whole section keeps what the suite says about the entries that stay:
``methods=[fo-adamw, lora]`` keeps fo-adamw's config, train and search settings and adds
lora with its defaults; in a mapping (``methods={mezo: {}, lora: {config: {rank: 8}}}``)
an entry given as ``{}`` or null keeps its settings and an entry with settings gets
exactly those. ``methods.M.config.K=V`` sets K on every task: it replaces K in M's
``by_task`` entries too (a suite's per-task tuned rates would otherwise hide it). A
typed task entry (``type: jsonl``) takes any key of its type (``tasks.my-task.metric=f1``);
the type checks it.

Filters (``--methods``, ``--tasks``, ``--models``, ``--seeds``) keep only the named
entries; a name the suite does not have is an error rather than an empty run.

Both return a new mapping; the suite file is never changed. Trial files keep the
resolved spec, so a trial re-runs from its file without the command line.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import yaml

from bench.config import ConfigError, load_yaml, yaml_error_line

_ENTRY_SECTIONS = ("methods", "tasks")  # mappings of name -> {config:, train:, ...}
FILTER_KEYS = ("methods", "tasks", "models", "seeds")


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=VALUE"`` -> (["a", "b", "c"], VALUE read as YAML); a leading ``+`` (add
    an entry) is left to the caller."""
    key, sep, value = text.partition("=")
    path = key.strip().removeprefix("+").split(".")
    if not sep or not all(path):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted KEY")
    try:
        parsed = load_yaml(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(yaml_error_line(f"--set {text!r}", e)) from None
    return path, parsed


def _entries(raw: dict[str, Any], key: str) -> dict[str, Any]:
    """The suite's methods or tasks as a mapping (a YAML list becomes {name: {}})."""
    value = raw.get(key)
    if isinstance(value, list):
        value = {str(v): {} for v in value}
    elif isinstance(value, dict):
        value = {str(k): (v if v is not None else {}) for k, v in value.items()}
    else:
        value = {}
    raw[key] = value
    return value


def _assign(node: dict[str, Any], path: list[str], value: Any, where: str, at: str) -> None:
    """Set node[path...] = value, creating missing mappings; a non-mapping on the way is an error."""
    for i, key in enumerate(path[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif isinstance(child, dict):
            child = node[key] = dict(child)
        else:
            inside = ".".join([at, *path[: i + 1]])
            raise ConfigError(f"{where}: {inside} is {child!r} in the suite, not a mapping")
        node = child
    node[path[-1]] = value


def _set(
    raw: dict[str, Any],
    path: list[str],
    value: Any,
    text: str,
    suite_keys: Collection[str],
    entry_keys: Collection[str],
    *,
    add: bool = False,
) -> None:
    top, where = path[0], f"--set {text}"
    if top not in suite_keys:
        raise ConfigError(
            f"{where}: unknown key {top!r}; valid keys: {', '.join(sorted(suite_keys))}"
        )
    if top in _ENTRY_SECTIONS and len(path) == 1:
        raw[top] = _replace_entries(raw, top, value, where)
        return
    if top in _ENTRY_SECTIONS:
        entries = _entries(raw, top)
        name = path[1]
        if name not in entries and not add:
            raise ConfigError(
                f"{where}: {top[:-1]} {name!r} is not in the suite ({', '.join(entries)}); "
                f"to add it, start the key with +: --set +{text.lstrip('+')}"
            )
        entry = dict(entries[name]) if isinstance(entries.get(name), dict) else {}
        if len(path) == 2:  # +methods.lora= adds lora with its defaults, or with a mapping
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a mapping of settings, got {value!r}")
            entries[name] = {**entry, **(value or {})}
            return
        typed = top == "tasks" and "type" in entry
        if path[2] not in entry_keys and not (typed or (top == "tasks" and path[2] == "type")):
            raise ConfigError(
                f"{where}: expected {top}.{name}.<key>..., key one of {', '.join(sorted(entry_keys))}"
            )
        _assign(entry, path[2:], value, where, f"{top}.{name}")
        if top == "methods" and path[2] == "config":
            _unshadow(entry, path[3:], value)
        entries[name] = entry
        return
    _assign(raw, path, value, where, "")


def _unshadow(entry: dict[str, Any], path: list[str], value: Any) -> None:
    """A ``--set`` of ``config.K`` means K on every task: drop K from the entry's
    ``by_task`` values, which would otherwise win on their tasks and hide the change."""
    by_task = entry.get("by_task")
    if path:
        keys = {path[0]}
    elif isinstance(value, dict):  # the whole config mapping
        keys = set(value)
    else:
        return
    if not isinstance(by_task, dict) or not keys:
        return
    entry["by_task"] = {
        task: {k: v for k, v in per.items() if k not in keys} if isinstance(per, dict) else per
        for task, per in by_task.items()
    }


def _replace_entries(raw: dict[str, Any], top: str, value: Any, where: str) -> dict[str, Any]:
    """A new methods/tasks section that keeps the suite's settings of the entries that stay
    (a list names entries; in a mapping, {} or null keeps an entry's settings)."""
    old = _entries(dict(raw), top)
    if isinstance(value, list):
        value = {str(v): None for v in value}
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where}: expected a non-empty list or mapping of {top}")
    return {str(k): v or dict(old.get(str(k)) or {}) for k, v in value.items()}


def apply_overrides(
    raw: Mapping[str, Any],
    overrides: Sequence[str],
    *,
    suite_keys: Collection[str],
    entry_keys: Collection[str],
) -> dict[str, Any]:
    """The suite mapping with each ``KEY=VALUE`` of `overrides` applied, in order.

    `suite_keys` are the keys a suite may have at the top, `entry_keys` those under one
    method or task (bench/suite.py passes its own, so the two never drift apart).
    """
    out = copy.deepcopy(dict(raw))
    for text in overrides:
        path, value = parse_assignment(text)
        add = text.lstrip().startswith("+")
        _set(out, path, value, text, suite_keys, entry_keys, add=add)
    return out


def parse_filter(key: str, text: str) -> list[Any]:
    """A comma-separated filter from the command line; seeds as integers."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--{key}: expected a comma-separated list, got {text!r}")
    if key == "seeds":
        try:
            return [int(n) for n in names]
        except ValueError:
            raise ConfigError(f"--seeds: expected integers, got {text!r}") from None
    return names


def apply_filters(raw: Mapping[str, Any], only: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """The suite mapping keeping only the named methods, tasks, models and seeds.

    `only` maps a key of FILTER_KEYS to the names to keep; a name the suite does not
    have is an error (a typo must not silently run nothing).
    """
    out = copy.deepcopy(dict(raw))
    for key, wanted in only.items():
        if key not in FILTER_KEYS:
            raise ConfigError(f"unknown filter {key!r}; filters: {', '.join(FILTER_KEYS)}")
        if key in _ENTRY_SECTIONS:
            entries = _entries(out, key)
            have = list(entries)
        else:
            default = [0] if key == "seeds" else []
            have = list(out.get(key) if out.get(key) is not None else default)
        missing = [w for w in wanted if w not in have]
        if missing:
            shown = ", ".join(str(h) for h in have)
            raise ConfigError(
                f"--{key}: {', '.join(str(m) for m in missing)} not in the suite ({shown})"
            )
        if key in _ENTRY_SECTIONS:
            out[key] = {name: entries[name] for name in have if name in wanted}
        else:
            out[key] = [h for h in have if h in wanted]
    return _prune_targets(out)


def _prune_targets(raw: dict[str, Any]) -> dict[str, Any]:
    """Targets of filtered-out tasks go; so do targets set by a filtered-out method (there
    is nothing to take the target from: those trials record no time-to-target)."""
    targets = raw.get("targets")
    if not isinstance(targets, Mapping):
        return raw
    tasks = set(_entries(raw, "tasks")) if raw.get("tasks") else set()
    methods = set(_entries(raw, "methods")) if raw.get("methods") else set()
    kept = {
        task: t
        for task, t in targets.items()
        if task in tasks
        and not (isinstance(t, Mapping) and t.get("method", None) not in (None, *methods))
    }
    raw["targets"] = kept or None
    return raw
