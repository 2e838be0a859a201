"""Fixtures shared by every test layer."""

from __future__ import annotations

from pathlib import Path

import pytest

VECTORS = Path(__file__).parent / "vectors"


@pytest.fixture
def vectors_dir() -> Path:
    return VECTORS
