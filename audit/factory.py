"""Build the audit log a process uses from its configuration."""

from __future__ import annotations

from audit.keys import load_checkpoint_key, load_mac_key
from audit.service import AuditLog
from config.clock import Clock, utc_now
from config.model import Config
from store.base import AuditStore


def audit_log(config: Config, store: AuditStore, clock: Clock = utc_now, *, create_keys: bool = True) -> AuditLog:
    """The log over ``store`` with the data directory's audit keys (created on first use,
    unless ``create_keys`` is False: verifying under a new key would only report forgeries)."""
    return AuditLog(
        store,
        load_mac_key(config.data_dir, create=create_keys),
        clock,
        checkpoint_key=load_checkpoint_key(config.data_dir),
        enabled=config.audit.enabled,
    )
