"""Dataclass configs built from plain dicts (YAML), with clear errors for bad keys."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or key that is wrong; the message names where and what is allowed."""


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a valid {annotation}")
    if origin is tuple and isinstance(value, list | tuple):
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=False))
    if origin is list and isinstance(value, list | tuple):
        return [_coerce(v, args[0], where) for v in value] if args else list(value)
    if annotation is float and isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads 1e-5 as a string
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str):
        return value
    if annotation in (int, bool, str, float):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def build(cls: type[T], data: dict[str, Any] | None, where: str) -> T:
    """Instantiate dataclass `cls` from `data`; unknown keys and bad types are errors."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
