"""The operator CLI: ``scep-ca``."""

from scep_ca.cli.main import main

__all__ = ["main"]
