"""Tasks found through the ``hizfo_bench.tasks`` entry-point group.

Built-in tasks register there exactly like outside plugins (pyproject.toml), so this is
the only place that turns a task name into code. An entry point names either

- a **task**: a `Task` subclass with no ``config_class``, used by its name
  (``tasks: [math-mini]``), or
- a **task type**: a `Task` subclass with a ``config_class`` dataclass, built from a
  suite entry that names it (``tasks: {my-task: {type: jsonl, train: a.jsonl, ...}}``).
  The class is called as ``cls(name, config)``; the entry's keys other than the
  per-task overrides (eval, measure) are its config.

A typed task travels to the workers as ``TrialSpec.task_config`` (its type plus its
resolved config), so every process rebuilds the same task from the spec alone.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.registry import EntryPointRegistry
from bench.tasks.base import Task, TaskError, UnknownTaskError

GROUP = "hizfo_bench.tasks"
# Per-task settings a suite entry may hold beside a type's own config; train and dev are
# overrides when they are mappings and a type's files when they are strings.
OVERRIDE_KEYS = ("train", "eval", "dev", "measure")
# A typed task's name goes into trial ids and file names.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


_TASKS = EntryPointRegistry(GROUP, "task", TaskError)
_entry_points = _TASKS.entry_points


def refresh_tasks() -> None:
    """Forget the cached entry points, so tasks installed since are found."""
    _TASKS.refresh()


def _load(name: str) -> type[Task]:
    ep = _entry_points()[name]
    cls = _TASKS.load(name, ep)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TaskError(f"task plugin {_TASKS.origin(name, ep)} is not a bench.tasks.Task")
    return cls


def _is_type(cls: type[Task]) -> bool:
    return getattr(cls, "config_class", None) is not None


def _loadable() -> dict[str, type[Task]]:
    """Every registered class that imports; a broken plugin is logged and left out here
    (naming it in a suite gives its import error)."""
    out = {}
    for name in sorted(_entry_points()):
        try:
            out[name] = _load(name)
        except TaskError as e:
            logging.getLogger(__name__).warning("%s", e)
    return out


def available_tasks() -> dict[str, type[Task]]:
    """Registered ready-to-use tasks (name -> class), in registration-name order."""
    return {name: cls for name, cls in _loadable().items() if not _is_type(cls)}


def task_types() -> dict[str, type[Task]]:
    """Registered task types (type name -> class): tasks a suite builds from a config."""
    return {name: cls for name, cls in _loadable().items() if _is_type(cls)}


def task_labels(name: str, config: Mapping[str, Any] | None = None) -> tuple[str, str] | None:
    """(family, primary metric key) of a task for reports, from its name and the spec's
    ``task_config`` (a record's ``config.task_config``), without reading any data; None
    for a task that is not registered here."""
    if config:
        kind = config.get("type")
        if isinstance(kind, str) and kind in _entry_points():
            try:
                labels = getattr(_load(kind), "labels", None)
            except TaskError:
                return None
            return labels(config) if labels is not None else None
        return None
    cls = available_tasks().get(name)
    return (cls.family, cls.metric) if cls is not None else None


def id_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a spec's ``task_config`` its trial id hashes (``Task.id_config`` of its
    type); the whole config when the type is not registered here."""
    kind = config.get("type")
    if isinstance(kind, str) and kind in _entry_points():
        try:
            return _load(kind).id_config(dict(config))
        except TaskError:
            pass
    return dict(config)


def _unknown(name: str) -> UnknownTaskError:
    known = ", ".join(available_tasks()) or "(none: is hizfo-bench installed?)"
    types = ", ".join(task_types())
    more = f"; or a task of type {types} defined in the suite" if types else ""
    return UnknownTaskError(
        f"unknown task {name!r}; known tasks: {known}{more} (`hizfo-bench tasks` lists them)"
    )


def get_task(name: str, config: Mapping[str, Any] | None = None) -> Task:
    """The task called `name`: a registered task, or (with `config`, which holds ``type``)
    a task of that registered type built from the config."""
    if not config:
        if name not in _entry_points() or _is_type(cls := _load(name)):
            raise _unknown(name)
        return cls()
    config = dict(config)
    kind = config.pop("type", None)
    if not isinstance(kind, str) or kind not in _entry_points():
        types = ", ".join(task_types()) or "(none)"
        raise TaskError(f"task {name}: unknown type {kind!r}; task types: {types}")
    cls = _load(kind)
    if not _is_type(cls):
        raise TaskError(
            f"task {name}: {kind!r} is a task, not a task type; name it in `tasks` as it is"
        )
    if not _NAME.match(name):
        raise TaskError(
            f"task name {name!r}: use letters, digits, '.', '_' and '-' (it names trial files)"
        )
    if name in _entry_points():
        raise TaskError(f"task name {name!r} is a registered task: give yours another name")
    task = cls(name, config)
    task.task_type = kind  # type: ignore[attr-defined]  # the name its spec_config records
    return task


def split_entry(entry: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """A suite's task entry -> (the typed task's definition or None, its per-task overrides).

    An entry without ``type`` is all overrides. With ``type``, train and dev are files
    when they are strings; every key but the overrides belongs to the definition.
    """
    if "type" not in entry:
        return None, dict(entry)
    definition, overrides = {}, {}
    for key, value in entry.items():
        if key in OVERRIDE_KEYS and (value is None or isinstance(value, Mapping)):
            overrides[key] = value
        else:
            definition[key] = value
    return definition, overrides


def split_definitions(tasks: Any) -> tuple[dict[str, dict[str, Any]], Any]:
    """A suite's ``tasks`` -> (typed task definitions by name, the tasks with only their
    overrides left). A list, or entries without ``type``, pass through unchanged."""
    if not isinstance(tasks, Mapping):
        return {}, tasks
    definitions, rest = {}, {}
    for name, entry in tasks.items():
        if isinstance(entry, Mapping):
            definition, overrides = split_entry(entry)
            if definition is not None:
                definitions[str(name)] = definition
            rest[name] = overrides
        else:
            rest[name] = entry
    return definitions, rest


def resolve_paths(raw: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """The suite mapping with its typed tasks' relative file paths made absolute against
    `base` (the suite file's folder); each type names its path keys (``path_keys``)."""
    definitions, _ = split_definitions(raw.get("tasks"))
    if not definitions:
        return dict(raw)
    out = copy.deepcopy(dict(raw))
    for name, definition in definitions.items():
        kind = definition.get("type")
        if not isinstance(kind, str) or kind not in _entry_points():
            continue  # get_task says what is wrong, with the valid types
        keys = getattr(_load(kind), "path_keys", ())
        entry = out["tasks"][name]
        for key in keys:
            value = entry.get(key)
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                entry[key] = str((base / value).resolve())
            elif isinstance(value, str):
                entry[key] = str(Path(value).expanduser())
    return out
