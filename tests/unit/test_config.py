"""config.load_config: defaults, sources and their precedence, validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import Config, ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scep-ca.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file() -> None:
    config = load_config(None, {}, {})
    assert config == Config()
    assert config.server.port == 8080
    assert config.certificate.key_sizes == (2048,)
    assert config.store.dsn is None


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), {}, {}) == Config()


def test_file_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
data_dir: /var/lib/scep-ca
server:
  host: 0.0.0.0
  port: 8443
  public_url: https://scep.example.com
tls:
  cert: /etc/scep-ca/tls.crt
  key: /etc/scep-ca/tls.key
ca:
  key_size: 4096
scep:
  allow_des: no
challenge:
  length_bytes: 16
  max_unused: 50
certificate:
  key_sizes: [2048, 3072]
store:
  dsn: postgresql://scep@db/scep
log:
  level: warning
  format: json
""",
    )
    config = load_config(path, {}, {})
    assert config.data_dir == Path("/var/lib/scep-ca")
    assert config.server.host == "0.0.0.0"
    assert config.server.port == 8443
    assert config.server.public_url == "https://scep.example.com"
    assert config.tls.cert == Path("/etc/scep-ca/tls.crt")
    assert config.tls.key == Path("/etc/scep-ca/tls.key")
    assert config.ca.key_size == 4096
    assert config.scep.allow_des is False
    assert config.challenge.length_bytes == 16
    assert config.challenge.max_unused == 50
    assert config.challenge.validity_minutes == 60  # untouched keys keep their defaults
    assert config.certificate.key_sizes == (2048, 3072)
    assert config.store.dsn == "postgresql://scep@db/scep"
    assert config.log.level == "WARNING"  # normalised
    assert config.log.format == "json"


def test_section_left_empty_in_file(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "server:\n"), {}, {}).server.port == 8080


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 8443\nstore:\n  dsn: postgres://a/b\n")
    env = {
        "SCEP_CA_SERVER_PORT": "9443",
        "SCEP_CA_DATA_DIR": "/srv/scep",
        "SCEP_CA_SCEP_ALLOW_DES": "false",
        "SCEP_CA_CERTIFICATE_KEY_SIZES": "2048, 4096",
        "SCEP_CA_STORE_DSN": "",  # empty: back to None (SQLite)
        "SCEP_CA_CA_PASSPHRASE_ENV": "SCEP_CA_KEY_PASSPHRASE",
        "SCEP_CA_KEY_PASSPHRASE": "not a config key and not an error",
        "HOME": "/root",
    }
    config = load_config(path, env, {})
    assert config.server.port == 9443
    assert config.data_dir == Path("/srv/scep")
    assert config.scep.allow_des is False
    assert config.certificate.key_sizes == (2048, 4096)
    assert config.store.dsn is None
    assert config.ca.passphrase_env == "SCEP_CA_KEY_PASSPHRASE"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False), ("no", False)],
)
def test_env_booleans(text: str, expected: bool) -> None:
    assert load_config(None, {"SCEP_CA_CHALLENGE_UTF16_BOM": text}, {}).challenge.utf16_bom is expected


def test_override_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 8443\n  host: 10.0.0.1\nlog:\n  level: INFO\n")
    env = {"SCEP_CA_SERVER_PORT": "9443", "SCEP_CA_LOG_LEVEL": "ERROR"}
    overrides: dict[str, object] = {"server.port": 10443, "data_dir": "/tmp/x", "log.level": None}
    config = load_config(path, env, overrides)
    assert config.server.port == 10443  # override beats env and file
    assert config.server.host == "10.0.0.1"  # file beats default
    assert config.log.level == "ERROR"  # None override means "flag not given": env stays
    assert config.data_dir == Path("/tmp/x")


