"""Build the audit log a process uses from its configuration."""

from __future__ import annotations

import functools
from collections.abc import Callable

from audit.checkpoint import CheckpointSigner
from audit.encoding import MacKey
from audit.keys import load_checkpoint_key, load_mac_key
from audit.service import AuditLog
from audit.token_keys import TokenMacKey, load_token_checkpoint_key
from config.clock import Clock, utc_now
from config.model import Config
from scep_ca.pki.pkcs11_keys import Token
from store.base import AuditStore


def mac_key(config: Config, *, create_keys: bool = True, token: Token | None = None) -> MacKey:
    """The MAC key: in ``token`` when given (``keys.pkcs11``), else ``audit.key`` in the data directory."""
    if token is not None:
        return TokenMacKey(token, create=create_keys)
    return load_mac_key(config.data_dir, create=create_keys)


def audit_log(
    config: Config,
    store: AuditStore,
    clock: Clock = utc_now,
    *,
    create_keys: bool = True,
    token: Token | None = None,
) -> AuditLog:
    """The log over ``store`` with the audit keys: in ``token`` when given (``keys.pkcs11``),
    else the data directory's files. Created on first use, unless ``create_keys`` is False
    (verifying under a new key would only report forgeries). Token keys are opened lazily, in
    the process that first uses them (a supervisor forks workers before any PKCS#11 call)."""
    checkpoint_key: Callable[[], CheckpointSigner]
    key = mac_key(config, create_keys=create_keys, token=token)
    if token is not None:
        checkpoint_key = functools.partial(load_token_checkpoint_key, config.data_dir, token)
    else:
        files_key = load_checkpoint_key(config.data_dir)  # created with the MAC key, by the first command
        checkpoint_key = lambda: files_key  # noqa: E731
    signer: list[CheckpointSigner] = []

    def loaded() -> CheckpointSigner:  # once per process, at the first checkpoint
        if not signer:
            signer.append(checkpoint_key())
        return signer[0]

    return AuditLog(store, key, clock, checkpoint_key=loaded, enabled=config.audit.enabled)
