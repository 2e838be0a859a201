"""The backup archive: a tar of the manifest, the database copy and the data directory's files.

``manifest.json`` comes first and names every other member with its SHA-256, size and file
mode; a reader refuses a member the manifest does not name, one whose hash differs, a path
that leaves the archive, and a manifest from a newer format or schema than this program knows.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from scep_ca.services.backup.crypt import BackupError

FORMAT = "scep-ca-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Member:
    """One file of the archive: where it goes in the tar and where its bytes come from."""

    name: str  # e.g. files/ca.pem, database/scep-ca.sqlite3
    mode: int
    data: bytes | None = None  # small files, read once so hash and archive agree
    path: Path | None = None  # the database copy, which nothing changes any more


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe(member: Member) -> dict[str, Any]:
    if member.data is not None:
        return {"sha256": hashlib.sha256(member.data).hexdigest(), "size": len(member.data), "mode": member.mode}
    assert member.path is not None
    return {"sha256": sha256_file(member.path), "size": member.path.stat().st_size, "mode": member.mode}


def write_archive(out: IO[bytes], manifest: Mapping[str, Any], members: list[Member]) -> None:
    """The tar stream (no seeking: it may go straight into the encryption)."""
    with tarfile.open(fileobj=out, mode="w|") as tar:
        text = json.dumps(manifest, sort_keys=True, indent=1).encode("utf-8")
        _add(tar, MANIFEST, 0o600, io.BytesIO(text), len(text))
        for member in members:
            if member.data is not None:
                _add(tar, member.name, member.mode, io.BytesIO(member.data), len(member.data))
            else:
                assert member.path is not None
                with member.path.open("rb") as f:
                    _add(tar, member.name, member.mode, f, member.path.stat().st_size)


def _add(tar: tarfile.TarFile, name: str, mode: int, data: IO[bytes], size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, mode
    tar.addfile(info, data)


def check_manifest(manifest: Mapping[str, Any], schema_version: int, program_version: str) -> None:
    """Refuse a manifest this program cannot restore faithfully."""
    if manifest.get("format") != FORMAT:
        raise BackupError("not a scep-ca backup (no scep-ca manifest)")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise BackupError(
            f"made by a newer scep-ca ({manifest.get('scep_ca_version')}, backup format "
            f"{manifest.get('format_version')}); this is {program_version}: upgrade scep-ca first"
        )
    made_schema = int(manifest.get("database", {}).get("schema_version", 0))
    if made_schema > schema_version:
        raise BackupError(
            f"made by a newer scep-ca ({manifest.get('scep_ca_version')}, database schema {made_schema}); "
            f"this is {program_version} (schema {schema_version}): upgrade scep-ca first"
        )


def unpack(archive: Path, dest: Path, schema_version: int, program_version: str) -> dict[str, Any]:
    """Extract ``archive`` under ``dest`` checking every member against the manifest; the manifest."""
    try:
        with tarfile.open(archive, mode="r:") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                raise BackupError("not a scep-ca backup (no manifest first)")
            raw = tar.extractfile(first)
            assert raw is not None
            try:
                manifest = json.loads(raw.read())
            except (ValueError, UnicodeDecodeError) as exc:
                raise BackupError("the manifest is not JSON") from exc
            if not isinstance(manifest, dict):
                raise BackupError("the manifest is not a JSON object")
            check_manifest(manifest, schema_version, program_version)
            expected: dict[str, Any] = dict(manifest.get("members", {}))
            seen: set[str] = set()
            while (info := tar.next()) is not None:
                _extract(tar, info, expected, dest)
                seen.add(info.name)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BackupError(f"corrupt or truncated archive ({type(exc).__name__}: {exc})") from exc
    missing = sorted(set(expected) - seen)
    if missing:
        raise BackupError(f"corrupt or truncated archive: {missing[0]} is missing")
    return manifest


def _extract(tar: tarfile.TarFile, info: tarfile.TarInfo, expected: Mapping[str, Any], dest: Path) -> None:
    name = PurePosixPath(info.name)
    if info.name not in expected or name.is_absolute() or ".." in name.parts or not info.isfile():
        raise BackupError(f"the archive holds {info.name!r}, which its manifest does not name")
    target = dest.joinpath(*name.parts)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    source = tar.extractfile(info)
    assert source is not None
    digest = hashlib.sha256()
    with target.open("xb") as out:
        target.chmod(0o600)
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != expected[info.name].get("sha256"):
        raise BackupError(f"{info.name}: its SHA-256 differs from the manifest's (the backup is corrupt)")


def place_files(unpacked: Path, manifest: Mapping[str, Any], prefix: str, dest: Path) -> list[str]:
    """Move the members under ``prefix/`` into ``dest`` with the modes the manifest records."""
    placed = []
    for name, entry in sorted(manifest.get("members", {}).items()):
        if not name.startswith(prefix + "/"):
            continue
        relative = PurePosixPath(name).relative_to(prefix)
        target = dest.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.move(unpacked.joinpath(*PurePosixPath(name).parts), target)
        # serve refuses key files that group or others can read (config.files): never looser.
        target.chmod(int(entry.get("mode", 0o600)) & 0o644)
        placed.append(str(relative))
    return placed
