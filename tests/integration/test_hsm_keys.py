"""``scep-ca ca rollover`` and ``scep-ca ra create [--pair]`` with keys.pkcs11 set (issue 12):
the new keys are generated in the token (sensitive, never extractable, CKA_ID = the
certificate's subjectKeyIdentifier), only ``*.key.pkcs11`` references reach the data
directory, and the app enrolls with the new RA."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.pki.pkcs11_keys import KeyRef
from scep_ca.protocol.enums import PKIStatus
from tests.hsm import SoftHsm, private_key_objects
from tests.integration.conftest import HsmCli, enroll_with_token

Client = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


def _key_id(ref_file: Path) -> bytes:
    return KeyRef.parse(ref_file.read_text()).key_id


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file())


def _assert_in_token(hsm: SoftHsm, data_dir: Path, ref_file: Path, cert_file: Path) -> None:
    """The referenced key is a sensitive, never-extractable token object whose CKA_ID is the cert's SKI."""
    key_id = _key_id(ref_file)
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert key_id == cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    objects = private_key_objects(hsm)
    assert f"ID:         {key_id.hex()}" in objects, objects
    block = objects.split(f"ID:         {key_id.hex()}", 1)[1].split("Private Key Object", 1)[0]
    assert "sensitive, always sensitive, never extractable" in block, objects
    leaked = [p for p in data_dir.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    assert not leaked, leaked


async def test_ca_rollover_generates_the_next_keys_in_the_token(
    cli: HsmCli, hsm: SoftHsm, aiohttp_client: Client, device_key: rsa.RSAPrivateKey
) -> None:
    data = cli.data_dir
    refs = ["ca.key.pkcs11", "ra-enc.key.pkcs11", "ra.key.pkcs11"]  # init makes the NDES RA pair
    before = {_key_id(data / ref) for ref in refs}
    out = cli("ca", "rollover")
    assert "next CA created" in out
    next_dir = data / "next"
    pair_files = ["ca.key.pkcs11", "ca.pem", "ra-enc.key.pkcs11", "ra-enc.pem", "ra.key.pkcs11", "ra.pem"]
    assert _files(next_dir) == pair_files
    after = {_key_id(next_dir / ref) for ref in refs}
    assert len(after) == 3 and not after & before, "rollover generated three new keys"
    for ref in refs:
        _assert_in_token(hsm, data, next_dir / ref, next_dir / ref.replace(".key.pkcs11", ".pem"))

    cli("ca", "activate-next")
    # No public_url (init defaulted it: it follows the listen address); the database holds the
    # audit log of these key operations (its keys are in the token).
    assert _files(data) == sorted([*pair_files, "scep-ca.sqlite3"])
    reply = await enroll_with_token(hsm, data, aiohttp_client, "ra-enc.pem", device_key)
    assert reply.status is PKIStatus.SUCCESS, reply.fail_info
    new_ca = x509.load_pem_x509_certificate((data / "ca.pem").read_bytes())
    reply.certificates[0].verify_directly_issued_by(new_ca)
    assert _key_id(data / "ca.key.pkcs11") in after


@pytest.mark.parametrize("pair", [False, True], ids=["combined", "pair"])
async def test_ra_create_generates_the_new_ra_keys_in_the_token(
    cli: HsmCli, hsm: SoftHsm, aiohttp_client: Client, device_key: rsa.RSAPrivateKey, pair: bool
) -> None:
    data = cli.data_dir
    old_ra = {_key_id(data / "ra.key.pkcs11"), _key_id(data / "ra-enc.key.pkcs11")}  # init made the pair
    out = cli("ra", "create", *(["--pair"] if pair else []))
    assert ("a signing RA (ra.pem) and an encryption RA (ra-enc.pem)" if pair else "one combined RA") in out
    refs = ["ra-enc.key.pkcs11", "ra.key.pkcs11"] if pair else ["ra.key.pkcs11"]
    certs = ["ra-enc.pem", "ra.pem"] if pair else ["ra.pem"]
    assert _files(data) == sorted(["ca.key.pkcs11", "ca.pem", "scep-ca.sqlite3", *refs, *certs])
    (retired,) = (data / "retired").iterdir()
    assert _files(retired) == ["ra-enc.key.pkcs11", "ra-enc.pem", "ra.key.pkcs11", "ra.pem"]
    assert {_key_id(retired / "ra.key.pkcs11"), _key_id(retired / "ra-enc.key.pkcs11")} == old_ra
    new_ids = {_key_id(data / ref) for ref in refs}
    assert len(new_ids) == len(refs) and not old_ra & new_ids
    for ref, cert in zip(refs, certs, strict=True):
        _assert_in_token(hsm, data, data / ref, data / cert)

    reply = await enroll_with_token(hsm, data, aiohttp_client, certs[0], device_key)
    assert reply.status is PKIStatus.SUCCESS, reply.fail_info
    # CertReps are signed by the (signing) RA, whose key is in the token too.
    assert x509.load_der_x509_certificate(reply.signer_cert_der) == x509.load_pem_x509_certificate(
        (data / "ra.pem").read_bytes()
    )


async def test_ra_renew_generates_keys_in_the_token_and_the_previous_token_key_still_decrypts(
    cli: HsmCli, hsm: SoftHsm, aiohttp_client: Client, device_key: rsa.RSAPrivateKey
) -> None:
    """``ra renew`` (as serve at start: the token work in a forked child) with keys.pkcs11."""
    data = cli.data_dir
    old_ids = {_key_id(data / "ra.key.pkcs11"), _key_id(data / "ra-enc.key.pkcs11")}
    out = await asyncio.to_thread(cli, "ra", "renew", "--all")  # the CLI runs its own event loop
    assert "renewed the signing RA" in out and "renewed the encryption RA" in out
    (previous,) = (data / "ra-previous").iterdir()
    assert _files(previous) == ["ra-enc.key.pkcs11", "ra-enc.pem"]
    assert _key_id(previous / "ra-enc.key.pkcs11") in old_ids
    new_ids = {_key_id(data / "ra.key.pkcs11"), _key_id(data / "ra-enc.key.pkcs11")}
    assert len(new_ids) == 2 and not new_ids & old_ids
    for ref in ("ra.key.pkcs11", "ra-enc.key.pkcs11"):
        _assert_in_token(hsm, data, data / ref, data / ref.replace(".key.pkcs11", ".pem"))
    # A request encrypted to the previous encryption RA: decrypted with its key in the token.
    (data / "ra-enc-old.pem").write_bytes((previous / "ra-enc.pem").read_bytes())
    reply = await enroll_with_token(hsm, data, aiohttp_client, "ra-enc-old.pem", device_key)
    assert reply.status is PKIStatus.SUCCESS, reply.fail_info
    assert x509.load_der_x509_certificate(reply.signer_cert_der) == x509.load_pem_x509_certificate(
        (data / "ra.pem").read_bytes()
    )
