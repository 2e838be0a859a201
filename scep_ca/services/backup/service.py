"""Back up, verify and restore a CA: the transport-free service behind ``scep-ca backup`` and
``scep-ca restore`` (the CLI only parses arguments and prints).

A backup is one age-encrypted tar (``archive``): a consistent copy of the database taken while
the server runs (``store.snapshot``), every file of the data directory (CA and RA
certificates, key files or ``.pkcs11`` references, ``secret.key``, the audit keys,
``public_url``, retired CAs) and optionally the configuration file, with a manifest.

A restore writes only into an empty (or new) directory and an empty database, and keeps every
promise the lost host made: revoked stays revoked (the rows are in the copy; later ones come
back through ``audit replay``), serials stay unique (159-bit random serials under the
certificates table's primary key), and CRL numbers only grow: each issuer's number is raised
by ``crl_margin`` so the first CRL is above any number the lost host could have used after the
backup (RFC 5280 section 5.2.3: CRL numbers increase monotonically).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from audit.events import Event
from audit.factory import audit_log
from audit.keys import MAC_KEY_FILE, load_mac_key
from audit.service import AuditLog, Draft, os_actor
from audit.verify import Verifier
from config.clock import Clock
from config.model import Config
from scep_ca.pki.keys import KeyUnavailable
from scep_ca.pki.pkcs11_keys import URI_SUFFIX, KeyRef, Token
from scep_ca.services.backup import archive
from scep_ca.services.backup.crypt import BackupError, Opening, Sealing, open_sealed, write_sealed
from store import schema_postgres, schema_sqlite, snapshot
from store.base import Store
from store.postgres import PostgresStore
from store.sqlite import SQLiteStore

SQLITE_MEMBER = "database/scep-ca.sqlite3"
PG_MEMBER = "database/scep-ca.pgdump"
# A restored issuer's CRL number is raised by this much plus CRL_MARGIN_PER_SECOND for every
# second between the backup and the restore: the lost host would have had to issue more than
# 1,000 CRLs a second (it issues one per revocation change per worker, at most) to have used
# a number the restored CA uses again.
CRL_MARGIN_BASE = 1_000_000
CRL_MARGIN_PER_SECOND = 1_000
_SQLITE_FILES = ("scep-ca.sqlite3", "scep-ca.sqlite3-wal", "scep-ca.sqlite3-shm", "scep-ca.sqlite3-journal")
NAME_PREFIX = "scep-ca-backup-"


def program_version() -> str:
    try:
        return importlib.metadata.version("scep-ca")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def crl_margin(made: datetime, now: datetime) -> int:
    elapsed = max(0, int((now - made).total_seconds()))
    return CRL_MARGIN_BASE + CRL_MARGIN_PER_SECOND * elapsed


@dataclasses.dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class RestoreResult:
    manifest: dict[str, Any]
    files: list[str]
    missing_keys: list[str]  # .pkcs11 references whose key the token does not hold
    unchecked_keys: list[str]  # .pkcs11 references with no token configured to check them in
    crl_margin: int


def _data_members(data_dir: Path, skip: Path) -> list[archive.Member]:
    """Every file of the data directory but the live database and ``skip`` (the directory the
    backup goes to, when an operator keeps backups inside the data directory)."""
    members = []
    skip = skip.resolve()
    inside = skip.is_relative_to(data_dir.resolve()) and skip != data_dir.resolve()
    for path in sorted(data_dir.rglob("*")):
        relative = path.relative_to(data_dir)
        if not path.is_file() or path.is_symlink() or (len(relative.parts) == 1 and path.name in _SQLITE_FILES):
            continue
        if inside and path.resolve().is_relative_to(skip):
            continue
        members.append(archive.Member(f"files/{relative.as_posix()}", path.stat().st_mode & 0o777, path.read_bytes()))
    return members


def _certificate_fingerprints(members: Sequence[archive.Member]) -> dict[str, str]:
    """SHA-256 of every certificate among the files (the CA's, the RAs', retired CAs')."""
    found = {}
    for member in members:
        if member.data is None or b"-----BEGIN CERTIFICATE-----" not in member.data:
            continue
        try:
            cert = x509.load_pem_x509_certificate(member.data)
        except ValueError:
            continue
        found[member.name.removeprefix("files/")] = cert.fingerprint(hashes.SHA256()).hex()
    return found


async def create_backup(
    config: Config,
    out: Path,
    sealing: Sealing,
    clock: Clock,
    *,
    config_file: Path | None = None,
) -> BackupResult:
    """Write a backup to the new file ``out`` (refused if it exists) while the server may run."""
    if out.exists():
        raise BackupError(f"{out} exists; backups are never overwritten")
    if not out.parent.is_dir():
        raise BackupError(f"{out.parent} is not a directory")
    if out.parent.resolve() == config.data_dir.resolve():
        raise BackupError("write backups outside the data directory (or into a directory of their own in it)")
    made = clock()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".scep-ca-backup-") as work:
        if config.store.dsn is not None:
            db_member, backend = PG_MEMBER, "postgresql"
            db_path = Path(work) / "db.pgdump"
            facts = await snapshot.pg_dump(config.store.dsn, db_path)
        else:
            db_member, backend = SQLITE_MEMBER, "sqlite"
            if not config.sqlite_path.exists():
                raise BackupError(f"{config.sqlite_path}: no database to back up")
            db_path = Path(work) / "db.sqlite3"
            facts = snapshot.sqlite_copy(config.sqlite_path, db_path)
        members = [archive.Member(db_member, 0o600, path=db_path), *_data_members(config.data_dir, out.parent)]
        if config_file is not None:
            members.append(archive.Member(f"config/{config_file.name}", 0o600, config_file.read_bytes()))
        manifest: dict[str, Any] = {
            "format": archive.FORMAT,
            "format_version": archive.FORMAT_VERSION,
            "id": uuid.uuid4().hex,
            "scep_ca_version": program_version(),
            "created_at": made.isoformat(),
            "backend": backend,
            "encrypted": not sealing.plaintext,
            "database": facts.as_json(),
            "certificates": _certificate_fingerprints(members),
            "members": {m.name: archive.describe(m) for m in members},
        }
        partial = Path(work) / "backup.partial"
        with partial.open("xb") as f:
            write_sealed(sealing, f, lambda stream: archive.write_archive(stream, manifest, members))
            f.flush()
            os.fsync(f.fileno())
        partial.chmod(0o600)
        try:
            os.link(partial, out)  # fails rather than replace a file that appeared meanwhile
        except FileExistsError as exc:
            raise BackupError(f"{out} exists; backups are never overwritten") from exc
    return BackupResult(out, manifest)


