"""RFC 8894 beyond PKCSReq: RenewalReq, PENDING and CertPoll, GetCert, GetCRL (real store, real app)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.pki.issue import Profile, random_serial
from scep_ca.pki.records import CertificateRecord, CertStatus, Transaction, TransactionStatus
from scep_ca.protocol.client import (
    Reply,
    build_csr,
    build_request,
    issuer_and_serial_of,
    issuer_and_subject,
    open_reply,
    self_signed_signer,
)
from scep_ca.protocol.csr import spki_sha256
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import FailInfo, MessageType, PKIStatus
from scep_ca.protocol.errors import BadRequest
from scep_ca.services.enrollment import Enroller, Requester
from scep_ca.services.validators.registry import Validators
from scep_ca.services.wiring import enroller_for
from store.base import CertificateFilter, IssuanceRequest
from tests.integration.conftest import Server, ServerFactory
from tests.issued import issue_certificate


async def _send(server: Server, der: bytes, integration_id: str | None = None) -> bytes:
    resp = await server.client.post(f"{server.url(integration_id)}?operation=PKIOperation", data=der)
    assert resp.status == 200
    return await resp.read()


async def _message(
    server: Server,
    payload: bytes,
    signer: x509.Certificate,
    key: rsa.RSAPrivateKey,
    kind: MessageType,
    tid: str,
    integration_id: str | None = None,
) -> Reply:
    req = build_request(
        payload,
        signer_cert=signer,
        signer_key=key,
        recipient=server.ca.encryption_cert,
        transaction_id=tid,
        message_type=kind,
    )
    return open_reply(await _send(server, req.der, integration_id), signer, key)


async def _enroll(
    server: Server, key: rsa.RSAPrivateKey, tid: str, cn: str = "alice"
) -> tuple[Reply, x509.Certificate]:
    signer = self_signed_signer(key)
    csr = build_csr(key, parse_dn(f"CN={cn},O=Example"), await server.challenge())
    return await _message(server, csr, signer, key, MessageType.PKCS_REQ, tid), signer


async def _set(server: Server, **changes: object) -> None:
    """Recreate the main integration's row with new flags (tests only; the CLI has no such edit)."""
    store = server.store
    integration = await store.get_integration(server.integration.id)
    assert integration is not None
    fresh = dataclasses.replace(integration, id=integration.id + "x", username=integration.username + "x", **changes)
    await store.create_integration(fresh)
    server.integration = fresh


# --- GetCRL / GetCert ------------------------------------------------------------------------


