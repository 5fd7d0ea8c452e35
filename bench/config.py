"""Dataclass configs built from plain dicts (YAML), with one-line errors for bad settings.

One validation path for every config (train, eval, dev, measure, method configs, tuning
points): `build` checks the keys, then validates the values with a pydantic model derived
from the dataclass (`adapter`), then constructs the dataclass itself, so its own
``__post_init__`` checks run last. Rules every field gets without declaring anything:

- types as annotated, strictly: ``true`` is not a number, ``"3"`` is not an int; a float
  field takes an int, and a string that reads as a number (YAML 1.1 reads ``1e-5`` as a
  string);
- every number is finite (no NaN, no infinity) and >= 0;

and what a field declares in its dataclass metadata (``field(default=..., metadata=...)``):
``ge``, ``gt``, ``le``, ``lt`` (bounds), ``choices`` (a fixed list of allowed values) and
``allow_negative: True`` (the one opt-out of the >= 0 rule). A field annotated with
pydantic constraints (``Annotated[float, Field(gt=0)]``) keeps them too. Errors come back
as one ``ConfigError`` line: where, the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

import pydantic

T = TypeVar("T")

# Field metadata keys `build` understands (docs/methods.md, "Config checks").
BOUND_KEYS = ("ge", "gt", "le", "lt")


class ConfigError(ValueError):
    """A config value or key that is wrong; the message names where and what is allowed."""


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


def _field_type(annotation: Any, meta: typing.Mapping[str, Any], top: bool = True) -> Any:
    """The pydantic type of one field: strict scalars, finite numbers >= 0, the field's
    declared bounds and choices; containers and unions are walked."""
    from pydantic.functional_validators import BeforeValidator

    if top and meta.get("choices") is not None:
        choices = tuple(meta["choices"])
        lit = Literal[choices]  # type: ignore[valid-type]
        origin_args = typing.get_args(annotation)
        return lit | None if type(None) in origin_args else lit
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return Annotated[(_field_type(args[0], meta, top), *annotation.__metadata__)]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_field_type(a, meta, top) for a in args)]  # noqa: UP007
    if origin in (tuple, list) and args:
        inner = tuple(_field_type(a, meta, top=False) if a is not Ellipsis else a for a in args)
        return origin[inner]
    bounds = {k: meta[k] for k in BOUND_KEYS if top and k in meta}
    if not bounds and not meta.get("allow_negative"):
        bounds = {"ge": 0}
    if annotation is bool:
        return Annotated[bool, pydantic.Strict()]
    if annotation is int:
        return Annotated[int, pydantic.Strict(), pydantic.Field(**bounds)]
    if annotation is float:
        # Field before the validator: after it, pydantic writes a bound inside a union as
        # a raw "gt" key instead of the JSON Schema's exclusiveMinimum.
        return Annotated[
            float, pydantic.Field(allow_inf_nan=False, **bounds), BeforeValidator(_not_bool)
        ]
    if annotation is str:
        return Annotated[str, pydantic.Strict()]
    return annotation


@functools.cache
def adapter(cls: type) -> Any:
    """A pydantic model of dataclass `cls`'s fields with the rules above (cached per class).

    Its ``model_json_schema()`` is the JSON Schema of the config (docs/suite.schema.json).
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = pydantic.Field(default_factory=f.default_factory)
        else:
            default = ...
        fields[f.name] = (_field_type(hints[f.name], f.metadata), default)
    return pydantic.create_model(
        cls.__name__,
        __base__=Strict,
        # no description: the schema changes with the fields, not with docstring edits
        __doc__=None,
        **fields,
    )


def _allowed(error: dict[str, Any]) -> str:
    """What a pydantic error says is allowed, in a few words."""
    kind, ctx = error["type"], error.get("ctx") or {}
    value = error.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    for key, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in ctx and kind.startswith(("greater", "less")):
            return f"must be {word} {ctx[key]}"
    if kind == "finite_number":
        return "must be a finite number"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '').replace(' or ', ', ')}".replace("'", "")
    if kind.startswith("int"):
        return "must be an integer"
    if kind.startswith(("float", "value_error")) and "boolean" in error["msg"]:
        return "must be a number"
    if kind.startswith("float"):
        return "must be a number"
    if kind.startswith("bool"):
        return "must be true or false"
    if kind.startswith("string"):
        return "must be a string"
    if kind.startswith(("list", "tuple")):
        return "must be a list"
    return error["msg"][0].lower() + error["msg"][1:]


def _real_path(loc: Sequence[Any], data: Any) -> tuple[list[str], Any]:
    """The keys of an error's location that are keys or indices of `data` (pydantic puts
    union members and validator names in it too: ``int``, ``function-after[...]``), and
    the value found there (the input as written, before any coercion)."""
    path: list[str] = []
    node = data
    for part in loc:
        keyed = isinstance(node, Mapping) and part in node
        indexed = isinstance(node, list | tuple) and type(part) is int and 0 <= part < len(node)
        if keyed or indexed:
            node = node[part]
            path.append(str(part))
    return path, node


