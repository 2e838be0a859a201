"""The RA layouts through the real app: the default signing RA + encryption RA (NDES's pair),
the combined RA on request, and a data directory that already has a combined RA."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp.test_utils import TestClient
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from challenge.issuer import issue_challenge
from config import Config, load_config
from scep_ca.pki.ca import create_ca, replace_ra
from scep_ca.pki.ca_set import load_ca_set
from scep_ca.protocol.client import build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import FailInfo, PKIStatus
from scep_ca.server.app import build_app
from store.base import Store
from store.factory import open_store
from tests.integration.conftest import _integration

Client = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


async def test_pair_of_ras(tmp_path: Path, aiohttp_client: Client, device_key: rsa.RSAPrivateKey) -> None:
    data = tmp_path / "data"
    create_ca(data, subject="CN=Pair CA", key_size=2048, validity_days=30, passphrase=None, ra_pair=False)
    ca = replace_ra(data, None, pair=True)
    assert ca.enc_cert is not None
    assert list((data / "retired").iterdir()), "the combined RA was retired, not deleted"
    config = load_config(None, {}, {"data_dir": str(data)})
    store = open_store(config)
    client = await aiohttp_client(build_app(config, ca, store))
    await store.create_integration(_integration("pair"))

    resp = await client.get("/scep/pair?operation=GetCACert")
    bag = cms.ContentInfo.load(await resp.read())["content"]
    enc_der = ca.enc_cert.public_bytes(serialization.Encoding.DER)
    assert [c.chosen.dump() for c in bag["certificates"]] == [ca.ra_cert_der, enc_der, ca.cert_der]
    sign_ku = ca.ra_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    enc_ku = ca.enc_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (sign_ku.digital_signature, sign_ku.key_encipherment) == (True, False)
    assert (enc_ku.digital_signature, enc_ku.key_encipherment) == (False, True)

    signer = self_signed_signer(device_key)
    for recipient, tid in ((ca.enc_cert, "to-enc"), (ca.ra_cert, "to-sign")):
        challenge = await issue_challenge(store, config.challenge, "pair")
        assert challenge is not None
        csr = build_csr(device_key, parse_dn("CN=alice,O=Example"), challenge)
        req = build_request(csr, signer_cert=signer, signer_key=device_key, recipient=recipient, transaction_id=tid)
        resp = await client.post("/scep/pair?operation=PKIOperation", data=req.der)
        reply = open_reply(await resp.read(), signer, device_key)
        assert reply.signer_cert_der == ca.ra_cert_der, "CertReps are signed by the signing RA"
        if recipient is ca.enc_cert:
            assert reply.status is PKIStatus.SUCCESS
        else:
            assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_MESSAGE_CHECK)


async def test_openssl_names_the_ra_as_cert_rep_signer(
    tmp_path: Path, aiohttp_client: Client, device_key: rsa.RSAPrivateKey
) -> None:
    """``openssl cms -verify -signer`` on a real CertRep writes out the RA certificate."""
    import subprocess

    data = tmp_path / "data"
    ca = create_ca(data, subject="CN=Verify CA", key_size=2048, validity_days=30, passphrase=None)
    config = load_config(None, {}, {"data_dir": str(data)})
    store = open_store(config)
    client = await aiohttp_client(build_app(config, ca, store))
    await store.create_integration(_integration("ver"))
    challenge = await issue_challenge(store, config.challenge, "ver")
    assert challenge is not None
    signer = self_signed_signer(device_key)
    csr = build_csr(device_key, parse_dn("CN=alice,O=Example"), challenge)
    req = build_request(
        csr, signer_cert=signer, signer_key=device_key, recipient=ca.encryption_cert, transaction_id="v"
    )
    resp = await client.post("/scep/ver?operation=PKIOperation", data=req.der)
    (tmp_path / "rep.der").write_bytes(await resp.read())
    result = subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            str(tmp_path / "rep.der"),
            "-CAfile",
            str(data / "ca.pem"),
            "-signer",
            str(tmp_path / "signer.pem"),
            "-out",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    signed_by = x509.load_pem_x509_certificate((tmp_path / "signer.pem").read_bytes())
    assert signed_by == ca.ra_cert and signed_by != ca.cert


def _files(data: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data.iterdir()) if p.name.startswith(("ca.", "ra"))}


async def _enroll(
    client: TestClient,  # type: ignore[type-arg]
    store: Store,
    config: Config,
    recipient: x509.Certificate,
    device_key: rsa.RSAPrivateKey,
    iid: str,
) -> tuple[PKIStatus, bytes]:
    challenge = await issue_challenge(store, config.challenge, iid)
    assert challenge is not None
    signer = self_signed_signer(device_key)
    csr = build_csr(device_key, parse_dn("CN=alice,O=Example"), challenge)
    req = build_request(csr, signer_cert=signer, signer_key=device_key, recipient=recipient, transaction_id=iid)
    resp = await client.post(f"/scep/{iid}?operation=PKIOperation", data=req.der)
    reply = open_reply(await resp.read(), signer, device_key)
    return reply.status, reply.signer_cert_der


async def test_data_dir_with_a_combined_ra_serves_it_unchanged(
    tmp_path: Path, aiohttp_client: Client, device_key: rsa.RSAPrivateKey
) -> None:
    """An upgrade replaces no RA: a data directory made when ``init`` issued one combined RA
    loads as it is (no ``ra-enc.pem`` appears), GetCACert still answers RA + CA, and a request
    encrypted to that RA enrolls with a CertRep signed by it."""
    data = tmp_path / "data"
    made = create_ca(data, subject="CN=Old CA", key_size=2048, validity_days=30, passphrase=None, ra_pair=False)
    before = _files(data)
    assert sorted(before) == ["ca.key", "ca.pem", "ra.key", "ra.pem"]
    cas = load_ca_set(data, None)  # what `scep-ca serve` does at start
    ca = cas.current
    assert ca.enc_cert is None and ca.ra_cert == made.ra_cert
    config = load_config(None, {}, {"data_dir": str(data)})
    store = open_store(config)
    client = await aiohttp_client(build_app(config, cas, store))
    await store.create_integration(_integration("old"))
    bag = cms.ContentInfo.load(await (await client.get("/scep/old?operation=GetCACert")).read())["content"]
    assert [c.chosen.dump() for c in bag["certificates"]] == [ca.ra_cert_der, ca.cert_der]
    status, signer = await _enroll(client, store, config, ca.ra_cert, device_key, "old")
    assert (status, signer) == (PKIStatus.SUCCESS, ca.ra_cert_der)
    assert _files(data) == before


async def test_data_dir_without_an_ra_gets_the_pair(tmp_path: Path) -> None:
    data = tmp_path / "data"
    create_ca(data, subject="CN=Bare CA", key_size=2048, validity_days=30, passphrase=None, ra_pair=False)
    for name in ("ra.pem", "ra.key"):
        (data / name).unlink()
    ca = load_ca_set(data, None).current
    assert ca.enc_cert is not None and ca.encryption_cert != ca.ra_cert
    assert sorted(_files(data)) == ["ca.key", "ca.pem", "ra-enc.key", "ra-enc.pem", "ra.key", "ra.pem"]