def test_override_string_values_are_converted() -> None:
    config = load_config(None, {}, {"server.port": "8081", "scep.include_ca_in_reply": "yes"})
    assert config.server.port == 8081
    assert config.scep.include_ca_in_reply is True


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"server.port": 0}, "server.port"),
        ({"server.port": 70000}, "server.port"),
        ({"server.port": "http"}, "server.port"),
        ({"server.port": True}, "server.port"),
        ({"server.workers": -1}, "server.workers"),
        ({"server.max_body_bytes": -1}, "server.max_body_bytes"),
        ({"server.max_line_bytes": 0}, "server.max_line_bytes"),
        ({"server.host": " "}, "server.host"),
        ({"server.public_url": "scep.example.com"}, "server.public_url"),
        ({"server.public_url": "ftp://scep.example.com"}, "server.public_url"),
        ({"server.public_url": "https://"}, "server.public_url"),
        ({"server.public_url": "https://user:secret@scep.example.com"}, "server.public_url"),
        ({"server.public_url": "https://scep example.com"}, "server.public_url"),
        ({"server.public_url": "https://scep.example.com:http"}, "server.public_url"),
        ({"server.public_url": "https://[::1"}, "server.public_url"),
        ({"tls.cert": "/etc/tls.crt"}, "tls.key"),
        ({"tls.key": "/etc/tls.key"}, "tls.cert"),
        ({"ca.key_size": 1024}, "ca.key_size"),
        ({"ca.validity_days": 0}, "ca.validity_days"),
        ({"ca.subject": ""}, "ca.subject"),
        ({"scep.allow_des": "maybe"}, "scep.allow_des"),
        ({"challenge.length_bytes": 3}, "challenge.length_bytes"),
        ({"challenge.length_bytes": 65}, "challenge.length_bytes"),
        ({"challenge.validity_minutes": 0}, "challenge.validity_minutes"),
        ({"challenge.max_unused": 0}, "challenge.max_unused"),
        ({"challenge.basic_check_concurrency": 0}, "challenge.basic_check_concurrency"),
        ({"challenge.basic_check_queue": -1}, "challenge.basic_check_queue"),
        ({"certificate.key_sizes": [2048, 1024]}, "certificate.key_sizes"),
        ({"certificate.key_sizes": []}, "certificate.key_sizes"),
        ({"certificate.key_sizes": ["big"]}, "certificate.key_sizes[0]"),
        ({"certificate.validity_days": 0}, "certificate.validity_days"),
        ({"store.dsn": "mysql://db/scep"}, "store.dsn"),
        ({"store.pool_max": 0}, "store.pool_max"),
        ({"store.pool_min": 20}, "store.pool_min"),
        ({"log.format": "xml"}, "log.format"),
        ({"log.level": "LOUD"}, "log.level"),
        ({"log.level": 10}, "log.level"),
        ({"data_dir": ""}, "data_dir"),
        # The client secret and bearer tokens go there: https only (issue 17 item 14).
        ({"intune.login_url": "http://login.microsoftonline.com/"}, "intune.login_url"),
        ({"intune.graph_url": "http://127.0.0.1:8443/"}, "intune.graph_url"),
        ({"intune.login_url": "https://login.microsoftonline.com"}, "intune.login_url"),
        ({"intune.ca_file": "/nonexistent/ca.pem"}, "intune.ca_file"),
        ({"validators.concurrency": 0}, "validators.concurrency"),
        ({"validators.integration_rate": 0}, "validators.integration_rate"),
        ({"validators.client_rate": -1}, "validators.client_rate"),
        ({"validators.integration_burst": 0}, "validators.integration_burst"),
        ({"validators.client_burst": 0}, "validators.client_burst"),
        ({"validators.queue_seconds": 0}, "validators.queue_seconds"),
        # The queue wait must stay below the call timeouts (10 s by default).
        ({"validators.queue_seconds": 10}, "validators.queue_seconds"),
        ({"webhook.timeout_seconds": 1, "validators.queue_seconds": 1.5}, "validators.queue_seconds"),
    ],
)
def test_validation_error_names_key(overrides: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {}, overrides)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_port_message() -> None:
    with pytest.raises(ConfigError, match=r"^server\.port: must be an integer between 1 and 65535"):
        load_config(None, {}, {"server.port": 0})


def test_error_names_its_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"SCEP_CA_CA_KEY_SIZE"):
        load_config(None, {"SCEP_CA_CA_KEY_SIZE": "1000"}, {})
    path = write(tmp_path, "log:\n  format: xml\n")
    with pytest.raises(ConfigError, match=r"^log\.format: .*scep-ca\.yaml"):
        load_config(path, {}, {})


def test_dsn_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {}, {"store.dsn": "mysql://user:s3cret@db/scep"})
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("colour: blue\n", "colour"),
        ("server:\n  prot: 8080\n", "server.prot"),
        ("challenge:\n  length: 8\n", "challenge.length"),
    ],
)
def test_unknown_file_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), {}, {})
    assert info.value.key == key
    assert "unknown key" in str(info.value)


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"did you mean server\.port\?"):
        load_config(write(tmp_path, "server:\n  prot: 8080\n"), {}, {})


@pytest.mark.parametrize("key", ["nope", "server.nope", "server", "server.port.x"])
def test_unknown_override_key(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {}, {key: 1})
    assert info.value.key == key


def test_section_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "server: 8080\n"), {}, {})
    assert info.value.key == "server"


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_file_not_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, text), {}, {})