async def test_get_crl_returns_the_current_crl(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    reply, _ = await _enroll(server, device_key, "crl-1")
    cert = reply.certificates[0]
    payload = issuer_and_serial_of(cert.issuer, cert.serial_number)
    got = await _message(server, payload, cert, device_key, MessageType.GET_CRL, "crl-2")
    assert got.status is PKIStatus.SUCCESS and len(got.crls) == 1
    crl = got.crls[0]
    assert crl.is_signature_valid(server.ca.cert.public_key())  # type: ignore[arg-type]
    assert crl.issuer == server.ca.cert.subject


async def test_get_cert_by_issuer_and_serial(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    reply, signer = await _enroll(server, device_key, "gc-1")
    cert = reply.certificates[0]
    got = await _message(
        server, issuer_and_serial_of(cert.issuer, cert.serial_number), signer, device_key, MessageType.GET_CERT, "gc-2"
    )
    assert got.status is PKIStatus.SUCCESS and got.certificates == [cert]


@pytest.mark.parametrize("case", ["unknown-serial", "other-issuer", "other-integration"])
async def test_get_cert_unknown_is_bad_cert_id(server: Server, device_key: rsa.RSAPrivateKey, case: str) -> None:
    reply, signer = await _enroll(server, device_key, "gc-3")
    cert = reply.certificates[0]
    issuer, serial, target = cert.issuer, cert.serial_number, None
    if case == "unknown-serial":
        serial += 1
    elif case == "other-issuer":
        issuer = parse_dn("CN=Someone Else")
    else:
        target = server.other.id
    got = await _message(
        server, issuer_and_serial_of(issuer, serial), signer, device_key, MessageType.GET_CERT, "gc-4", target
    )
    assert (got.status, got.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_CERT_ID)


# --- RenewalReq ------------------------------------------------------------------------------


async def _renew(
    server: Server, old: x509.Certificate, old_key: rsa.RSAPrivateKey, tid: str, cn: str = "alice"
) -> Reply:
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = build_csr(new_key, parse_dn(f"CN={cn},O=Example"), None)
    return await _message(server, csr, old, old_key, MessageType.RENEWAL_REQ, tid)


async def test_renewal_inside_the_window_keeps_the_old_certificate(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey
) -> None:
    server = await make_server(**{"scep.renewal_days": 400})
    first, _ = await _enroll(server, device_key, "rn-1")
    old = first.certificates[0]
    count = await server.cert_count()
    renewed = await _renew(server, old, device_key, "rn-2")
    assert renewed.status is PKIStatus.SUCCESS
    new = renewed.certificates[0]
    assert new.serial_number != old.serial_number and new.subject == old.subject
    assert await server.cert_count() == count + 1
    record = await server.store.get_certificate(format(old.serial_number, "x"))
    assert record is not None and record.status is CertStatus.ISSUED
    assert "Renewal" in (await (await server.client.get(f"{server.url()}?operation=GetCACaps")).text()).split()


async def test_renewal_revokes_superseded_when_the_integration_says_so(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey
) -> None:
    server = await make_server(**{"scep.renewal_days": 400})
    await _set(server, revoke_superseded=True)
    first, _ = await _enroll(server, device_key, "rs-1")
    old = first.certificates[0]
    assert (await _renew(server, old, device_key, "rs-2")).status is PKIStatus.SUCCESS
    record = await server.store.get_certificate(format(old.serial_number, "x"))
    assert record is not None and record.status is CertStatus.REVOKED and record.revocation_reason == "superseded"


async def test_renewal_before_the_window_is_bad_request(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    first, _ = await _enroll(server, device_key, "rw-1")
    count = await server.cert_count()
    got = await _renew(server, first.certificates[0], device_key, "rw-2")
    assert (got.status, got.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert got.fail_text and "renewal opens" in got.fail_text
    assert await server.cert_count() == count


async def test_renewal_signed_by_a_revoked_certificate(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey
) -> None:
    server = await make_server(**{"scep.renewal_days": 400})
    first, _ = await _enroll(server, device_key, "rr-1")
    old = first.certificates[0]
    await server.store.revoke_certificate(format(old.serial_number, "x"), "keyCompromise", dt.datetime.now(dt.UTC))
    got = await _renew(server, old, device_key, "rr-2")
    assert (got.status, got.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert got.fail_text and "revoked" in got.fail_text


async def test_renewal_signed_by_a_foreign_certificate(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey
) -> None:
    server = await make_server(**{"scep.renewal_days": 400})
    got = await _renew(server, self_signed_signer(device_key), device_key, "rf-1")
    assert (got.status, got.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert await server.cert_count() == 0


async def test_renewal_signed_by_an_expired_certificate(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey
) -> None:
    server = await make_server(**{"scep.renewal_days": 400})
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    serial = random_serial()
    old = issue_certificate(
        server.ca,
        subject=parse_dn("CN=alice,O=Example"),
        public_key=device_key.public_key(),
        sans=(),
        profile=Profile(10),
        serial=serial,
        now=past,
    )
    record = CertificateRecord(
        serial=format(serial, "x"),
        integration_id=server.integration.id,
        issuer_fingerprint=server.ca.fingerprint_sha256,
        subject="CN=alice,O=Example",
        not_before=old.not_valid_before_utc,
        not_after=old.not_valid_after_utc,
        der=old.public_bytes(serialization.Encoding.DER),
        transaction_id="old",
        pubkey_sha256="0" * 64,
        message_type=19,
    )
    await server.store.record_issuance(IssuanceRequest(record, None, past))
    got = await _renew(server, old, device_key, "re-1")
    assert (got.status, got.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert got.fail_text and "expired" in got.fail_text


async def test_renewal_with_a_certificate_of_another_integration(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey
) -> None:
    server = await make_server(**{"scep.renewal_days": 400})
    first, _ = await _enroll(server, device_key, "ro-1")
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = build_csr(new_key, parse_dn("CN=alice,O=Example"), None)
    got = await _message(
        server, csr, first.certificates[0], device_key, MessageType.RENEWAL_REQ, "ro-2", server.other.id
    )
    assert (got.status, got.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)


# --- PENDING, approval, CertPoll -------------------------------------------------------------


async def _pending_request(server: Server, key: rsa.RSAPrivateKey, tid: str) -> tuple[Reply, x509.Certificate]:
    await _set(server, require_approval=True)
    return await _enroll(server, key, tid)


async def _poll(server: Server, signer: x509.Certificate, key: rsa.RSAPrivateKey, tid: str) -> Reply:
    payload = issuer_and_subject(server.ca.cert.subject, parse_dn("CN=alice,O=Example"))
    return await _message(server, payload, signer, key, MessageType.CERT_POLL, tid)


def _enroller(server: Server, now: dt.datetime | None = None) -> Enroller:
    validators = Validators(server.config.intune, server.config.webhook, None, server.ca.cert.subject.rfc4514_string())
    return enroller_for(server.config, server.store, server.ca, validators, lambda: now or dt.datetime.now(dt.UTC))


async def test_pending_then_approved(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    first, signer = await _pending_request(server, device_key, "pa-1")
    assert first.status is PKIStatus.PENDING and first.certificates == []
    assert (await _poll(server, signer, device_key, "pa-1")).status is PKIStatus.PENDING
    assert await server.cert_count() == 0
    record = await _enroller(server).approve(server.integration.id, "pa-1")
    polled = await _poll(server, signer, device_key, "pa-1")
    assert polled.status is PKIStatus.SUCCESS
    assert format(polled.certificates[0].serial_number, "x") == record.serial


async def test_pending_then_rejected(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    _, signer = await _pending_request(server, device_key, "pr-1")
    await _enroller(server).reject(server.integration.id, "pr-1")
    polled = await _poll(server, signer, device_key, "pr-1")
    assert (polled.status, polled.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert polled.fail_text and "rejected" in polled.fail_text
    assert await server.cert_count() == 0


async def test_pending_expires(make_server: ServerFactory, device_key: rsa.RSAPrivateKey) -> None:
    server = await make_server(**{"scep.pending_expiry_hours": 1})
    _, signer = await _pending_request(server, device_key, "pe-1")
    who = Requester("pe-1", MessageType.CERT_POLL, signer, None, None)
    # An hour and a minute later, as the enroller's clock sees it.
    later = _enroller(server, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=61))
    with pytest.raises(BadRequest, match="expired"):
        await later.cert_poll(server.integration, who)
    assert (await _enroller(server).cert_poll(server.integration, who)).status is PKIStatus.PENDING


async def test_poll_with_another_key_is_bad_request(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    await _pending_request(server, device_key, "pk-1")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    polled = await _poll(server, self_signed_signer(other), other, "pk-1")
    assert (polled.status, polled.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)


async def test_poll_unknown_transaction(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    polled = await _poll(server, self_signed_signer(device_key), device_key, "nope")
    assert (polled.status, polled.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)


async def test_resent_pending_request_stays_pending(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    await _set(server, require_approval=True)
    signer = self_signed_signer(device_key)
    csr = build_csr(device_key, parse_dn("CN=alice,O=Example"), await server.challenge())
    for _ in range(2):
        got = await _message(server, csr, signer, device_key, MessageType.PKCS_REQ, "pp-1")
        assert got.status is PKIStatus.PENDING


async def test_renewal_reusing_the_enrollment_transaction_id_is_a_new_transaction(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey
) -> None:
    """scepclient derives the transactionID from the key: its RenewalReq reuses the PKCSReq's ID."""
    server = await make_server(**{"scep.renewal_days": 400})
    first, _ = await _enroll(server, device_key, "same-tid")
    old = first.certificates[0]
    csr = build_csr(device_key, parse_dn("CN=alice,O=Example"), None)
    renewed = await _message(server, csr, old, device_key, MessageType.RENEWAL_REQ, "same-tid")
    assert renewed.status is PKIStatus.SUCCESS
    assert renewed.certificates[0].serial_number != old.serial_number
    record = await server.store.get_certificate(format(renewed.certificates[0].serial_number, "x"))
    assert record is not None and record.message_type == MessageType.RENEWAL_REQ
    again = await _message(server, csr, old, device_key, MessageType.RENEWAL_REQ, "same-tid")
    assert again.certificates[0].serial_number == renewed.certificates[0].serial_number, "a resend"
    assert await server.cert_count() == 2


async def test_renewal_reusing_the_transaction_id_still_checks_the_window(
    server: Server, device_key: rsa.RSAPrivateKey
) -> None:
    first, _ = await _enroll(server, device_key, "same-tid-2")
    csr = build_csr(device_key, parse_dn("CN=alice,O=Example"), None)
    got = await _message(server, csr, first.certificates[0], device_key, MessageType.RENEWAL_REQ, "same-tid-2")
    assert (got.status, got.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert got.fail_text and "renewal opens" in got.fail_text


async def test_pkcs_req_signed_by_our_certificate_renews_without_a_challenge(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey
) -> None:
    """certmonger re-keys with a PKCSReq signed by the old certificate and its used challenge."""
    server = await make_server(**{"scep.renewal_days": 400})
    challenge = await server.challenge()
    signer = self_signed_signer(device_key)
    csr = build_csr(device_key, parse_dn("CN=alice,O=Example"), challenge)
    first = await _message(server, csr, signer, device_key, MessageType.PKCS_REQ, "ck-1")
    old = first.certificates[0]
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rekey = build_csr(new_key, parse_dn("CN=alice,O=Example"), challenge)  # the used challenge again
    got = await _message(server, rekey, old, device_key, MessageType.PKCS_REQ, "ck-2")
    assert got.status is PKIStatus.SUCCESS and got.certificates[0].serial_number != old.serial_number
    record = await server.store.get_certificate(format(got.certificates[0].serial_number, "x"))
    assert record is not None and record.message_type == MessageType.RENEWAL_REQ
    # A self-signed signer with the same used challenge is still refused.
    other = await _message(server, rekey, self_signed_signer(new_key), new_key, MessageType.PKCS_REQ, "ck-3")
    assert (other.status, other.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)


# --- Renewal rules (threat model: a certificate holder renews that identity, once) ---------------

IDENTITY_CHANGED = "a renewal must keep the certificate's subject and subjectAltName"
ALREADY_RENEWED = "this certificate has already been renewed"


async def _state(server: Server) -> tuple[list[CertificateRecord], list[Transaction]]:
    """What a refused renewal must leave unchanged: every certificate and every transaction."""
    store = server.store
    return list(await store.list_certificates(CertificateFilter())), list(await store.list_transactions())


def _csr(key: rsa.RSAPrivateKey, cn: str, challenge: str | None, sans: tuple[str, ...] = ()) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(parse_dn(f"CN={cn},O=Example"))
    if challenge is not None:
        builder = builder.add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    if sans:
        san = x509.SubjectAlternativeName([x509.RFC822Name(s) for s in sans])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def _renewal_server(make_server: ServerFactory, **flags: object) -> Server:
    server = await make_server(**{"scep.renewal_days": 400})
    if flags:
        await _set(server, **flags)
    return server


async def _refused(server: Server, got: Reply, before: object, text: str) -> None:
    assert (got.status, got.fail_info, got.fail_text) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST, text)
    assert await _state(server) == before


@pytest.mark.parametrize("kind", [MessageType.RENEWAL_REQ, MessageType.PKCS_REQ])
async def test_renewal_for_another_subject_is_refused(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey, kind: MessageType
) -> None:
    """alice's certificate signs a request for CN=bob: a RenewalReq with no challenge, or the
    certmonger re-key path (a PKCSReq signed by our certificate) with a bogus challenge."""
    server = await _renewal_server(make_server)
    first, _ = await _enroll(server, device_key, "id-1")
    alice = first.certificates[0]
    before = await _state(server)
    challenge = "bogus" if kind is MessageType.PKCS_REQ else None
    for n, cn in enumerate(("bob", "alice2", "Alice")):
        got = await _message(server, _csr(_new_key(), cn, challenge), alice, device_key, kind, f"id-2-{n}")
        await _refused(server, got, before, IDENTITY_CHANGED)
    # The same certificate still renews its own identity.
    own = await _message(server, _csr(_new_key(), "alice", challenge), alice, device_key, kind, "id-3")
    assert own.status is PKIStatus.SUCCESS and own.certificates[0].subject == alice.subject


@pytest.mark.parametrize("sans", [("bob@example.com",), (), ("alice@example.com", "bob@example.com")])
async def test_renewal_that_changes_the_sans_is_refused(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey, sans: tuple[str, ...]
) -> None:
    server = await _renewal_server(make_server, allowed_san_types=("rfc822Name",))
    signer = self_signed_signer(device_key)
    csr = _csr(device_key, "alice", await server.challenge(), ("alice@example.com",))
    alice = (await _message(server, csr, signer, device_key, MessageType.PKCS_REQ, "san-1")).certificates[0]
    before = await _state(server)
    got = await _message(
        server, _csr(_new_key(), "alice", None, sans), alice, device_key, MessageType.RENEWAL_REQ, "san-2"
    )
    await _refused(server, got, before, IDENTITY_CHANGED)
    same = _csr(_new_key(), "alice", None, ("alice@example.com",))
    renewed = await _message(server, same, alice, device_key, MessageType.RENEWAL_REQ, "san-3")
    assert renewed.status is PKIStatus.SUCCESS
    ext = renewed.certificates[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert list(ext.value) == [x509.RFC822Name("alice@example.com")]


@pytest.mark.parametrize("kind", [MessageType.RENEWAL_REQ, MessageType.PKCS_REQ])
async def test_a_certificate_renews_once_but_a_resend_gets_the_same_answer(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey, kind: MessageType
) -> None:
    server = await _renewal_server(make_server)
    first, _ = await _enroll(server, device_key, "once-1")
    alice = first.certificates[0]
    challenge = "bogus" if kind is MessageType.PKCS_REQ else None
    csr = _csr(_new_key(), "alice", challenge)
    renewed = await _message(server, csr, alice, device_key, kind, "once-2")
    assert renewed.status is PKIStatus.SUCCESS
    new = renewed.certificates[0]
    before = await _state(server)
    for refused_kind in (MessageType.RENEWAL_REQ, MessageType.PKCS_REQ):
        again = await _message(server, _csr(_new_key(), "alice", challenge), alice, device_key, refused_kind, "once-3")
        await _refused(server, again, before, ALREADY_RENEWED)
    old = await server.store.get_certificate(format(alice.serial_number, "x"))
    assert old is not None and old.superseded_by == format(new.serial_number, "x")
    resent = await _message(server, csr, alice, device_key, kind, "once-2")
    assert resent.status is PKIStatus.SUCCESS and resent.certificates == [new]
    assert await _state(server) == before


async def test_the_renewed_certificate_renews_in_turn(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey
) -> None:
    server = await _renewal_server(make_server)
    first, _ = await _enroll(server, device_key, "turn-1")
    key2 = _new_key()
    second = await _message(
        server, _csr(key2, "alice", None), first.certificates[0], device_key, MessageType.RENEWAL_REQ, "turn-2"
    )
    third = await _message(
        server, _csr(_new_key(), "alice", None), second.certificates[0], key2, MessageType.RENEWAL_REQ, "turn-3"
    )
    assert third.status is PKIStatus.SUCCESS and await server.cert_count() == 3


async def test_renewal_with_approval_goes_pending_then_approve(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey
) -> None:
    server = await _renewal_server(make_server, require_approval=True)
    assert (await _enroll(server, device_key, "ap-1"))[0].status is PKIStatus.PENDING
    enroller = _enroller(server)
    alice = x509.load_der_x509_certificate((await enroller.approve(server.integration.id, "ap-1")).der)
    key = _new_key()
    csr = _csr(key, "alice", None)
    count = await server.cert_count()
    got = await _message(server, csr, alice, device_key, MessageType.RENEWAL_REQ, "ap-2")
    assert got.status is PKIStatus.PENDING and await server.cert_count() == count
    old = await server.store.get_certificate(format(alice.serial_number, "x"))
    assert old is not None and old.superseded_by is None
    # Polls signed with the renewed certificate (as the request was) or with the new key.
    poll_payload = issuer_and_subject(server.ca.cert.subject, alice.subject)
    polled = await _message(server, poll_payload, alice, device_key, MessageType.CERT_POLL, "ap-2")
    assert polled.status is PKIStatus.PENDING
    record = await enroller.approve(server.integration.id, "ap-2")
    old = await server.store.get_certificate(format(alice.serial_number, "x"))
    assert old is not None and old.superseded_by == record.serial
    for signer, signer_key in ((alice, device_key), (self_signed_signer(key), key)):
        polled = await _message(server, poll_payload, signer, signer_key, MessageType.CERT_POLL, "ap-2")
        assert polled.status is PKIStatus.SUCCESS and format(polled.certificates[0].serial_number, "x") == record.serial
    before = await _state(server)
    again = await _message(server, _csr(_new_key(), "alice", None), alice, device_key, MessageType.RENEWAL_REQ, "ap-3")
    await _refused(server, again, before, ALREADY_RENEWED)


@pytest.mark.parametrize("meanwhile", ["revoked", "renewed"])
async def test_approval_refused_when_the_certificate_was_revoked_or_renewed_meanwhile(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey, meanwhile: str
) -> None:
    server = await _renewal_server(make_server, require_approval=True)
    await _enroll(server, device_key, "am-1")
    enroller = _enroller(server)
    alice = x509.load_der_x509_certificate((await enroller.approve(server.integration.id, "am-1")).der)
    got = await _message(server, _csr(_new_key(), "alice", None), alice, device_key, MessageType.RENEWAL_REQ, "am-2")
    assert got.status is PKIStatus.PENDING
    if meanwhile == "revoked":
        await server.store.revoke_certificate(
            format(alice.serial_number, "x"), "keyCompromise", dt.datetime.now(dt.UTC)
        )
    else:
        # Renewed at once, as by a worker that saw the integration with approval turned off.
        unapproved = dataclasses.replace(server.integration, require_approval=False)
        checked = enroller.check(unapproved, _csr(_new_key(), "alice", None))
        who = Requester("am-3", MessageType.RENEWAL_REQ, alice, None, None)
        assert (await enroller.renewal_req(unapproved, checked, who)).status is PKIStatus.SUCCESS
    before = await _state(server)
    with pytest.raises(BadRequest, match=meanwhile):
        await enroller.approve(server.integration.id, "am-2")
    assert await _state(server) == before


async def test_renewal_of_a_queued_renewal_is_checked_again_at_approval(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey
) -> None:
    """Two queued renewals of one certificate (one of them expired for its client, which the operator
    can still approve): the store lets exactly one be approved."""
    server = await _renewal_server(make_server, require_approval=True)
    await _enroll(server, device_key, "aq-1")
    enroller = _enroller(server)
    alice = x509.load_der_x509_certificate((await enroller.approve(server.integration.id, "aq-1")).der)
    expired = dt.datetime.now(dt.UTC) - dt.timedelta(hours=server.config.scep.pending_expiry_hours + 1)
    key = _new_key()
    queued_long_ago = Transaction(
        integration_id=server.integration.id,
        transaction_id="aq-3",
        pubkey_sha256=spki_sha256(key.public_key()),
        status=TransactionStatus.PENDING,
        created_at=expired,
        message_type=MessageType.RENEWAL_REQ,
        csr_der=_csr(key, "alice", None),
        renews=format(alice.serial_number, "x"),
    )
    await server.store.record_pending(queued_long_ago, None, expired)
    got = await _message(server, _csr(_new_key(), "alice", None), alice, device_key, MessageType.RENEWAL_REQ, "aq-2")
    assert got.status is PKIStatus.PENDING
    results = await asyncio.gather(
        *(enroller.approve(server.integration.id, tid) for tid in ("aq-2", "aq-3")), return_exceptions=True
    )
    assert sum(isinstance(r, CertificateRecord) for r in results) == 1
    assert sum(isinstance(r, BadRequest) for r in results) == 1


RENEWAL_PENDING = "a renewal of this certificate is already waiting for approval"


@pytest.mark.parametrize("kind", [MessageType.RENEWAL_REQ, MessageType.PKCS_REQ])
async def test_one_pending_renewal_per_certificate(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey, kind: MessageType
) -> None:
    """A second renewal signed by the same certificate, while one waits for approval, is refused;
    a resend of the waiting one still gets PENDING."""
    server = await _renewal_server(make_server, require_approval=True)
    await _enroll(server, device_key, "op-1")
    enroller = _enroller(server)
    alice = x509.load_der_x509_certificate((await enroller.approve(server.integration.id, "op-1")).der)
    challenge = "bogus" if kind is MessageType.PKCS_REQ else None
    csr = _csr(_new_key(), "alice", challenge)
    assert (await _message(server, csr, alice, device_key, kind, "op-2")).status is PKIStatus.PENDING
    before = await _state(server)
    for refused_kind in (MessageType.RENEWAL_REQ, MessageType.PKCS_REQ):
        refused_csr = _csr(_new_key(), "alice", "bogus" if refused_kind is MessageType.PKCS_REQ else None)
        again = await _message(server, refused_csr, alice, device_key, refused_kind, f"op-3-{int(refused_kind)}")
        await _refused(server, again, before, RENEWAL_PENDING)
    resent = await _message(server, csr, alice, device_key, kind, "op-2")
    assert resent.status is PKIStatus.PENDING
    assert await _state(server) == before
    # Once it is resolved, the certificate can queue a renewal again.
    await enroller.reject(server.integration.id, "op-2")
    retry = await _message(server, _csr(_new_key(), "alice", challenge), alice, device_key, kind, "op-4")
    assert retry.status is PKIStatus.PENDING


async def test_concurrent_renewals_with_approval_queue_exactly_one(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey
) -> None:
    server = await _renewal_server(make_server, require_approval=True)
    await _enroll(server, device_key, "cr-1")
    alice = x509.load_der_x509_certificate((await _enroller(server).approve(server.integration.id, "cr-1")).der)
    csrs = [_csr(_new_key(), "alice", None) for _ in range(6)]
    replies = await asyncio.gather(
        *(
            _message(server, csr, alice, device_key, MessageType.RENEWAL_REQ, f"cr-{n + 2}")
            for n, csr in enumerate(csrs)
        )
    )
    statuses = [(r.status, r.fail_info, r.fail_text) for r in replies]
    assert statuses.count((PKIStatus.PENDING, None, None)) == 1
    assert statuses.count((PKIStatus.FAILURE, FailInfo.BAD_REQUEST, RENEWAL_PENDING)) == 5
    queued = await server.store.list_transactions(TransactionStatus.PENDING)
    assert [t.renews for t in queued] == [format(alice.serial_number, "x")]


@pytest.mark.parametrize("kind", [MessageType.RENEWAL_REQ, MessageType.PKCS_REQ])
async def test_renewal_signed_by_a_revoked_certificate_changes_nothing(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey, kind: MessageType
) -> None:
    server = await _renewal_server(make_server)
    first, _ = await _enroll(server, device_key, "rv-1")
    alice = first.certificates[0]
    await server.store.revoke_certificate(format(alice.serial_number, "x"), "keyCompromise", dt.datetime.now(dt.UTC))
    before = await _state(server)
    challenge = "bogus" if kind is MessageType.PKCS_REQ else None
    got = await _message(server, _csr(_new_key(), "alice", challenge), alice, device_key, kind, "rv-2")
    await _refused(server, got, before, "the certificate to renew is revoked")


@pytest.mark.parametrize("kind", [MessageType.RENEWAL_REQ, MessageType.PKCS_REQ])
async def test_renewal_under_a_deleted_integration_changes_nothing(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey, kind: MessageType
) -> None:
    server = await _renewal_server(make_server)
    first, _ = await _enroll(server, device_key, "del-1")
    alice = first.certificates[0]
    await server.store.delete_integration(server.integration.id, dt.datetime.now(dt.UTC))
    before = await _state(server)
    challenge = "bogus" if kind is MessageType.PKCS_REQ else None
    got = await _message(server, _csr(_new_key(), "alice", challenge), alice, device_key, kind, "del-2")
    await _refused(server, got, before, "this integration has been deleted")
