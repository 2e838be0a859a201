"""CA rollover: GetNextCACert, activation, and the previous CA's certificates, CRL and OCSP."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp.test_utils import TestClient
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp

from challenge.issuer import issue_challenge
from config import load_config
from scep_ca.asn1.ber import encode_tlv
from scep_ca.pki.ca import create_ca
from scep_ca.pki.ca_set import activate_next, ca_id, load_ca_set, rollover
from scep_ca.protocol.client import build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import PKIStatus
from scep_ca.server.app import build_app
from store.factory import open_store
from tests.integration.conftest import _integration

Client = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


async def _app(data: Path, aiohttp_client: Client, create: bool = False) -> tuple[TestClient, object]:  # type: ignore[type-arg]
    config = load_config(None, {}, {"data_dir": str(data)})
    store = open_store(config)
    client = await aiohttp_client(build_app(config, load_ca_set(data, None), store))
    if create:
        await store.create_integration(_integration("roll"))
    return client, store


async def _enroll(
    client: TestClient, store: object, ra: x509.Certificate, key: rsa.RSAPrivateKey, tid: str
) -> x509.Certificate:  # type: ignore[type-arg]
    config = load_config(None, {}, {})
    challenge = await issue_challenge(store, config.challenge, "roll")  # type: ignore[arg-type]
    assert challenge is not None
    signer = self_signed_signer(key)
    csr = build_csr(key, parse_dn("CN=alice,O=Example"), challenge)
    req = build_request(csr, signer_cert=signer, signer_key=key, recipient=ra, transaction_id=tid)
    reply = open_reply(await (await client.post("/scep/roll?operation=PKIOperation", data=req.der)).read(), signer, key)
    assert reply.status is PKIStatus.SUCCESS
    return reply.certificates[0]


async def _ocsp(client: TestClient, cert: x509.Certificate, issuer: x509.Certificate) -> ocsp.OCSPResponse:  # type: ignore[type-arg]
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    resp = await client.post("/ocsp", data=req.public_bytes(serialization.Encoding.DER))
    return ocsp.load_der_ocsp_response(await resp.read())


async def test_rollover_end_to_end(tmp_path: Path, aiohttp_client: Client, device_key: rsa.RSAPrivateKey) -> None:
    data = tmp_path / "data"
    old = create_ca(data, subject="CN=Roll CA", key_size=2048, validity_days=30, passphrase=None)
    client, store = await _app(data, aiohttp_client, create=True)
    caps = (await (await client.get("/scep/roll?operation=GetCACaps")).text()).split()
    assert "GetNextCACert" not in caps
    assert (await client.get("/scep/roll?operation=GetNextCACert")).status == 404
    old_cert = await _enroll(client, store, old.encryption_cert, device_key, "before")
    await store.close()  # type: ignore[attr-defined]

    nxt = rollover(data, subject=None, key_size=2048, validity_days=60, passphrase=None)
    client, store = await _app(data, aiohttp_client)
    caps = (await (await client.get("/scep/roll?operation=GetCACaps")).text()).split()
    assert "GetNextCACert" in caps
    resp = await client.get("/scep/roll?operation=GetNextCACert")
    assert resp.headers["Content-Type"] == "application/x-x509-next-ca-cert"
    body = await resp.read()
    # Signed by the current RA; its content is the next CA's certs-only bag.
    nxt_enc_der = nxt.encryption_cert.public_bytes(serialization.Encoding.DER)
    assert next_ca_certificates(body, old.ra_cert) == [nxt.ra_cert_der, nxt_enc_der, nxt.cert_der]
    # Issuance has not switched yet.
    assert (await _enroll(client, store, old.encryption_cert, device_key, "still-old")).issuer == old.cert.subject
    await store.close()  # type: ignore[attr-defined]

    retired, new = activate_next(data, None)
    assert retired.fingerprint_sha256 == old.fingerprint_sha256 and new.fingerprint_sha256 == nxt.fingerprint_sha256
    client, store = await _app(data, aiohttp_client)
    new_cert = await _enroll(client, store, new.encryption_cert, device_key, "after")
    new_cert.verify_directly_issued_by(new.cert)
    old_cert.verify_directly_issued_by(old.cert)
    # The old CA's certificate is still answered for: OCSP good, then revoked, and its CRL lists it.
    assert (await _ocsp(client, old_cert, old.cert)).certificate_status is ocsp.OCSPCertStatus.GOOD
    await store.revoke_certificate(  # type: ignore[attr-defined]
        format(old_cert.serial_number, "x"), "keyCompromise", dt.datetime.now(dt.UTC)
    )
    answer = await _ocsp(client, old_cert, old.cert)
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert answer.signature_hash_algorithm is not None
    old.cert.public_key().verify(  # type: ignore[call-arg]
        answer.signature,
        answer.tbs_response_bytes,
        __import__("cryptography.hazmat.primitives.asymmetric.padding", fromlist=["PKCS1v15"]).PKCS1v15(),
        answer.signature_hash_algorithm,
    )
    crl = x509.load_der_x509_crl(await (await client.get(f"/crl/{ca_id(old)}.crl")).read())
    assert crl.is_signature_valid(old.cert.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(old_cert.serial_number) is not None
    current_crl = x509.load_der_x509_crl(await (await client.get("/crl/ca.crl")).read())
    assert current_crl.is_signature_valid(new.cert.public_key())  # type: ignore[arg-type]
    assert (await client.get("/crl/0000000000000000.crl")).status == 404
    await store.close()  # type: ignore[attr-defined]


def next_ca_certificates(body: bytes, current_ra: x509.Certificate) -> list[bytes]:
    """The certificates inside GetNextCACert's answer, after checking it is signed by the current RA."""
    info = cms.ContentInfo.load(body)
    sd = info["content"]
    inner = sd["encap_content_info"]["content"].native
    signer_info = sd["signer_infos"][0]
    attrs = {a["type"].native: a["values"][0].native for a in signer_info["signed_attrs"]}
    assert attrs["message_digest"] == hashlib.sha256(inner).digest()
    public = current_ra.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(
        signer_info["signature"].native,
        encode_tlv(0x31, signer_info["signed_attrs"].contents),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    bag = cms.ContentInfo.load(inner)["content"]
    return [c.chosen.dump() for c in bag["certificates"]]