def rotate(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups in ``directory`` (names sort by time)."""
    ours = sorted(p for p in directory.iterdir() if p.name.startswith(NAME_PREFIX) and p.is_file())
    removed = ours[: max(len(ours) - keep, 0)]
    for path in removed:
        path.unlink()
    return removed


def timed_name(made: datetime, encrypted: bool) -> str:
    return f"{NAME_PREFIX}{made:%Y%m%dT%H%M%S%fZ}.tar{'.age' if encrypted else ''}"


def _schema_version(backend: str) -> int:
    return schema_postgres.LATEST_VERSION if backend == "postgresql" else schema_sqlite.MIGRATIONS[-1].version


def _unpack(path: Path, opening: Opening, work: Path) -> tuple[dict[str, Any], bool]:
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    plain = work / "archive.tar"
    with plain.open("xb") as out:
        encrypted = open_sealed(opening, path, out)
    unpacked = work / "unpacked"
    unpacked.mkdir(mode=0o700)
    version = program_version()
    # The schema check needs the backend, which the manifest names: check the larger bound
    # here and the backend's own after.
    manifest = archive.unpack(plain, unpacked, max(_schema_version("sqlite"), _schema_version("postgresql")), version)
    archive.check_manifest(manifest, _schema_version(str(manifest.get("backend"))), version)
    plain.unlink()
    return manifest, encrypted


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    manifest: dict[str, Any]
    encrypted: bool
    audit_records: int | None  # None: the MAC key is in a token, the chains were not checked


async def verify_backup(path: Path, opening: Opening, clock: Clock) -> VerifyResult:
    """Decrypt, check every member's hash, open the database copy and verify its audit chains
    under the backup's own audit key. Writes only into a private temporary directory (the
    backup's own directory may be read-only offsite storage), removed at the end."""
    with tempfile.TemporaryDirectory(prefix="scep-ca-verify-") as work_text:
        work = Path(work_text)
        manifest, encrypted = _unpack(path, opening, work)
        unpacked = work / "unpacked"
        data = work / "data"
        data.mkdir(mode=0o700)
        archive.place_files(unpacked, manifest, "files", data)
        if not (data / MAC_KEY_FILE).exists():
            # keys.pkcs11: the MAC key never leaves the token; restore, then `audit verify` there.
            return VerifyResult(manifest, encrypted, None)
        key = load_mac_key(data, create=False)
        if manifest.get("backend") == "postgresql":
            verifier = Verifier(key)
            for record in snapshot.pg_dump_audit_records(unpacked / "database" / "scep-ca.pgdump"):
                verifier.add(record)
            report = verifier.report()
        else:
            db = unpacked / "database" / "scep-ca.sqlite3"
            if snapshot.sqlite_facts(db).as_json() != manifest.get("database"):
                raise BackupError("the database copy does not match the manifest's counts")
            shutil.move(db, data / "scep-ca.sqlite3")
            store = SQLiteStore(data / "scep-ca.sqlite3")
            await store.open()
            try:
                report = await AuditLog(store, key, clock).verify()
            finally:
                await store.close()
        if not report.ok:
            raise BackupError(f"the audit log in the backup does not verify: {report.problems[0]}")
        return VerifyResult(manifest, encrypted, report.records)


def _check_target(data_dir: Path) -> None:
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BackupError(f"{data_dir} is not empty: restore writes only into a new or empty directory")
    if not data_dir.parent.is_dir():
        raise BackupError(f"{data_dir.parent} is not a directory")


async def restore(
    path: Path,
    opening: Opening,
    config: Config,
    clock: Clock,
    *,
    token: Token | None = None,
) -> RestoreResult:
    """Restore into ``config.data_dir`` (and ``config.store.dsn`` for a PostgreSQL backup).

    Checks everything it can before writing: the directory is empty or new, the database holds
    no scep-ca table, the file decrypts and every hash matches. The files are assembled in a
    private sibling directory and renamed into place only once the database is in."""
    data_dir = config.data_dir
    _check_target(data_dir)
    dsn = config.store.dsn
    if dsn is not None and (tables := await snapshot.pg_has_tables(dsn)):
        raise BackupError(f"the database already holds scep-ca tables ({', '.join(tables)}): give an empty one")
    with tempfile.TemporaryDirectory(dir=data_dir.parent, prefix=f".{data_dir.name}.restoring-") as work_text:
        work = Path(work_text)
        manifest, _ = _unpack(path, opening, work)
        backend = manifest.get("backend")
        if backend == "postgresql" and dsn is None:
            raise BackupError("a PostgreSQL backup restores into a database: give --database-url")
        if backend == "sqlite" and dsn is not None:
            raise BackupError("a SQLite backup restores into the data directory: leave out --database-url")
        unpacked = work / "unpacked"
        staged = work / "data"
        staged.mkdir(mode=0o700)
        files = archive.place_files(unpacked, manifest, "files", staged)
        archive.place_files(unpacked, manifest, "config", staged / "config-from-backup")
        made = datetime.fromisoformat(str(manifest["created_at"]))
        margin = crl_margin(made, clock())
        staged_config = dataclasses.replace(config, data_dir=staged)
        store: Store
        if dsn is None:
            db = staged_config.sqlite_path
            shutil.move(unpacked / "database" / "scep-ca.sqlite3", db)
            db.chmod(0o600)
            snapshot.sqlite_raise_crl_numbers(db, margin)
            store = SQLiteStore(db)
        else:
            await snapshot.pg_restore(dsn, unpacked / "database" / "scep-ca.pgdump")
            await snapshot.pg_raise_crl_numbers(dsn, margin)
            store = PostgresStore(dsn, 1, 2)
        missing, unchecked = _check_token_keys(staged, files, token)
        await store.open()
        try:
            await audit_log(staged_config, store, clock, create_keys=False, token=token).append(
                Draft(
                    Event.BACKUP_RESTORED,
                    f"backup/{manifest['id']}",
                    {
                        "backup": manifest["id"],
                        "made_at": manifest["created_at"],
                        "crl_margin": margin,
                        "restored_into": str(data_dir),
                    },
                    actor=os_actor(),
                )
            )
        finally:
            await store.close()
        if data_dir.exists():
            data_dir.rmdir()  # empty, checked above
        staged.rename(data_dir)
    return RestoreResult(manifest, files, missing, unchecked, margin)


def _check_token_keys(staged: Path, files: Sequence[str], token: Token | None) -> tuple[list[str], list[str]]:
    refs = [name for name in files if name.endswith(URI_SUFFIX)]
    if token is None:
        return [], refs
    missing = []
    for name in refs:
        ref = KeyRef.parse(staged.joinpath(name).read_text(encoding="utf-8"))
        try:
            _find_key(token, ref.key_id)
        except KeyUnavailable:
            missing.append(f"{name} ({ref.label}, id {ref.key_id.hex()})")
    return missing, []


def _find_key(token: Token, key_id: bytes) -> None:
    def find(session: Any) -> None:
        token.private_key(session, key_id)

    token.run(find)


def after_restore_notes(result: RestoreResult) -> list[str]:
    """What a restore cannot know, and how the operator recovers it."""
    made = result.manifest["created_at"]
    return [
        f"restored backup {result.manifest['id']} made at {made}",
        f"not in it: anything the old host did after {made} (certificates issued, revoked or renewed).",
        "recover them from the old host's audit events shipped off the host: collect its `audit export`"
        " lines made after the backup into one file and run `scep-ca audit replay FILE` before serving;",
        "events whose MACs do not verify under the restored audit key are refused.",
        f"each issuer's CRL number was raised by {result.crl_margin} so new CRLs sort after the old host's.",
    ]


def next_backup_path(directory: Path, made: datetime, encrypted: bool) -> Path:
    if not directory.is_dir():
        raise BackupError(f"{directory} is not a directory")
    return directory / timed_name(made, encrypted)
