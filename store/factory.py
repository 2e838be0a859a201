"""Pick the store backend that the configuration names."""

from __future__ import annotations

from config.files import make_private_dir
from config.model import Config
from store.base import Store
from store.postgres import PostgresStore
from store.sqlite import SQLiteStore


def open_store(config: Config) -> Store:
    """Build the configured store; the caller then awaits ``store.open()``.

    A DSN selects PostgreSQL (for several processes or hosts). No DSN: SQLite in
    ``config.data_dir``, which is created (mode 0700) if missing and refused if group or
    others may write to it (``config.files``).
    """
    if config.store.dsn is not None:
        return PostgresStore(config.store.dsn, config.store.pool_min, config.store.pool_max)
    make_private_dir(config.data_dir)
    return SQLiteStore(config.sqlite_path)
