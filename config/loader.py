"""Load a ``Config`` from defaults, a YAML file, the environment and CLI overrides.

Precedence, lowest first: dataclass defaults, the YAML file, ``SCEP_CA_*``
environment variables, then ``overrides`` (CLI flags). Unknown keys and bad
values raise ``ConfigError`` naming the dotted key, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from pathlib import Path

import yaml

from config.coerce import coerce
from config.errors import ConfigError
from config.model import Config
from config.validate import validate

ENV_PREFIX = "SCEP_CA_"

# A dotted key ("server.port" or "data_dir") -> its raw value, and where it came from.
_Raw = dict[str, object]
_Sources = dict[str, str]


def load_config(path: Path | None, env: Mapping[str, str], overrides: Mapping[str, object]) -> Config:
    """Build and validate the configuration.

    ``path`` is an optional YAML file; ``env`` is usually ``os.environ``; ``overrides``
    maps dotted keys (``"server.port"``, ``"data_dir"``) to values from CLI flags. An
    override whose value is None means "flag not given" and is skipped, so the CLI can
    pass its parsed arguments straight through.
    """
    schema = _schema()
    raw: _Raw = {}
    sources: _Sources = {}
    if path is not None:
        _merge_file(path, schema, raw, sources)
    _merge_env(env, schema, raw, sources)
    _merge_overrides(overrides, schema, raw, sources)
    try:
        config = _build(schema, raw)
        validate(config)
    except ConfigError as exc:
        source = sources.get(exc.key.split("[", 1)[0])
        if source is None:
            raise
        raise ConfigError(exc.key, f"{exc.problem} (from {source})") from None
    return config


def _schema(section: type = Config, prefix: str = "") -> dict[str, object]:
    """Every dotted key -> its field type, from the dataclasses themselves (nested: ``keys.pkcs11.module``)."""
    schema: dict[str, object] = {}
    for name, tp in typing.get_type_hints(section).items():
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            schema.update(_schema(tp, f"{prefix}{name}."))
        else:
            schema[prefix + name] = tp
    return schema


def _unknown(key: str, known: typing.Iterable[str]) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(key, f"unknown key{hint}")


def _merge_file(path: Path, schema: Mapping[str, object], raw: _Raw, sources: _Sources) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read configuration file: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"not valid YAML: {exc}") from None
    if document is None:  # an empty file is a valid "all defaults"
        return
    if not isinstance(document, dict):
        raise ConfigError(str(path), "the configuration file must be a mapping of keys to values")
    sections = {key.rsplit(".", i)[0] for key in schema for i in range(1, key.count(".") + 1)}
    _merge_mapping(document, "", sections, f"file {path}", schema, raw, sources)


def _merge_mapping(
    mapping: dict[object, object],
    prefix: str,
    sections: set[str],
    label: str,
    schema: Mapping[str, object],
    raw: _Raw,
    sources: _Sources,
) -> None:
    for name, value in mapping.items():
        key = prefix + str(name)
        if key in sections:
            if value is None:  # "server:" with nothing under it
                continue
            if not isinstance(value, dict):
                raise ConfigError(key, "must be a mapping of keys to values")
            _merge_mapping(value, f"{key}.", sections, label, schema, raw, sources)
        else:
            _put(key, value, label, schema, raw, sources)


def _merge_env(env: Mapping[str, str], schema: Mapping[str, object], raw: _Raw, sources: _Sources) -> None:
    # Only names derived from known keys are read. Other SCEP_CA_* variables are
    # left alone on purpose: ca.passphrase_env may name one, e.g. SCEP_CA_KEY_PASSPHRASE.
    for key in schema:
        name = ENV_PREFIX + key.replace(".", "_").upper()
        if name in env:
            raw[key] = env[name]
            sources[key] = f"environment variable {name}"


def _merge_overrides(
    overrides: Mapping[str, object], schema: Mapping[str, object], raw: _Raw, sources: _Sources
) -> None:
    for key, value in overrides.items():
        if value is not None:
            _put(key, value, "command line", schema, raw, sources)


def _put(key: str, value: object, label: str, schema: Mapping[str, object], raw: _Raw, sources: _Sources) -> None:
    if key not in schema:
        raise _unknown(key, schema)
    raw[key] = value
    sources[key] = label


def _build(schema: Mapping[str, object], raw: Mapping[str, object]) -> Config:
    """Convert raw values by field type and assemble the frozen dataclasses."""
    config = _build_section(Config, "", schema, raw)
    assert isinstance(config, Config)
    # Level names are case-insensitive for the operator; store the canonical form.
    return dataclasses.replace(config, log=dataclasses.replace(config.log, level=config.log.level.upper()))


def _build_section(section: type, prefix: str, schema: Mapping[str, object], raw: Mapping[str, object]) -> object:
    # Any: each value's type is checked at run time by coerce() against the field type.
    kwargs: dict[str, typing.Any] = {}
    for name, tp in typing.get_type_hints(section).items():
        key = prefix + name
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            kwargs[name] = _build_section(tp, f"{key}.", schema, raw)
        elif key in raw:
            kwargs[name] = coerce(raw[key], schema[key], key)
    # Keyword construction keeps the defaults for every key not given.
    return section(**kwargs)
