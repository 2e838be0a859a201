"""``keys.pkcs11.ra_keys: files`` (issue 23): the CA key in a real SoftHSM2 token, the RA keys in
0600 files (encrypted with the CA passphrase when one is set), through init, enrollment, ``keys
list``, ``ra create``, ``ra renew`` and ``ca rollover``; and an all-token data directory that
switches to files at its next renewal.

The first start of ``serve`` with the setting is in ``tests/e2e/test_hsm_real_clients.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.pki.ca_set import load_ca_set
from scep_ca.pki.pkcs11_keys import KeyRef, Pkcs11Key, Token, TokenSettings
from scep_ca.protocol.enums import PKIStatus
from tests.hsm import SoftHsm, private_key_objects
from tests.integration.conftest import HsmCli, enroll_with_token

Client = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]

PASSPHRASE_ENV = "SCEP_CA_TEST_RA_FILES_PASSPHRASE"
PASSPHRASE = b"correct horse battery staple"
CA_LABEL = "CN=Split CA,O=Example CA"


@pytest.fixture
def files_cli(
    tmp_path: Path, hsm: SoftHsm, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> HsmCli:
    """The CLI with ``ra_keys: files`` and a CA passphrase, before ``init``."""
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE.decode())
    runner = HsmCli(tmp_path, hsm, capsys)
    runner.write_config(ra_keys="files", passphrase_env=PASSPHRASE_ENV)
    return runner


@pytest.fixture
def split_cli(files_cli: HsmCli) -> HsmCli:
    """After ``scep-ca init``: the CA key in the token, the RA pair in files."""
    files_cli("init", "--subject", "CN=Split CA,O=Example")
    return files_cli


def _token_labels(hsm: SoftHsm) -> list[str]:
    objects = private_key_objects(hsm)
    return sorted(line.split(":", 1)[1].strip() for line in objects.splitlines() if "label:" in line)


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file())


def _assert_file_key(key_file: Path, cert_file: Path, passphrase: bytes | None) -> rsa.RSAPublicKey:
    """A 0600 PEM key file (encrypted when ``passphrase``) holding the certificate's key; its public key."""
    assert key_file.stat().st_mode & 0o777 == 0o600, oct(key_file.stat().st_mode)
    pem = key_file.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----" if passphrase else b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(pem, password=passphrase)
    assert isinstance(key, rsa.RSAPrivateKey)
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    return key.public_key()


def _public_numbers(key_file: Path, passphrase: bytes | None) -> rsa.RSAPublicNumbers:
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=passphrase)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.public_key().public_numbers()


# The data directory with the CA key in the token (its reference file) and the RA keys as files.
_CA_IN_TOKEN_RA_IN_FILES = [
    "ca.key.pkcs11",
    "ca.pem",
    "ra-enc.key",
    "ra-enc.pem",
    "ra.key",
    "ra.pem",
    "scep-ca.sqlite3",
]


def test_init_puts_the_ca_key_in_the_token_and_the_ra_keys_in_files(files_cli: HsmCli, hsm: SoftHsm) -> None:
    data = files_cli.data_dir
    assert "token scep-ca (pkcs11:token=scep-ca;id=" in files_cli("init", "--subject", "CN=Split CA,O=Example")
    assert _files(data) == _CA_IN_TOKEN_RA_IN_FILES
    for name in ("ra.key", "ra-enc.key"):
        _assert_file_key(data / name, data / name.replace(".key", ".pem"), PASSPHRASE)
    # One key in the token: the CA's, its CKA_ID the certificate's subjectKeyIdentifier.
    assert _token_labels(hsm) == [CA_LABEL]
    ca = x509.load_pem_x509_certificate((data / "ca.pem").read_bytes())
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert KeyRef.parse((data / "ca.key.pkcs11").read_text()).key_id == ski
    assert f"ID:         {ski.hex()}" in private_key_objects(hsm)

    # What serve loads: the CA key a token object, the RA keys cryptography's.
    cas = load_ca_set(data, PASSPHRASE, Token(TokenSettings(str(hsm.module), hsm.label, hsm.pin)))
    assert isinstance(cas.current.key, Pkcs11Key)
    assert isinstance(cas.current.ra_key, rsa.RSAPrivateKey) and isinstance(cas.current.enc_key, rsa.RSAPrivateKey)

    rows = {line.split("  ")[0]: line for line in files_cli("keys", "list").splitlines()}
    assert "token scep-ca (pkcs11:token=scep-ca;id=" in rows["current CA"], rows
    assert rows["current RA"].endswith(f"file {data / 'ra.key'}"), rows
    assert rows["current encryption RA"].endswith(f"file {data / 'ra-enc.key'}"), rows


async def test_an_enrollment_decrypts_and_signs_with_the_file_keys_and_issues_with_the_token_key(
    split_cli: HsmCli, hsm: SoftHsm, aiohttp_client: Client, device_key: rsa.RSAPrivateKey
) -> None:
    data = split_cli.data_dir
    assert (data / "ra-enc.key").is_file() and not (data / "ra-enc.key.pkcs11").exists()
    reply = await enroll_with_token(hsm, data, aiohttp_client, "ra-enc.pem", device_key, passphrase=PASSPHRASE)
    assert reply.status is PKIStatus.SUCCESS, reply.fail_info
    ca = x509.load_pem_x509_certificate((data / "ca.pem").read_bytes())
    reply.certificates[0].verify_directly_issued_by(ca)
    assert x509.load_der_x509_certificate(reply.signer_cert_der) == x509.load_pem_x509_certificate(
        (data / "ra.pem").read_bytes()
    )


