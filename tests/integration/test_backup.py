"""``scep-ca backup`` / ``backup verify`` / ``restore`` in-process on the real SQLite store, with
keys made and files opened by Debian's real ``age`` CLI."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from scep_ca.cli.main import main
from tests.store.conftest import sql_sync, temporary_database_sync


class Cli:
    def __init__(self, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.data_dir = data_dir
        self.capsys = capsys

    def __call__(self, *args: str, data_dir: Path | None = None) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["--data-dir", str(data_dir or self.data_dir), *args])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    runner = Cli(tmp_path / "data", capsys)
    assert runner("init")[0] == 0
    code, _, err = runner("integration", "create", "Fleet")
    assert code == 0, err
    return runner


@pytest.fixture
def identity(tmp_path: Path) -> tuple[Path, str]:
    """An X25519 identity made by Debian's age-keygen, and its recipient."""
    assert shutil.which("age-keygen"), "Debian's age package is required"
    path = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True)
    return path, recipient.stdout.strip()


def _tree(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _backup(cli: Cli, tmp_path: Path, recipient: str) -> Path:
    out = tmp_path / "b.tar.age"
    code, text, err = cli("backup", "--out", str(out), "--recipient", recipient)
    assert code == 0, err
    assert "written to" in text
    return out


def test_backup_opens_with_the_age_cli_and_holds_every_file(
    cli: Cli, tmp_path: Path, identity: tuple[Path, str]
) -> None:
    key, recipient = identity
    out = _backup(cli, tmp_path, recipient)
    assert out.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert b"PRIVATE KEY" not in out.read_bytes()
    plain = tmp_path / "b.tar"
    subprocess.run(["age", "-d", "-i", str(key), "-o", str(plain), str(out)], check=True)
    with tarfile.open(plain) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert names[0] == "manifest.json"
    for name in ("ca.pem", "ca.key", "ra.key", "secret.key", "audit.key", "audit-checkpoint.key"):
        assert f"files/{name}" in names, name
        assert manifest["members"][f"files/{name}"]["mode"] == 0o600 or name == "ca.pem"
    assert "database/scep-ca.sqlite3" in names
    assert manifest["database"]["integrations"] == 1
    assert manifest["database"]["audit_heads"], "the audit chain heads are in the manifest"
    assert manifest["certificates"]["ca.pem"]


def test_verify_then_restore_onto_a_new_directory(cli: Cli, tmp_path: Path, identity: tuple[Path, str]) -> None:
    key, recipient = identity
    out = _backup(cli, tmp_path, recipient)
    code, text, err = cli("backup", "verify", str(out), "--identity", str(key))
    assert code == 0, err
    assert text.startswith("OK: backup") and "audit records verify" in text
    target = tmp_path / "restored"
    code, text, err = cli("restore", str(out), "--identity", str(key), data_dir=target)
    assert code == 0, err
    assert "audit replay" in text and "not in it" in text
    for name in ("ca.key", "secret.key", "audit.key", "scep-ca.sqlite3"):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600, name
    assert (target / "ca.pem").read_bytes() == (cli.data_dir / "ca.pem").read_bytes()
    code, text, err = cli("audit", "verify", data_dir=target)
    assert code == 0, err + text
    listed = json.loads(cli("audit", "list", "--event", "backup.restored", "--json", data_dir=target)[1])
    assert len(listed) == 1 and listed[0]["details"]["backup"]
    code, text, _ = cli("integration", "list", data_dir=target)
    assert "Fleet" in text


def test_restore_raises_crl_numbers_above_the_old_hosts(cli: Cli, tmp_path: Path, identity: tuple[Path, str]) -> None:
    key, recipient = identity
    with sqlite3.connect(cli.data_dir / "scep-ca.sqlite3") as conn:
        conn.execute("INSERT INTO crl_numbers (issuer_fingerprint, number) VALUES ('ab', 41)")
    out = _backup(cli, tmp_path, recipient)
    target = tmp_path / "restored"
    assert cli("restore", str(out), "--identity", str(key), data_dir=target)[0] == 0
    with sqlite3.connect(target / "scep-ca.sqlite3") as conn:
        (number,) = conn.execute("SELECT number FROM crl_numbers WHERE issuer_fingerprint = 'ab'").fetchone()
    assert number >= 41 + 1_000_000


def test_passphrase_and_plaintext(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_PASS", "correct horse battery staple")
    out = tmp_path / "p.tar.age"
    assert cli("backup", "--out", str(out), "--passphrase-env", "BACKUP_PASS")[0] == 0
    assert cli("backup", "verify", str(out), "--passphrase-env", "BACKUP_PASS")[0] == 0
    monkeypatch.setenv("BACKUP_PASS", "wrong")
    code, _, err = cli("backup", "verify", str(out), "--passphrase-env", "BACKUP_PASS")
    assert code == 1 and "wrong identity or passphrase" in err and len(err.strip().splitlines()) == 1
    plain = tmp_path / "p.tar"
    code, text, _ = cli("backup", "--out", str(plain), "--insecure-plaintext")
    assert code == 0 and "NOT encrypted" in text
    assert tarfile.is_tarfile(plain)
    code, _, err = cli("backup", "--out", str(tmp_path / "x.tar"))
    assert code == 1 and "exactly one" in err and not (tmp_path / "x.tar").exists()


def test_rotation_keeps_the_newest(cli: Cli, tmp_path: Path, identity: tuple[Path, str]) -> None:
    _, recipient = identity
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    (shelf / "unrelated.txt").write_text("kept")
    for _ in range(4):
        assert cli("backup", "--dir", str(shelf), "--keep", "2", "--recipient", recipient)[0] == 0
    kept = sorted(p.name for p in shelf.iterdir())
    assert len(kept) == 3 and "unrelated.txt" in kept
    assert all(n.endswith(".tar.age") for n in kept if n != "unrelated.txt")


# -- refusals: one line, non-zero, nothing written ---------------------------------------


def _refused(cli: Cli, target: Path, *args: str) -> str:
    before = _tree(target)
    code, out, err = cli("restore", *args, data_dir=target)
    assert code == 1, out + err
    assert len(err.strip().splitlines()) == 1, err
    assert _tree(target) == before
    siblings = [p.name for p in target.parent.iterdir() if ".restoring-" in p.name]
    assert siblings == [], "no staging directory left behind"
    return err


def test_restore_refuses_a_non_empty_directory(cli: Cli, tmp_path: Path, identity: tuple[Path, str]) -> None:
    key, recipient = identity
    out = _backup(cli, tmp_path, recipient)
    target = tmp_path / "busy"
    target.mkdir()
    (target / "something").write_text("mine")
    assert "is not empty" in _refused(cli, target, str(out), "--identity", str(key))
    # The live directory itself, too.
    assert "is not empty" in _refused(cli, cli.data_dir, str(out), "--identity", str(key))


def test_restore_refuses_bad_files(cli: Cli, tmp_path: Path, identity: tuple[Path, str]) -> None:
    key, recipient = identity
    out = _backup(cli, tmp_path, recipient)
    target = tmp_path / "new"
    truncated = tmp_path / "truncated.age"
    truncated.write_bytes(out.read_bytes()[: len(out.read_bytes()) // 2])
    assert "corrupt or truncated" in _refused(cli, target, str(truncated), "--identity", str(key))
    flipped = bytearray(out.read_bytes())
    flipped[-100] ^= 0x01
    corrupt = tmp_path / "corrupt.age"
    corrupt.write_bytes(bytes(flipped))
    assert "corrupt or truncated" in _refused(cli, target, str(corrupt), "--identity", str(key))
    other = tmp_path / "other.txt"
    subprocess.run(["age-keygen", "-o", str(other)], check=True, capture_output=True)
    assert "wrong identity" in _refused(cli, target, str(out), "--identity", str(other))
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(4096))
    assert "corrupt" in _refused(cli, target, str(junk), "--identity", str(key))
    assert "no such file" in _refused(cli, target, str(tmp_path / "absent"), "--identity", str(key))


def test_restore_refuses_a_newer_version(cli: Cli, tmp_path: Path) -> None:
    plain = tmp_path / "p.tar"
    assert cli("backup", "--out", str(plain), "--insecure-plaintext")[0] == 0
    with tarfile.open(plain) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    for field, value in (("format_version", 99), ("database", None)):
        manifest = json.loads(members[0][1])
        if field == "database":
            manifest["database"]["schema_version"] = 999
        else:
            manifest[field] = value
        newer = tmp_path / f"newer-{field}.tar"
        with tarfile.open(newer, "w") as tar:
            import io

            text = json.dumps(manifest).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
            for member, data in members[1:]:
                tar.addfile(member, io.BytesIO(data))
        err = _refused(cli, tmp_path / "new", str(newer))
        assert "newer scep-ca" in err and "upgrade" in err


# -- audit replay ------------------------------------------------------------------------


def _after_backup_export(cli: Cli, tmp_path: Path, identity: tuple[Path, str]) -> tuple[Path, list[str]]:
    """A restored directory, and the old host's export with events made after the backup."""
    key, recipient = identity
    out = _backup(cli, tmp_path, recipient)
    assert cli("integration", "create", "Later")[0] == 0
    export = tmp_path / "events.jsonl"
    assert cli("audit", "export", "--out", str(export))[0] == 0
    target = tmp_path / "restored"
    assert cli("restore", str(out), "--identity", str(key), data_dir=target)[0] == 0
    return target, export.read_text().splitlines()


def _audit_rows(data_dir: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(data_dir / "scep-ca.sqlite3") as conn:
        return conn.execute("SELECT writer, seq, mac FROM audit_events ORDER BY writer, seq").fetchall()


def test_replay_refuses_a_forged_event(cli: Cli, tmp_path: Path, identity: tuple[Path, str]) -> None:
    target, lines = _after_backup_export(cli, tmp_path, identity)
    before = _audit_rows(target)
    created = next(i for i, line in enumerate(lines) if '"Later"' in line)
    forged = list(lines)
    forged[created] = forged[created].replace('"Later"', '"Forged"')
    (tmp_path / "forged.jsonl").write_text("\n".join(forged) + "\n")
    code, _, err = cli("audit", "replay", str(tmp_path / "forged.jsonl"), data_dir=target)
    assert code == 1 and "does not verify under the restored audit key" in err, err
    assert _audit_rows(target) == before
    (tmp_path / "junk.jsonl").write_text("{not json\n")
    code, _, err = cli("audit", "replay", str(tmp_path / "junk.jsonl"), data_dir=target)
    assert code == 1 and "line 1: not an exported audit event" in err
    assert _audit_rows(target) == before


def test_replay_writes_the_events_back_and_is_repeatable(cli: Cli, tmp_path: Path, identity: tuple[Path, str]) -> None:
    target, lines = _after_backup_export(cli, tmp_path, identity)
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    code, text, err = cli("audit", "replay", str(tmp_path / "events.jsonl"), data_dir=target)
    assert code == 0, err
    once = _audit_rows(target)
    code, text, err = cli("audit", "replay", str(tmp_path / "events.jsonl"), data_dir=target)
    assert code == 0 and "replayed 0 events" in text, text
    # Only the second replay's own audit.replayed record is new.
    assert len(_audit_rows(target)) == len(once) + 1
    code, text, err = cli("audit", "verify", data_dir=target)
    assert code == 0, err


# -- PostgreSQL ------------------------------------------------------------------------


@pytest.fixture
def pg_database() -> Iterator[str]:
    with temporary_database_sync() as dsn:
        yield dsn


def _public_tables(dsn: str) -> list[str]:
    rows = sql_sync("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'", dsn)
    return sorted(r["table_name"] for r in rows)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("existing", "refusal"),
    [
        ([], "a SQLite backup restores into the data directory: leave out --database-url"),
        (["certificates"], "already holds scep-ca tables (certificates)"),
    ],
)
def test_restore_refuses_the_database(
    cli: Cli, tmp_path: Path, identity: tuple[Path, str], pg_database: str, existing: list[str], refusal: str
) -> None:
    key, recipient = identity
    out = _backup(cli, tmp_path, recipient)
    for table in existing:
        sql_sync(f"CREATE TABLE {table} (serial text)", pg_database)
    target = tmp_path / "new"
    err = _refused(cli, target, str(out), "--identity", str(key), "--database-url", pg_database)
    assert refusal in err
    assert not target.exists()
    assert _public_tables(pg_database) == existing


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_verify_checks_the_audit_chains_in_the_copy(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], pg_database: str
) -> None:
    config = tmp_path / "scep-ca.yaml"
    config.write_text(f"store:\n  dsn: {pg_database}\n" if backend == "postgresql" else "{}\n")
    runner = Cli(tmp_path / "data", capsys)

    def run(*args: str) -> tuple[int, str, str]:
        return runner("--config", str(config), *args)

    assert run("init")[0] == 0
    assert run("integration", "create", "Fleet")[0] == 0
    good = tmp_path / "good.tar"
    assert run("backup", "--out", str(good), "--insecure-plaintext")[0] == 0
    code, text, err = run("backup", "verify", str(good))
    assert code == 0 and "audit records verify" in text, err
    tamper = "UPDATE audit_events SET details = '{\"name\": \"Forged\"}' WHERE event = 'integration.created'"
    if backend == "postgresql":
        sql_sync(tamper, pg_database)
    else:
        with sqlite3.connect(tmp_path / "data" / "scep-ca.sqlite3") as conn:
            conn.execute(tamper)
    bad = tmp_path / "bad.tar"
    assert run("backup", "--out", str(bad), "--insecure-plaintext")[0] == 0
    code, _, err = run("backup", "verify", str(bad))
    assert code == 1 and "the audit log in the backup does not verify" in err and "(integration.created)" in err, err
    assert len(err.strip().splitlines()) == 1


def test_include_config(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "scep-ca.yaml"
    config.write_text("certificate:\n  validity_days: 90\n")
    out = tmp_path / "c.tar"
    code, _, err = cli("--config", str(config), "backup", "--out", str(out), "--insecure-plaintext", "--include-config")
    assert code == 0, err
    target = tmp_path / "restored"
    assert cli("restore", str(out), data_dir=target)[0] == 0
    restored = target / "config-from-backup" / "scep-ca.yaml"
    assert restored.read_text() == config.read_text()
    assert stat.S_IMODE(restored.stat().st_mode) == 0o600
    code, _, err = cli("backup", "--out", str(tmp_path / "d.tar"), "--insecure-plaintext", "--include-config")
    assert code == 1 and "--include-config needs --config FILE" in err and not (tmp_path / "d.tar").exists()


def test_backups_kept_inside_the_data_directory_are_not_backed_up_again(cli: Cli, identity: tuple[Path, str]) -> None:
    key, recipient = identity
    shelf = cli.data_dir / "backups"
    shelf.mkdir(mode=0o700)
    for _ in range(2):
        assert cli("backup", "--dir", str(shelf), "--recipient", recipient)[0] == 0
    newest = sorted(shelf.iterdir())[-1]
    code, _, err = cli("backup", "verify", str(newest), "--identity", str(key))
    assert code == 0, err
    plain = shelf.parent.parent / "newest.tar"
    subprocess.run(["age", "-d", "-i", str(key), "-o", str(plain), str(newest)], check=True)
    with tarfile.open(plain) as tar:
        assert not [n for n in tar.getnames() if "backups" in n]
    code, _, err = cli("backup", "--out", str(cli.data_dir / "b.tar"), "--recipient", recipient)
    assert code == 1 and "outside the data directory" in err and not (cli.data_dir / "b.tar").exists()


def test_recipients_file_and_a_bad_recipient(cli: Cli, tmp_path: Path, identity: tuple[Path, str]) -> None:
    key, recipient = identity
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# the offsite key\n\n{recipient}\n")
    out = tmp_path / "r.tar.age"
    code, _, err = cli("backup", "--out", str(out), "--recipients-file", str(recipients))
    assert code == 0, err
    subprocess.run(["age", "-d", "-i", str(key), "-o", str(tmp_path / "r.tar"), str(out)], check=True)
    assert tarfile.is_tarfile(tmp_path / "r.tar")
    bad = tmp_path / "bad.tar.age"
    code, _, err = cli("backup", "--out", str(bad), "--recipient", "age1notakey")
    assert code == 1 and "not an age recipient" in err and len(err.strip().splitlines()) == 1
    assert not bad.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".scep-ca-backup-")] == []
