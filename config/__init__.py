"""Configuration: the frozen model, its loader and its one error type."""

from config.errors import ConfigError
from config.loader import ENV_PREFIX, load_config
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
