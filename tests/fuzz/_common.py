"""Shared plumbing of the atheris harnesses (see ``scripts/fuzz.sh``).

A harness is a script: ``python tests/fuzz/fuzz_x.py [libFuzzer flags] CORPUS_DIR``. Its
seeds are written into an empty corpus directory first, so every run starts from real
inputs (the vectors under ``tests/vectors/``) and mutates from there. An exception that
is not one of the module's own error types escapes ``TestOneInput``: atheris reports it
with the input and exits non-zero, and ``scripts/fuzz.sh`` fails.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "tests" / "vectors"


def vector_files(pattern: str) -> list[Path]:
    return sorted(VECTORS.glob(pattern))


def _write_seeds(corpus: Path, seeds: Iterable[bytes]) -> None:
    if any(corpus.iterdir()):
        return
    for seed in seeds:
        (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


def run(test_one_input: Callable[[bytes], None], seeds: Callable[[], Iterable[bytes]]) -> None:
    """Seed the corpus directory (the first non-flag argument), then fuzz until libFuzzer stops."""
    dirs = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
    if dirs and dirs[0].is_dir():
        _write_seeds(dirs[0], seeds())
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
