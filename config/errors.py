"""The one error configuration loading raises."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value, key or file is wrong.

    The message starts with the full dotted key (``server.port: ...``) so an
    operator knows which line of the file or which environment variable to fix.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem
