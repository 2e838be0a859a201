"""File modes in the data directory: explicit whatever the umask, refused when open to others.

A local user who can write to the data directory or a key file can swap in their own RA
(and then decrypt requests and sign CertReps) or CA; one who can read a key has it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from challenge.secret_key import load_or_create_secret_key
from scep_ca.cli.main import main
from scep_ca.pki.ca import load_ca
from store.sqlite import SQLiteStore


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cli(data_dir: Path, *args: str) -> None:
    assert main(["--data-dir", str(data_dir), *args]) == 0


def _database_modes(data: Path) -> dict[str, int]:
    """Modes of the database and its -wal and -shm, which exist while a connection is open."""

    async def read() -> dict[str, int]:
        store = SQLiteStore(data / "scep-ca.sqlite3")
        await store.open()
        try:
            await store.count_certificates()
            return {p.name: _mode(p) for p in data.glob("scep-ca.sqlite3*")}
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.mark.parametrize("umask", [0o000, 0o277], indirect=True, ids=["umask000", "umask277"])
def test_every_file_gets_its_mode_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    data = tmp_path / "new" / "data"  # a missing parent too
    _cli(data, "init")
    _cli(data, "integration", "create", "modes")  # secret.key and the database
    _cli(data, "ra", "create", "--pair")  # retired/<time>/ and a new RA pair
    _cli(data, "ca", "rollover")  # next/
    _cli(data, "ca", "activate-next")  # previous/<ca id>/
    dirs = [tmp_path / "new", data, data / "retired", data / "previous"]
    dirs += [*(data / "retired").iterdir(), *(data / "previous").iterdir()]
    keys = [*data.rglob("*.key")]
    certs = [*data.rglob("*.pem"), *data.rglob("*.pub")]
    # The NDES pair (ra, ra-enc) by default: current, retired and previous sets of three certificates
    # less the retired CA; keys likewise, plus secret.key and the audit keys (audit.key,
    # audit-checkpoint.key, its public half audit-checkpoint.pub).
    assert len(dirs) == 6 and len(certs) == 9 and len(keys) == 11, (dirs, certs, keys)
    assert {str(p): _mode(p) for p in dirs} == {str(p): 0o700 for p in dirs}
    assert {str(p): _mode(p) for p in keys} == {str(p): 0o600 for p in keys}
    assert {str(p): _mode(p) for p in certs} == {str(p): 0o644 for p in certs}
    names = ("scep-ca.sqlite3", "scep-ca.sqlite3-wal", "scep-ca.sqlite3-shm")
    assert _database_modes(data) == dict.fromkeys(names, 0o600)


def test_directories_and_certificates_of_earlier_versions_are_accepted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _cli(data, "init")
    load_or_create_secret_key(data)
    data.chmod(0o755)
    for name in ("ca.pem", "ra.pem"):
        (data / name).chmod(0o644)
    (data / "ca.key").chmod(0o400)
    assert load_ca(data, None).cert is not None
    assert len(load_or_create_secret_key(data)) == 32


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("target", "mode", "message"),
    [
        ("ra.key", 0o666, "key file {path} is accessible by group or others (mode 0666); fix: chmod 600 {path}"),
        ("ca.key", 0o640, "key file {path} is accessible by group or others (mode 0640); fix: chmod 600 {path}"),
        ("secret.key", 0o604, "key file {path} is accessible by group or others (mode 0604); fix: chmod 600 {path}"),
        ("ra.pem", 0o666, "file {path} is writable by group or others (mode 0666); fix: chmod 644 {path}"),
        (
            "scep-ca.sqlite3",
            0o664,
            "file {path} is writable by group or others (mode 0664); fix: chmod 600 {path}",
        ),
        (".", 0o777, "directory {path} is writable by group or others (mode 0777); fix: chmod 700 {path}"),
        (".", 0o770, "directory {path} is writable by group or others (mode 0770); fix: chmod 700 {path}"),
    ],
    ids=["ra.key-0666", "ca.key-0640", "secret.key-0604", "ra.pem-0666", "db-0664", "dir-0777", "dir-0770"],
)
def test_serve_refuses_files_open_to_others(tmp_path: Path, target: str, mode: int, message: str) -> None:
    data = tmp_path / "data"
    _cli(data, "init")
    _cli(data, "integration", "create", "x")  # secret.key and the database exist
    path = data if target == "." else data / target
    path.chmod(mode)
    scep_ca = Path(sys.executable).with_name("scep-ca")
    proc = subprocess.run(
        [str(scep_ca), "--data-dir", str(data), "serve", "--host", "127.0.0.1", "--port", str(_free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[-1] == "scep-ca: " + message.format(path=path), proc.stderr
    assert "Traceback" not in proc.stderr
    assert "listening" not in proc.stderr