async def test_ra_renew_makes_new_file_keys_and_the_previous_file_key_still_decrypts(
    split_cli: HsmCli, hsm: SoftHsm, aiohttp_client: Client, device_key: rsa.RSAPrivateKey
) -> None:
    data = split_cli.data_dir
    old = {name: _public_numbers(data / name, PASSPHRASE) for name in ("ra.key", "ra-enc.key")}
    out = await asyncio.to_thread(split_cli, "ra", "renew", "--all")  # the CLI runs its own event loop
    assert "renewed the signing RA" in out and "renewed the encryption RA" in out
    for name in ("ra.key", "ra-enc.key"):
        new = _assert_file_key(data / name, data / name.replace(".key", ".pem"), PASSPHRASE)
        assert new.public_numbers() != old[name]
    assert not list(data.glob("ra*.pkcs11"))
    (previous,) = (data / "ra-previous").iterdir()
    assert _files(previous) == ["ra-enc.key", "ra-enc.pem"]
    assert _public_numbers(previous / "ra-enc.key", PASSPHRASE) == old["ra-enc.key"]
    (retired,) = (data / "retired").iterdir()
    assert _files(retired) == ["ra.key", "ra.pem"]
    assert _token_labels(hsm) == [CA_LABEL]  # the renewal signed with the CA key and added nothing

    # A client with a cached GetCACert still encrypts to the previous encryption RA.
    (data / "ra-enc-old.pem").write_bytes((previous / "ra-enc.pem").read_bytes())
    reply = await enroll_with_token(hsm, data, aiohttp_client, "ra-enc-old.pem", device_key, passphrase=PASSPHRASE)
    assert reply.status is PKIStatus.SUCCESS, reply.fail_info
    reply.certificates[0].verify_directly_issued_by(x509.load_pem_x509_certificate((data / "ca.pem").read_bytes()))


async def test_ra_create_makes_a_file_key(
    split_cli: HsmCli, hsm: SoftHsm, aiohttp_client: Client, device_key: rsa.RSAPrivateKey
) -> None:
    data = split_cli.data_dir
    assert "one combined RA" in split_cli("ra", "create")
    assert _files(data) == ["ca.key.pkcs11", "ca.pem", "ra.key", "ra.pem", "scep-ca.sqlite3"]
    _assert_file_key(data / "ra.key", data / "ra.pem", PASSPHRASE)
    assert _token_labels(hsm) == [CA_LABEL]
    reply = await enroll_with_token(hsm, data, aiohttp_client, "ra.pem", device_key, passphrase=PASSPHRASE)
    assert reply.status is PKIStatus.SUCCESS, reply.fail_info


def test_ca_rollover_puts_the_next_ca_key_in_the_token_and_its_ra_keys_in_files(
    split_cli: HsmCli, hsm: SoftHsm
) -> None:
    next_dir = split_cli.data_dir / "next"
    assert "next CA created" in split_cli("ca", "rollover")
    assert _files(next_dir) == ["ca.key.pkcs11", "ca.pem", "ra-enc.key", "ra-enc.pem", "ra.key", "ra.pem"]
    for name in ("ra.key", "ra-enc.key"):
        _assert_file_key(next_dir / name, next_dir / name.replace(".key", ".pem"), PASSPHRASE)
    assert _token_labels(hsm) == [CA_LABEL, CA_LABEL]  # the next CA keeps the subject


async def test_an_all_token_directory_moves_its_ra_keys_to_files_at_the_next_renewal(
    cli: HsmCli, hsm: SoftHsm, aiohttp_client: Client, device_key: rsa.RSAPrivateKey
) -> None:
    """Switching the setting changes where new RA keys go; the token keys already in use stay
    until renewal replaces them, and the previous one still decrypts from the token."""
    data = cli.data_dir
    assert len(_token_labels(hsm)) == 3  # init without the setting: CA and RA pair in the token
    cli.write_config(ra_keys="files")
    await asyncio.to_thread(cli, "ra", "renew", "--all")
    assert _files(data) == _CA_IN_TOKEN_RA_IN_FILES
    for name in ("ra.key", "ra-enc.key"):
        _assert_file_key(data / name, data / name.replace(".key", ".pem"), None)
    (previous,) = (data / "ra-previous").iterdir()
    assert _files(previous) == ["ra-enc.key.pkcs11", "ra-enc.pem"]
    assert len(_token_labels(hsm)) == 3  # nothing new in the token; the old keys are kept there
    (data / "ra-enc-old.pem").write_bytes((previous / "ra-enc.pem").read_bytes())
    reply = await enroll_with_token(hsm, data, aiohttp_client, "ra-enc-old.pem", device_key)
    assert reply.status is PKIStatus.SUCCESS, reply.fail_info
    assert x509.load_der_x509_certificate(reply.signer_cert_der) == x509.load_pem_x509_certificate(
        (data / "ra.pem").read_bytes()
    )
