"""The public URL: where it comes from (config, data directory, listen address) and the loopback checks."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from config import Config, load_config
from config.clients import is_loopback_host
from scep_ca.pki.public_url import (
    PUBLIC_URL_FILE,
    PublicUrlError,
    check_public_url,
    derive_public_url,
    loopback_mismatch,
    public_base_url,
    read_public_url,
    resolved,
    write_public_url,
)


def _config(tmp_path: Path, **server: object) -> Config:
    return load_config(None, {}, {"data_dir": str(tmp_path), **{f"server.{k}": v for k, v in server.items()}})


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.7", False),
        ("ca.example", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x/",
        "http://",
        "ca.example",
        "http://x/?a=b",
        "http://x/#f",
        "",
        "https://u:p@ca.example",
        "https://ca\texample",
        "https://ca.example:99999",
        "https://ca_.-example",
        "http://[::1",
    ],
)
def test_check_public_url_refuses(url: str) -> None:
    with pytest.raises(PublicUrlError) as caught:
        check_public_url(url)
    assert "\n" not in str(caught.value) and ":p@" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["https://ca.example", "http://127.0.0.1:8080/", "https://[2001:db8::1]:8443/scep-ca", "https://ca.example."],
)
def test_check_public_url_accepts(url: str) -> None:
    assert check_public_url(f" {url} ") == url.rstrip("/")


def test_stored_url_is_read_back_without_trailing_slash(tmp_path: Path) -> None:
    assert read_public_url(tmp_path) is None
    assert write_public_url(tmp_path, "https://ca.example/scep-ca/") == "https://ca.example/scep-ca"
    assert (tmp_path / PUBLIC_URL_FILE).read_text() == "https://ca.example/scep-ca\n"
    assert read_public_url(tmp_path) == "https://ca.example/scep-ca"


def test_derived_url_is_the_listen_address_even_with_a_public_url_set(tmp_path: Path) -> None:
    config = _config(tmp_path, host="127.0.0.1", port=9000, public_url="https://ca.example")
    assert derive_public_url(config) == "http://127.0.0.1:9000"


def test_config_overrides_stored_overrides_listen_address(tmp_path: Path) -> None:
    listen = _config(tmp_path, host="127.0.0.1", port=9001)
    assert public_base_url(listen) == "http://127.0.0.1:9001"
    write_public_url(tmp_path, "https://stored.example")
    assert public_base_url(listen) == "https://stored.example"
    configured = _config(tmp_path, public_url="https://configured.example")
    assert public_base_url(configured) == "https://configured.example"


def test_wildcard_listen_address_derives_this_host(tmp_path: Path) -> None:
    config = _config(tmp_path, host="0.0.0.0", port=8443)
    assert derive_public_url(config) == f"http://{socket.getfqdn()}:8443"
    assert resolved(config).server.public_url == f"http://{socket.getfqdn()}:8443"


@pytest.mark.parametrize(
    ("host", "stored", "mismatch"),
    [
        ("192.0.2.7", "http://127.0.0.1:8080", True),  # certificates name loopback, clients come from elsewhere
        ("0.0.0.0", "http://localhost:8080", True),
        ("127.0.0.1", "http://127.0.0.1:8080", False),  # a loopback lab: consistent
        ("192.0.2.7", "https://ca.example", False),
        ("127.0.0.1", "https://ca.example", False),  # behind a local proxy
    ],
)
def test_loopback_mismatch(tmp_path: Path, host: str, stored: str, mismatch: bool) -> None:
    write_public_url(tmp_path, stored)
    assert loopback_mismatch(_config(tmp_path, host=host)) is mismatch
