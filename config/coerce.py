"""Turn raw values (YAML scalars, environment strings, CLI objects) into field types.

Each converter accepts both the native type and its string form, because the same
key can come from YAML (already typed), from an environment variable (always a
string) or from a CLI flag (either). Conversion fails closed with a ``ConfigError``
naming the dotted key.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from pathlib import Path

from config.errors import ConfigError

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def coerce(value: object, field_type: object, key: str) -> object:
    """Convert ``value`` to ``field_type`` (as resolved by ``typing.get_type_hints``)."""
    optional, base = _split_optional(field_type)
    if optional and (value is None or value == ""):
        # An empty environment variable is the only way to say "unset" there.
        return None
    if value is None:
        raise ConfigError(key, "must not be empty")
    converter = _CONVERTERS.get(base)
    if converter is not None:
        return converter(value, key)
    if typing.get_origin(base) is tuple and typing.get_args(base) == (int, Ellipsis):
        return _to_int_tuple(value, key)
    if typing.get_origin(base) is tuple and typing.get_args(base) == (str, Ellipsis):
        return _to_str_tuple(value, key)
    raise TypeError(f"{key}: no converter for field type {field_type!r}")  # a bug in the model, not input


def _split_optional(field_type: object) -> tuple[bool, object]:
    """``X | None`` -> (True, X); anything else -> (False, type)."""
    if typing.get_origin(field_type) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(field_type) if a is not type(None)]
        if len(args) == 1:
            return True, args[0]
    return False, field_type


def _to_float(value: object, key: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ConfigError(key, f"must be a number, got {value!r}") from None
    else:
        raise ConfigError(key, f"must be a number, got {value!r}")
    if number != number or number in (float("inf"), float("-inf")):
        raise ConfigError(key, "must be a finite number")
    return number


def _to_int(value: object, key: str) -> int:
    # bool is an int subclass; "port: true" is a mistake, not 1.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 10)
        except ValueError:
            pass
    raise ConfigError(key, f"must be an integer, got {value!r}")


def _to_bool(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ConfigError(key, f"must be true or false, got {value!r}")


def _to_str(value: object, key: str) -> str:
    if isinstance(value, str):
        return value
    raise ConfigError(key, f"must be a string, got {value!r}")


def _to_path(value: object, key: str) -> Path:
    if isinstance(value, Path):
        return value
    if isinstance(value, str) and value.strip():
        return Path(value).expanduser()
    raise ConfigError(key, f"must be a file system path, got {value!r}")


def _to_int_tuple(value: object, key: str) -> tuple[int, ...]:
    items: list[object]
    if isinstance(value, str):
        items = [part for part in (p.strip() for p in value.split(",")) if part]
    elif isinstance(value, list | tuple):
        items = list(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]  # "key_sizes: 2048" reads naturally as a one-element list
    else:
        raise ConfigError(key, f"must be a list of integers, got {value!r}")
    return tuple(_to_int(item, f"{key}[{i}]") for i, item in enumerate(items))


def _to_str_tuple(value: object, key: str) -> tuple[str, ...]:
    """A YAML list, or a comma-separated string (an environment variable)."""
    items: list[object]
    if isinstance(value, str):
        items = [part for part in (p.strip() for p in value.split(",")) if part]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ConfigError(key, f"must be a list of strings, got {value!r}")
    return tuple(_to_str(item, f"{key}[{i}]") for i, item in enumerate(items))


_CONVERTERS: typing.Final[typing.Mapping[object, Callable[[object, str], object]]] = types.MappingProxyType(
    {int: _to_int, float: _to_float, bool: _to_bool, str: _to_str, Path: _to_path}
)
