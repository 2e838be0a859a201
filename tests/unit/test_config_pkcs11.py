"""``keys.pkcs11`` (issue 12): a section nested two levels deep in the file, its environment
variables (SCEP_CA_KEYS_PKCS11_*), and the validation messages naming the key to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_config
from config.model import KeysConfig, Pkcs11Config

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scep-ca.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_nested_file_section(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"keys:\n  pkcs11:\n    module: {MODULE}\n    token_label: scep-ca\n    pin_file: /run/secrets/pin\n",
    )
    assert load_config(path, {}, {}).keys.pkcs11 == Pkcs11Config(
        module=Path(MODULE), token_label="scep-ca", pin_file=Path("/run/secrets/pin")
    )


@pytest.mark.parametrize("text", ["keys:\n", "keys:\n  pkcs11:\n"])
def test_empty_nested_sections_mean_file_keys(tmp_path: Path, text: str) -> None:
    assert load_config(write(tmp_path, text), {}, {}).keys == KeysConfig()


def test_environment_variables_for_nested_keys() -> None:
    env = {
        "SCEP_CA_KEYS_PKCS11_MODULE": MODULE,
        "SCEP_CA_KEYS_PKCS11_TOKEN_LABEL": "scep-ca",
        "SCEP_CA_KEYS_PKCS11_PIN_ENV": "HSM_PIN",
    }
    assert load_config(None, env, {}).keys.pkcs11 == Pkcs11Config(
        module=Path(MODULE), token_label="scep-ca", pin_env="HSM_PIN"
    )


def test_environment_overrides_the_nested_file_value(tmp_path: Path) -> None:
    path = write(tmp_path, f"keys:\n  pkcs11:\n    module: {MODULE}\n    token_label: file\n    pin_env: PIN\n")
    config = load_config(path, {"SCEP_CA_KEYS_PKCS11_TOKEN_LABEL": "from-env"}, {})
    assert config.keys.pkcs11.token_label == "from-env"
    assert config.keys.pkcs11.module == Path(MODULE)


def test_dotted_override_of_a_nested_key() -> None:
    config = load_config(
        None, {}, {"keys.pkcs11.module": MODULE, "keys.pkcs11.token_label": "t", "keys.pkcs11.pin_env": "P"}
    )
    assert config.keys.pkcs11.module == Path(MODULE)


def test_unknown_nested_key_suggests_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"keys:\n  pkcs11:\n    modul: {MODULE}\n"), {}, {})
    assert info.value.key == "keys.pkcs11.modul"
    assert "unknown key" in str(info.value) and "did you mean keys.pkcs11.module?" in str(info.value)


@pytest.mark.parametrize(("text", "key"), [("keys:\n  pkcs11: 5\n", "keys.pkcs11"), ("keys: [a]\n", "keys")])
def test_nested_section_must_be_a_mapping(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), {}, {})
    assert str(info.value) == f"{key}: must be a mapping of keys to values"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"keys.pkcs11.module": MODULE, "keys.pkcs11.pin_env": "PIN"},
            "keys.pkcs11.token_label: must be set when keys.pkcs11.module is set",
        ),
        (
            {"keys.pkcs11.module": MODULE, "keys.pkcs11.token_label": "  ", "keys.pkcs11.pin_env": "PIN"},
            "keys.pkcs11.token_label: must be set when keys.pkcs11.module is set (from command line)",
        ),
        (
            {
                "keys.pkcs11.module": MODULE,
                "keys.pkcs11.token_label": "scep-ca",
                "keys.pkcs11.pin_env": "PIN",
                "keys.pkcs11.pin_file": "/run/pin",
            },
            "keys.pkcs11.pin_env: set exactly one of keys.pkcs11.pin_env and keys.pkcs11.pin_file (from command line)",
        ),
        (
            {"keys.pkcs11.module": MODULE, "keys.pkcs11.token_label": "scep-ca"},
            "keys.pkcs11.pin_env: set exactly one of keys.pkcs11.pin_env and keys.pkcs11.pin_file",
        ),
        (
            {"keys.pkcs11.token_label": "scep-ca"},
            "keys.pkcs11.token_label: needs keys.pkcs11.module (the PKCS#11 library) (from command line)",
        ),
        (
            {"keys.pkcs11.pin_file": "/run/pin"},
            "keys.pkcs11.pin_file: needs keys.pkcs11.module (the PKCS#11 library) (from command line)",
        ),
        (
            {"keys.pkcs11.module": MODULE, "keys.pkcs11.token_label": "t", "keys.pkcs11.pin_env": "P"}
            | {"keys.pkcs11.ra_keys": "file"},
            "keys.pkcs11.ra_keys: must be one of files, token (from command line)",
        ),
        (
            # Without a token the CA key would be a file too: not what "RA keys in files" asked for.
            {"keys.pkcs11.ra_keys": "files"},
            "keys.pkcs11.ra_keys: needs keys.pkcs11.module (the token that holds the CA key) (from command line)",
        ),
    ],
    ids=[
        "no-token-label",
        "blank-token-label",
        "both-pins",
        "no-pin",
        "label-without-module",
        "pin-without-module",
        "ra-keys-misspelt",
        "ra-files-without-module",
    ],
)
def test_validation_messages(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {}, overrides)
    assert str(info.value) == message


def test_validation_message_names_the_environment_variable() -> None:
    env = {
        "SCEP_CA_KEYS_PKCS11_MODULE": MODULE,
        "SCEP_CA_KEYS_PKCS11_TOKEN_LABEL": "t",
        "SCEP_CA_KEYS_PKCS11_PIN_ENV": "P",
    }
    with pytest.raises(ConfigError) as info:
        load_config(None, {**env, "SCEP_CA_KEYS_PKCS11_PIN_FILE": "/run/pin"}, {})
    assert str(info.value) == (
        "keys.pkcs11.pin_env: set exactly one of keys.pkcs11.pin_env and keys.pkcs11.pin_file"
        " (from environment variable SCEP_CA_KEYS_PKCS11_PIN_ENV)"
    )


def test_reinit_interval_default_environment_and_validation() -> None:
    assert load_config(None, {}, {}).keys.pkcs11.reinit_interval_seconds == 5
    env = {"SCEP_CA_KEYS_PKCS11_REINIT_INTERVAL_SECONDS": "30"}
    assert load_config(None, env, {}).keys.pkcs11.reinit_interval_seconds == 30
    with pytest.raises(ConfigError) as info:
        load_config(None, {}, {"keys.pkcs11.reinit_interval_seconds": 0})
    assert (
        str(info.value) == "keys.pkcs11.reinit_interval_seconds: must be a positive integer, got 0 (from command line)"
    )


def test_ra_keys_in_files_from_the_file_and_token_by_default(tmp_path: Path) -> None:
    section = f"keys:\n  pkcs11:\n    module: {MODULE}\n    token_label: scep-ca\n    pin_env: PIN\n"
    assert load_config(write(tmp_path, section), {}, {}).keys.pkcs11.ra_keys == "token"
    config = load_config(write(tmp_path, section + "    ra_keys: files\n"), {}, {})
    assert config.keys.pkcs11.ra_keys == "files"
    # The default needs no module: file keys throughout, as before the setting existed.
    assert load_config(None, {}, {}).keys.pkcs11.ra_keys == "token"


def test_ra_keys_from_the_environment_is_named_in_its_error() -> None:
    env = {
        "SCEP_CA_KEYS_PKCS11_MODULE": MODULE,
        "SCEP_CA_KEYS_PKCS11_TOKEN_LABEL": "t",
        "SCEP_CA_KEYS_PKCS11_PIN_ENV": "P",
    }
    assert load_config(None, {**env, "SCEP_CA_KEYS_PKCS11_RA_KEYS": "files"}, {}).keys.pkcs11.ra_keys == "files"
    with pytest.raises(ConfigError) as info:
        load_config(None, {**env, "SCEP_CA_KEYS_PKCS11_RA_KEYS": "hsm"}, {})
    assert info.value.key == "keys.pkcs11.ra_keys"
    assert str(info.value) == (
        "keys.pkcs11.ra_keys: must be one of files, token (from environment variable SCEP_CA_KEYS_PKCS11_RA_KEYS)"
    )
