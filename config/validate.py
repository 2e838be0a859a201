"""Semantic checks on a fully built ``Config``.

Types are already right when these run (see ``config.coerce``); here we check
ranges, enumerations and relations between keys. The first problem found is
raised as a ``ConfigError`` naming its dotted key.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from config.clients import is_loopback_host, parse_networks
from config.errors import ConfigError
from config.model import MAX_CRL_SHARDS, RA_KEY_PLACES, RA_KEYS_IN_TOKEN, Config, split_listen
from config.urls import public_url_problem

RSA_KEY_SIZES = frozenset({2048, 3072, 4096})
LOG_FORMATS = frozenset({"text", "json"})
CHALLENGE_LENGTH_BYTES = range(4, 65)
DSN_SCHEMES = ("postgresql://", "postgres://")


def validate(config: Config) -> None:
    """Raise ``ConfigError`` for the first invalid value in ``config``."""
    _validate_server(config)
    _validate_tls(config)
    _validate_ca(config)
    _validate_challenge(config)
    _validate_certificate(config)
    _validate_store(config)
    _validate_log(config)
    _validate_pkcs11(config)
    _validate_validators(config)
    _validate_expiry(config)
    _validate_console(config)
    _positive("revocation.crl_next_update_hours", config.revocation.crl_next_update_hours)
    _positive("scep.renewal_days", config.scep.renewal_days)
    _positive("scep.pending_expiry_hours", config.scep.pending_expiry_hours)
    _positive("revocation.ocsp_validity_minutes", config.revocation.ocsp_validity_minutes)
    _positive("audit.checkpoint_interval_seconds", config.audit.checkpoint_interval_seconds)
    if not 0 <= config.revocation.crl_shards <= MAX_CRL_SHARDS:
        raise ConfigError(
            "revocation.crl_shards", f"must be between 0 and {MAX_CRL_SHARDS}, got {config.revocation.crl_shards}"
        )
    for key, token in (
        ("server.api_token", config.server.api_token),
        ("server.metrics_token", config.server.metrics_token),
    ):
        if token is not None and len(token) < 16:
            raise ConfigError(key, "must be at least 16 characters")


def _validate_console(config: Config) -> None:
    console = config.console
    try:
        host, _ = split_listen(console.listen)
    except ValueError as exc:
        raise ConfigError("console.listen", str(exc)) from None
    if (console.tls.cert is None) != (console.tls.key is None):
        raise ConfigError("console.tls.key" if console.tls.key is None else "console.tls.cert", "set both or neither")
    # Passwords and session cookies cross this connection: off loopback they need TLS.
    if console.enabled and console.tls.cert is None and not is_loopback_host(host):
        raise ConfigError(
            "console.listen",
            f"{host} is not loopback: set console.tls.cert and console.tls.key, or listen on 127.0.0.1 or [::1]",
        )
    _positive("console.session_idle_seconds", console.session_idle_seconds)
    _positive("console.session_max_seconds", console.session_max_seconds)
    _positive("console.expiring_days", console.expiring_days)


def _positive(key: str, value: int) -> None:
    if value < 1:
        raise ConfigError(key, f"must be a positive integer, got {value}")


def _non_empty(key: str, value: str) -> None:
    if not value.strip():
        raise ConfigError(key, "must not be empty")


def _validate_server(config: Config) -> None:
    server = config.server
    _non_empty("server.host", server.host)
    if not 1 <= server.port <= 65535:
        raise ConfigError("server.port", "must be an integer between 1 and 65535")
    _positive("server.max_body_bytes", server.max_body_bytes)
    _positive("server.max_line_bytes", server.max_line_bytes)
    _positive("server.max_header_field_bytes", server.max_header_field_bytes)
    if server.max_head_bytes < server.max_line_bytes:
        raise ConfigError("server.max_head_bytes", f"must be at least server.max_line_bytes ({server.max_line_bytes})")
    _positive("server.header_timeout_seconds", server.header_timeout_seconds)
    _positive("server.body_timeout_seconds", server.body_timeout_seconds)
    _positive("server.keepalive_timeout_seconds", server.keepalive_timeout_seconds)
    _positive("server.write_timeout_seconds", server.write_timeout_seconds)
    _positive("server.max_pipelined_requests", server.max_pipelined_requests)
    if server.max_connections < 0:
        raise ConfigError("server.max_connections", "must be 0 (derived from the file-descriptor limit) or positive")
    try:
        parse_networks(server.trusted_proxies)
    except ValueError as exc:
        index, _, problem = str(exc).partition(" ")
        raise ConfigError(f"server.trusted_proxies{index}", problem) from None
    if server.workers < 0:
        raise ConfigError("server.workers", "must be 0 (one per CPU) or a positive number of processes")
    if server.public_url is not None:
        url_problem = public_url_problem(server.public_url.strip())
        if url_problem is not None:
            raise ConfigError("server.public_url", url_problem)


def _validate_tls(config: Config) -> None:
    # A certificate without its key (or the reverse) cannot serve TLS; refuse
    # rather than silently falling back to plain HTTP.
    if config.tls.cert is not None and config.tls.key is None:
        raise ConfigError("tls.key", "must be set when tls.cert is set")
    if config.tls.key is not None and config.tls.cert is None:
        raise ConfigError("tls.cert", "must be set when tls.key is set")


def _validate_ca(config: Config) -> None:
    ca = config.ca
    if ca.key_size not in RSA_KEY_SIZES:
        raise ConfigError("ca.key_size", f"must be one of {_listing(RSA_KEY_SIZES)}")
    _non_empty("ca.subject", ca.subject)
    _positive("ca.validity_days", ca.validity_days)
    if ca.passphrase_env is not None:
        _non_empty("ca.passphrase_env", ca.passphrase_env)


def _validate_challenge(config: Config) -> None:
    ch = config.challenge
    if ch.length_bytes not in CHALLENGE_LENGTH_BYTES:
        raise ConfigError("challenge.length_bytes", "must be an integer between 4 and 64")
    _positive("challenge.validity_minutes", ch.validity_minutes)
    _positive("challenge.max_unused", ch.max_unused)
    _positive("challenge.lockout_failures", ch.lockout_failures)
    _positive("challenge.lockout_window_seconds", ch.lockout_window_seconds)
    _positive("challenge.lockout_seconds", ch.lockout_seconds)
    _positive("challenge.basic_check_concurrency", ch.basic_check_concurrency)
    if ch.basic_check_queue < 0:
        raise ConfigError("challenge.basic_check_queue", "must be 0 or more")


def _validate_certificate(config: Config) -> None:
    cert = config.certificate
    _positive("certificate.validity_days", cert.validity_days)
    if not cert.key_sizes:
        raise ConfigError("certificate.key_sizes", "must name at least one key size")
    bad = sorted(set(cert.key_sizes) - RSA_KEY_SIZES)
    if bad:
        raise ConfigError("certificate.key_sizes", f"must be a subset of {_listing(RSA_KEY_SIZES)}, got {bad[0]}")


def _validate_store(config: Config) -> None:
    store = config.store
    if store.dsn is not None and not store.dsn.startswith(DSN_SCHEMES):
        # Never echo the DSN: it may hold a password.
        raise ConfigError("store.dsn", "must start with postgresql:// or postgres://")
    if store.pool_min < 0:
        raise ConfigError("store.pool_min", f"must be zero or more, got {store.pool_min}")
    _positive("store.pool_max", store.pool_max)
    if store.pool_min > store.pool_max:
        raise ConfigError("store.pool_min", "must not exceed store.pool_max")


def _validate_log(config: Config) -> None:
    if config.log.format not in LOG_FORMATS:
        raise ConfigError("log.format", f"must be one of {_listing(LOG_FORMATS)}")
    if config.log.level.upper() not in logging.getLevelNamesMapping():
        raise ConfigError("log.level", "must be a logging level name such as DEBUG, INFO or WARNING")


def _validate_pkcs11(config: Config) -> None:
    p11 = config.keys.pkcs11
    _positive("keys.pkcs11.reinit_interval_seconds", p11.reinit_interval_seconds)
    if p11.ra_keys not in RA_KEY_PLACES:
        raise ConfigError("keys.pkcs11.ra_keys", f"must be one of {_listing(RA_KEY_PLACES)}")
    if p11.module is None:
        for name in ("token_label", "pin_env", "pin_file"):
            if getattr(p11, name) is not None:
                raise ConfigError(f"keys.pkcs11.{name}", "needs keys.pkcs11.module (the PKCS#11 library)")
        # Without a token every key is a file already: asking for RA files only means the
        # operator expected the CA key in a token that is not configured.
        if p11.ra_keys != RA_KEYS_IN_TOKEN:
            raise ConfigError("keys.pkcs11.ra_keys", "needs keys.pkcs11.module (the token that holds the CA key)")
        return
    if not p11.token_label or not p11.token_label.strip():
        raise ConfigError("keys.pkcs11.token_label", "must be set when keys.pkcs11.module is set")
    if (p11.pin_env is None) == (p11.pin_file is None):
        raise ConfigError("keys.pkcs11.pin_env", "set exactly one of keys.pkcs11.pin_env and keys.pkcs11.pin_file")


def _validate_validators(config: Config) -> None:
    # The client secret and bearer tokens travel to these URLs: https only (tests trust a
    # stand-in's CA through intune.ca_file rather than weakening this).
    for key, url in (("intune.login_url", config.intune.login_url), ("intune.graph_url", config.intune.graph_url)):
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.netloc or not url.endswith("/"):
            raise ConfigError(key, "must be an https:// URL with a host, ending in /")
    if config.intune.ca_file is not None and not config.intune.ca_file.is_file():
        raise ConfigError("intune.ca_file", "must name a readable PEM file of CA certificates")
    for key, seconds in (
        ("intune.timeout_seconds", config.intune.timeout_seconds),
        ("webhook.timeout_seconds", config.webhook.timeout_seconds),
    ):
        if not 0 < seconds <= 300:
            raise ConfigError(key, "must be more than 0 and at most 300 seconds")
    limits = config.validators
    _positive("validators.concurrency", limits.concurrency)
    _positive("validators.integration_burst", limits.integration_burst)
    _positive("validators.client_burst", limits.client_burst)
    for key, rate in (
        ("validators.integration_rate", limits.integration_rate),
        ("validators.client_rate", limits.client_rate),
    ):
        if not rate > 0:
            raise ConfigError(key, "must be more than 0 per second")
    shortest = min(config.intune.timeout_seconds, config.webhook.timeout_seconds)
    if not 0 < limits.queue_seconds < shortest:
        # A request that waited longer than a call may take would have been better refused at once.
        raise ConfigError(
            "validators.queue_seconds", f"must be more than 0 and less than {shortest:g} (the call timeouts)"
        )


def _validate_expiry(config: Config) -> None:
    _positive("ra.validity_days", config.ra.validity_days)
    _positive("ra.renew_before_days", config.ra.renew_before_days)
    if config.ra.renew_before_days >= config.ra.validity_days:
        # Every new RA would be due at once: renewal at every start and every day.
        raise ConfigError("ra.renew_before_days", "must be less than ra.validity_days")
    _positive("metrics.counts_max_age_seconds", config.metrics.counts_max_age_seconds)
    notify = config.notify
    if notify.webhook_url is not None:
        parts = urlsplit(notify.webhook_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError("notify.webhook_url", "must be an http:// or https:// URL with a host")
        if not notify.secret_env:
            raise ConfigError("notify.secret_env", "must name the environment variable holding the signing secret")
    if not 0 < notify.timeout_seconds <= 300:
        raise ConfigError("notify.timeout_seconds", "must be more than 0 and at most 300 seconds")
    _positive("notify.attempts", notify.attempts)
    if not 0 <= notify.retry_seconds <= 3600:
        raise ConfigError("notify.retry_seconds", "must be between 0 and 3600 seconds")


def _listing(values: frozenset[int] | frozenset[str]) -> str:
    return ", ".join(sorted(str(v) for v in values))
