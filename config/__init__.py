"""Configuration: the frozen model, its loader and its one error type.

The loader (and with it the YAML parser) is imported on first use of ``load_config`` or
``ENV_PREFIX``, not by ``import config``: every layer imports ``config`` (the clock, file
modes, client addresses), and the protocol core must load without yaml.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from config.errors import ConfigError
from config.model import (
    CAConfig,
    CertificateConfig,
    ChallengeConfig,
    Config,
    LogConfig,
    RevocationConfig,
    ScepConfig,
    ServerConfig,
    StoreConfig,
    TLSConfig,
)

if TYPE_CHECKING:
    from config.loader import ENV_PREFIX, load_config

_FROM_LOADER = frozenset({"ENV_PREFIX", "load_config"})


def __getattr__(name: str) -> object:
    """``load_config`` and ``ENV_PREFIX``, from ``config.loader`` when first asked for (PEP 562)."""
    if name in _FROM_LOADER:
        from config import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'config' has no attribute {name!r}")


__all__ = [
    "ENV_PREFIX",
    "CAConfig",
    "CertificateConfig",
    "ChallengeConfig",
    "Config",
    "ConfigError",
    "LogConfig",
    "RevocationConfig",
    "ScepConfig",
    "ServerConfig",
    "StoreConfig",
    "TLSConfig",
    "load_config",
]