def test_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "server: [unclosed\n"), {}, {})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", {}, {})


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    # safe_load refuses Python object tags instead of constructing them.
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "data_dir: !!python/object/apply:os.getcwd []\n"), {}, {})


def test_trusted_proxies_from_yaml_list_and_env(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  trusted_proxies: [127.0.0.1, 10.0.0.0/8]\n")
    assert load_config(path, {}, {}).server.trusted_proxies == ("127.0.0.1", "10.0.0.0/8")
    env = {"SCEP_CA_SERVER_TRUSTED_PROXIES": "::1, 192.0.2.0/24"}
    assert load_config(path, env, {}).server.trusted_proxies == ("::1", "192.0.2.0/24")
    assert load_config(None, {}, {}).server.trusted_proxies == ()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("server:\n  trusted_proxies: [127.0.0.1, nginx]\n", "server.trusted_proxies[1]"),
        ("server:\n  trusted_proxies: [10.0.0.1/8]\n", "server.trusted_proxies[0]"),
        ("server:\n  trusted_proxies: 5\n", "server.trusted_proxies"),
        ("server:\n  trusted_proxies: [5]\n", "server.trusted_proxies[0]"),
        ("server:\n  metrics_token: short\n", "server.metrics_token"),
        ("server:\n  header_timeout_seconds: 0\n", "server.header_timeout_seconds"),
        ("server:\n  body_timeout_seconds: -1\n", "server.body_timeout_seconds"),
        ("server:\n  keepalive_timeout_seconds: 0\n", "server.keepalive_timeout_seconds"),
        ("server:\n  max_connections: -1\n", "server.max_connections"),
        ("server:\n  write_timeout_seconds: 0\n", "server.write_timeout_seconds"),
        ("server:\n  max_pipelined_requests: 0\n", "server.max_pipelined_requests"),
        ("server:\n  max_header_field_bytes: 0\n", "server.max_header_field_bytes"),
        ("server:\n  max_head_bytes: 1000\n", "server.max_head_bytes"),  # below max_line_bytes
    ],
)
def test_server_network_settings_are_validated(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), {}, {})
    assert err.value.key == key


def test_bad_trusted_proxy_from_env_names_key_and_source() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, {"SCEP_CA_SERVER_TRUSTED_PROXIES": "127.0.0.1,nginx"}, {})
    assert err.value.key == "server.trusted_proxies[1]"
    assert "SCEP_CA_SERVER_TRUSTED_PROXIES" in str(err.value)


def test_network_defaults() -> None:
    server = Config().server
    assert (server.header_timeout_seconds, server.body_timeout_seconds, server.keepalive_timeout_seconds) == (
        10,
        30,
        15,
    )
    assert server.max_connections == 0 and server.metrics_token is None
    assert (server.write_timeout_seconds, server.max_pipelined_requests) == (30, 16)
    # The request line keeps 96 KiB (Intune's GETs); header fields and the whole head are capped apart.
    assert (server.max_line_bytes, server.max_header_field_bytes, server.max_head_bytes) == (98_304, 8_192, 131_072)


def test_new_network_settings_from_the_environment() -> None:
    env = {"SCEP_CA_SERVER_WRITE_TIMEOUT_SECONDS": "5", "SCEP_CA_SERVER_MAX_HEAD_BYTES": "200000"}
    server = load_config(None, env, {}).server
    assert (server.write_timeout_seconds, server.max_head_bytes) == (5, 200_000)


def test_validator_bounds_and_intune_trust_from_env(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {
        "SCEP_CA_VALIDATORS_QUEUE_SECONDS": "1.5",
        "SCEP_CA_VALIDATORS_CLIENT_BURST": "5",
        "SCEP_CA_INTUNE_CA_FILE": str(ca_file),
    }
    config = load_config(None, env, {})
    assert (config.validators.queue_seconds, config.validators.client_burst) == (1.5, 5)
    assert config.validators.concurrency == 8 and config.intune.ca_file == ca_file


@pytest.mark.parametrize("shards", [-1, 4097])
def test_crl_shards_out_of_range(shards: int) -> None:
    with pytest.raises(ConfigError, match=rf"^revocation\.crl_shards: must be between 0 and 4096, got {shards} "):
        load_config(None, {}, {"revocation.crl_shards": shards})


def test_crl_shards_default_and_env() -> None:
    assert load_config(None, {}, {}).revocation.crl_shards == 128
    assert load_config(None, {"SCEP_CA_REVOCATION_CRL_SHARDS": "0"}, {}).revocation.crl_shards == 0
    assert load_config(None, {"SCEP_CA_REVOCATION_CRL_SHARDS": "4096"}, {}).revocation.crl_shards == 4096
