"""Every default the README shows is the code's (config/model.py).

The README's Configuration section opens with a YAML block of the settings and their defaults;
it said ``max_line_bytes: 32768`` long after the code's default became 96 KiB. Here the block is
loaded with the real loader (so an unknown or misspelt key fails too) and the result must equal
``Config()``: a value in the block that is not the code's default shows up as a difference.
Prose of the form ``section.key`` (default ``V``) or ``section.key`` (N) is checked the same way.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from config import Config, load_config

README = Path(__file__).resolve().parents[2] / "README.md"


def _configuration_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README's Configuration section has no ```yaml block"
    return match.group(1)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        flat: dict[str, Any] = {}
        for item in dataclasses.fields(value):
            flat.update(_flat(getattr(value, item.name), f"{prefix}{item.name}."))
        return flat
    return {prefix.rstrip("."): value}


def _leaf_keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            keys |= _leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def test_the_configuration_block_shows_the_code_defaults(tmp_path: Path) -> None:
    block = _configuration_block()
    shown = _leaf_keys(yaml.safe_load(block))
    path = tmp_path / "readme.yaml"
    path.write_text(block, encoding="utf-8")
    loaded, defaults = _flat(load_config(path, {}, {})), _flat(Config())
    differences = {key: (loaded[key], defaults[key]) for key in defaults if loaded[key] != defaults[key]}
    assert differences == {}, f"README value vs the code's default: {differences}"
    # The comparison covers what the block shows: every key in it is a setting of the code.
    assert shown <= set(defaults), shown - set(defaults)
    assert len(shown) >= 40, sorted(shown)


_PROSE_DEFAULT = re.compile(r"`([a-z_]+(?:\.[a-z_0-9]+)+)` \((?:default `([^`]+)`|([0-9.]+))\)")


def _prose_defaults() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2) or m.group(3)) for m in _PROSE_DEFAULT.finditer(text)]


def test_the_prose_finds_defaults_to_check() -> None:
    assert {"intune.login_url", "server.header_timeout_seconds"} <= {key for key, _ in _prose_defaults()}


@pytest.mark.parametrize(("key", "shown"), _prose_defaults())
def test_a_default_named_in_the_prose_is_the_code_default(key: str, shown: str) -> None:
    defaults = _flat(Config())
    assert key in defaults, f"the README names `{key}`, which is not a setting"
    assert load_config(None, {}, {key: shown}) == Config(), f"README says {key} defaults to {shown!r}"