def error_line(e: Any, where: str, data: Any) -> str:
    """The first error of a pydantic ValidationError as one line: ``where.key.path:`` and
    what is wrong (the value and what is allowed; or the message of a check that says
    it itself: unknown keys, a validator's own line)."""
    errors = e.errors(include_url=False)
    # A union reports one error per member; the field's own problem is the informative one.
    error = next((x for x in errors if x["type"] not in ("none_required",)), errors[0])
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == LINE:
        return str(ctx["line"])
    path, value = _real_path(error["loc"], data)
    at = ".".join([where, *path])
    if kind in ("missing", "too_short") and error["loc"]:
        key = str(error["loc"][-1]) if kind == "missing" else path[-1] if path else ""
        parent = ".".join([where, *(path if kind == "missing" else path[:-1])])
        return f"{parent}: '{key}' is required and must not be empty"
    if kind in (UNKNOWN_KEYS, AT):
        return f"{at}: {error['msg']}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"{at}: expected a mapping, got {value!r}"
    if not path or value is data:
        value = error.get("input")
    return f"{at}: {value!r} is not allowed: {_allowed(error)}"


# The error types of this module's checks (pydantic_core.PydanticCustomError): unknown
# keys, a message about the value at the error's location, a whole line made elsewhere.
UNKNOWN_KEYS, AT, LINE = "unknown_keys", "at", "line"


def fail_at(message: str) -> Exception:
    """An error a validator raises about the value it checks: `message` follows the key
    path (``suite.yaml.seeds: <message>``)."""
    from pydantic_core import PydanticCustomError

    return PydanticCustomError(AT, "{message}", {"message": message})


def fail_line(line: str) -> Exception:
    """An error a validator raises with the whole line already written (a ConfigError
    from `build` of a nested config, say)."""
    from pydantic_core import PydanticCustomError

    return PydanticCustomError(LINE, "{line}", {"line": line})


def known_keys(cls: type[pydantic.BaseModel], data: Any) -> Any:
    """`data` when its keys are fields of model `cls` (an ``extra="forbid"`` one; fields
    marked ``exclude`` are internal); else the one "unknown key(s)" error."""
    if not isinstance(data, Mapping) or cls.model_config.get("extra") != "forbid":
        return data
    valid = sorted(f.alias or name for name, f in cls.model_fields.items() if not f.exclude)
    unknown = sorted(str(k) for k in data if k not in valid)
    if unknown:
        from pydantic_core import PydanticCustomError

        raise PydanticCustomError(
            UNKNOWN_KEYS,
            "unknown key(s) {unknown}; valid keys: {valid}",
            {"unknown": ", ".join(unknown), "valid": ", ".join(valid)},
        )
    return data


class Strict(pydantic.BaseModel):
    """A mapping of known keys: any other key is one error naming it and the valid keys
    (the one such check: every config, suite section and suite entry derives from this)."""

    model_config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _check_keys(cls, data: Any) -> Any:
        return known_keys(cls, data)


def build(cls: type[T], data: dict[str, Any] | None, where: str) -> T:
    """Instantiate dataclass `cls` from `data`: unknown keys, wrong types, non-finite or
    out-of-range numbers and disallowed choices are ConfigErrors (one line each)."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    data = dict(data or {})
    try:
        checked = adapter(cls).model_validate(data)
    except pydantic.ValidationError as e:
        raise ConfigError(error_line(e, where, data)) from None
    kwargs = {k: getattr(checked, k) for k in data}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def settings(config: Any) -> dict[str, Any]:
    """A built config's plain form (its fields, nested configs as mappings)."""
    return dataclasses.asdict(config)


def with_settings(config: T, changes: Mapping[str, Any], where: str) -> T:
    """`config` with `changes` (plain values, a tuning point say) validated as `build`
    does; the fields not changed are kept as they are."""
    checked = build(type(config), {**settings(config), **changes}, where)
    return dataclasses.replace(config, **{k: getattr(checked, k) for k in changes})  # type: ignore[type-var]


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses a key given twice in one mapping (PyYAML keeps the
    last silently: a method listed twice would drop the first's settings); the error is a
    ``yaml.YAMLError`` with the second key's position, for `yaml_error_line`."""
    import yaml

    return yaml.load(text, Loader=_unique_key_loader())


@functools.cache
def _unique_key_loader() -> type:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *anchor`: its keys may be overridden here, by design
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in first:
                        raise yaml.constructor.ConstructorError(
                            None,
                            None,
                            f"duplicate key {key!r} (first at line {first[key] + 1})",
                            key_node.start_mark,
                        )
                    first[key] = key_node.start_mark.line
                except TypeError:  # an unhashable key: SafeLoader's own error follows
                    continue
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def yaml_error_line(path: Any, e: Exception) -> str:
    """A YAML error (yaml.YAMLError) as one line: ``file:line:column: problem`` (1-based,
    like compilers); `path` names the source (a file, or ``--set KEY`` for a value)."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else f"{path}"
    return f"{where}: invalid YAML: {problem}" + (f" ({context})" if context else "")


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
