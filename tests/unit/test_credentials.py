"""Integration credentials, the secret key file, Basic parsing and the lockout policy."""

from __future__ import annotations

import base64
import datetime
import sqlite3
import stat
import string
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from challenge.basic import basic_allowed, parse_basic
from challenge.credentials import (
    CredentialError,
    bare_username,
    decrypt_nt_hash,
    encrypt_nt_hash,
    generate_password,
    make_credentials,
    nt_hash,
    scrypt_hash,
    scrypt_verify,
    username_for,
    username_matches,
)
from challenge.lockout import Attempt, Lockout
from challenge.secret_key import SecretKeyError, load_or_create_secret_key
from store.sqlite import SQLiteStore

KEY = bytes(range(32))

# -- passwords and hashes ---------------------------------------------------------------


def test_generated_password_is_long_random_and_form_safe() -> None:
    passwords = {generate_password() for _ in range(50)}
    assert len(passwords) == 50
    for password in passwords:
        assert len(password) == 32  # 32 base32 characters = 160 bits
        assert set(password) <= set(string.ascii_uppercase + "234567")


def test_scrypt_round_trip_and_format() -> None:
    stored = scrypt_hash("correct horse")
    assert stored.startswith("scrypt$32768$8$1$")
    assert scrypt_verify("correct horse", stored)
    assert not scrypt_verify("correct horsE", stored)
    assert scrypt_hash("correct horse") != stored  # fresh salt each time


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "bcrypt$1$2$3$AA==$AA==",
        "scrypt$32768$8$1$AA==",
        "scrypt$1000$8$1$AAAA$AAAA",  # N not a power of two
        "scrypt$2097152$8$1$AAAA$AAAA",  # N above the cap: a corrupt row must not allocate gigabytes
        "scrypt$32768$8$1$!!!!$AAAA",
        "scrypt$32768$8$1$AAAA$",
        "scrypt$x$8$1$AAAA$AAAA",
    ],
)
def test_scrypt_verify_rejects_malformed(stored: str) -> None:
    assert not scrypt_verify("x", stored)


def test_nt_hash_ms_nlmp_vector() -> None:
    assert nt_hash("Password").hex() == "a4f49c406510bdcab6824ee7c30fd852"


def test_nt_hash_encryption_round_trip() -> None:
    nt = nt_hash("Password")
    blob = encrypt_nt_hash(KEY, nt)
    assert len(blob) == 12 + 16 + 16
    assert nt not in blob
    assert decrypt_nt_hash(KEY, blob) == nt
    assert encrypt_nt_hash(KEY, nt) != blob  # fresh nonce


def test_nt_hash_decryption_fails_closed() -> None:
    blob = encrypt_nt_hash(KEY, nt_hash("Password"))
    with pytest.raises(CredentialError):
        decrypt_nt_hash(bytes(32), blob)
    with pytest.raises(CredentialError):
        decrypt_nt_hash(KEY, blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(CredentialError):
        decrypt_nt_hash(KEY, blob[:20])


def test_make_credentials_consistent() -> None:
    username, password, scrypt_string, nt_encrypted = make_credentials(KEY, "abc123")
    assert username == username_for("abc123") == "scep-abc123"
    assert scrypt_verify(password, scrypt_string)
    assert decrypt_nt_hash(KEY, nt_encrypted) == nt_hash(password)


# -- user names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "presented",
    ["scep-abc", "SCEP-ABC", "EXAMPLE\\scep-abc", "example.com\\Scep-Abc", "scep-abc@example.com", "a\\b\\scep-abc"],
)
def test_username_forms_match(presented: str) -> None:
    assert username_matches(presented, "scep-abc")


@pytest.mark.parametrize(
    "presented",
    ["scep-abcd", "scep-ab", "", "scep-abc\\other", "other@scep-abc", "scep-abc ", "sce\u1e57-abc", "\u212a"],
)
def test_username_mismatches(presented: str) -> None:
    assert not username_matches(presented, "scep-abc")


def test_no_unicode_case_folding() -> None:
    # KELVIN SIGN lower-cases to ASCII "k" in Python: it must not match.
    assert "\u212a".lower() == "k"
    assert not username_matches("scep-\u212aey", "scep-key")


def test_bare_username() -> None:
    assert bare_username("DOM\\user@x") == "user"
    assert bare_username("user") == "user"


# -- secret key file --------------------------------------------------------------------


def test_secret_key_created_once_with_mode_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = load_or_create_secret_key(data_dir)
    assert len(key) == 32
    path = data_dir / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret_key(data_dir) == key
    assert [p.name for p in data_dir.iterdir()] == ["secret.key"]  # no temporary files left


def test_secret_key_creation_never_overwrites(tmp_path: Path) -> None:
    # Another worker may create the file between our exists() check and our link():
    # creation then keeps the existing key and leaves no temporary file behind.
    from config.files import create_private_once

    first = load_or_create_secret_key(tmp_path)
    create_private_once(tmp_path / "secret.key", b"11" * 32 + b"\n")
    assert load_or_create_secret_key(tmp_path) == first
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]


@pytest.mark.parametrize("content", ["", "zz" * 32, "00" * 31, "00" * 33])
def test_bad_secret_key_file_rejected(tmp_path: Path, content: str) -> None:
    path = tmp_path / "secret.key"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(SecretKeyError):
        load_or_create_secret_key(tmp_path)


# -- Basic ------------------------------------------------------------------------------


def _b64(text: str, encoding: str = "utf-8") -> str:
    return base64.b64encode(text.encode(encoding)).decode()


def test_parse_basic() -> None:
    assert parse_basic(_b64("DOM\\user:pa:ss")) == ("DOM\\user", "pa:ss")
    assert parse_basic(_b64("user:")) == ("user", "")
    assert parse_basic(_b64("üser:pässword", "latin-1")) == ("üser", "pässword")


@pytest.mark.parametrize("token", ["", "!!!!", _b64("nocolon"), _b64(":password"), "A" * 2000])
def test_parse_basic_rejects(token: str) -> None:
    assert parse_basic(token) is None


def test_basic_allowed_policy() -> None:
    assert basic_allowed(None, tls=True, client_local=False)
    assert basic_allowed(None, tls=False, client_local=True)
    assert not basic_allowed(None, tls=False, client_local=False)
    assert basic_allowed(True, tls=False, client_local=False)
    assert not basic_allowed(False, tls=True, client_local=True)


# -- lockout ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "lockout.sqlite3")
    await store.open()
    yield store
    await store.close()


async def fail(lock: Lockout, key: str) -> Attempt:
    """One wrong login: reserve, and report the failed check when it was allowed."""
    attempt = await lock.reserve(key)
    if attempt.allowed:
        await lock.release(attempt, failed=True)
    return attempt


async def test_lockout_after_max_failures(store: SQLiteStore) -> None:
    clock = FakeClock()
    lock = Lockout(store, 3, 60, 300, clock=clock)
    key = Lockout.key("User", "10.0.0.1")
    assert [(await fail(lock, key)).allowed for _ in range(3)] == [True] * 3
    tripped = await lock.reserve(key)  # the fourth attempt is not checked: it locks
    assert (tripped.allowed, tripped.locked, tripped.tripped, tripped.retry_after) == (False, True, True, 300)
    clock.advance(299)
    again = await lock.reserve(key)
    assert (again.locked, again.tripped, again.retry_after) == (True, False, pytest.approx(1))
    clock.advance(1)
    assert (await fail(lock, key)).allowed  # counting starts afresh after the lock


async def test_lockout_busy_while_checks_are_in_flight(store: SQLiteStore) -> None:
    lock = Lockout(store, 2, 60, 300, clock=FakeClock())
    key = Lockout.key("u", "a")
    first, second = await lock.reserve(key), await lock.reserve(key)
    busy = await lock.reserve(key)
    assert (busy.allowed, busy.locked, busy.retry_after) == (False, False, 1.0)
    await lock.release(first, failed=False)  # a success frees its slot and forgets failures
    assert (await lock.reserve(key)).allowed
    await lock.release(second, failed=True)


async def test_lockout_window_is_fixed(store: SQLiteStore) -> None:
    clock = FakeClock()
    lock = Lockout(store, 2, 60, 300, clock=clock)
    key = Lockout.key("u", "a")
    await fail(lock, key)
    clock.advance(40)
    await fail(lock, key)
    clock.advance(20)  # the window opened by the first failure is over: a new one starts
    assert (await fail(lock, key)).allowed
    assert (await fail(lock, key)).allowed
    assert (await lock.reserve(key)).retry_after == 300


async def test_lockout_is_per_pair_case_insensitive_and_reset_by_success(store: SQLiteStore) -> None:
    lock = Lockout(store, 1, 60, 300, clock=FakeClock())
    await fail(lock, Lockout.key("User", "a"))
    assert (await lock.reserve(Lockout.key("USER", "a"))).tripped
    assert (await lock.reserve(Lockout.key("user", "b"))).allowed
    assert (await lock.reserve(Lockout.key("other", "a"))).allowed
    key = Lockout.key("x", "a")
    ok = await lock.reserve(key)
    await lock.release(ok, failed=False)
    assert (await fail(lock, key)).allowed, "a success gave its check back"
    assert not (await lock.reserve(key)).allowed, "the window's one check is used"


def test_lockout_key_is_a_hash_of_the_normalised_pair() -> None:
    key = Lockout.key("SomeUser", "10.0.0.1")
    assert len(key) == 64 and "someuser" not in key.lower()
    assert key == Lockout.key("someuser", "10.0.0.1") != Lockout.key("someuser", "10.0.0.2")
    assert Lockout.key("a\0b", "c") != Lockout.key("a", "b\0c")
    unknown = Lockout.address_key("10.0.0.1")
    assert len(unknown) == 64 and unknown != Lockout.address_key("10.0.0.2")
    assert unknown not in {Lockout.key("unknown-user", "10.0.0.1"), Lockout.key("", "unknown-user\0" + "10.0.0.1")}


async def test_lockout_table_is_bounded(store: SQLiteStore) -> None:
    clock = FakeClock()
    lock = Lockout(store, 5, 60, 300, clock=clock)
    for i in range(300):
        await fail(lock, Lockout.key(f"user{i}", "a"))
    clock.advance(61)  # all 300 windows are over: each new reservation purges up to 100 of them
    for i in range(3):
        await fail(lock, Lockout.key(f"late{i}", "a"))
    conn = sqlite3.connect((await store.info()).extra["path"])
    try:
        (rows,) = conn.execute("SELECT count(*) FROM auth_throttle").fetchone()
    finally:
        conn.close()
    assert rows == 3
