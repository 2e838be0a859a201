"""``scep-ca audit replay``: put back what a lost host did after its last backup, from the audit
events it shipped off the host (``scep-ca audit export`` lines).

Every event must carry a MAC that verifies under the restored audit key and continue its chain
where the restored log ends (or start a new one at seq 1): a file that fails either is refused
whole, before anything is written. Each event is then written back verbatim (same writer, seq
and MAC, so ``audit verify`` passes over the joined chains) in the transaction of the row it
describes: ``scep.issued``/``scep.renewed``/``scep.approved`` insert the certificate they carry,
``cert.revoked`` revokes it. Events already in the restored log are skipped, so a replay can be
repeated.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from audit import encoding
from audit.encoding import GENESIS, MacKey
from audit.events import Event
from scep_ca.pki.records import CertificateRecord
from scep_ca.protocol.enums import MessageType
from scep_ca.services.backup.crypt import BackupError
from store.base import AuditRecord, DuplicateSerial, DuplicateTransaction, IntegrationNotFound, IssuanceRequest, Store

_ISSUING = {Event.CERT_ISSUED.value, Event.CERT_RENEWED.value, Event.REQUEST_APPROVED.value}


@dataclass
class ReplayResult:
    events: int = 0  # written back
    certificates: int = 0
    revocations: int = 0
    not_restorable: int = 0  # a certificate of an integration the restored store does not have


def parse_export(lines: Iterable[str]) -> list[AuditRecord]:
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            at = datetime.fromisoformat(raw["time"])
            records.append(
                AuditRecord(
                    str(raw["writer"]),
                    int(raw["seq"]),
                    at if at.tzinfo else at.replace(tzinfo=UTC),
                    str(raw["actor"]),
                    str(raw["event"]),
                    str(raw["object"]),
                    dict(raw["details"]),
                    str(raw["prev_mac"]),
                    str(raw["mac"]),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"line {number}: not an exported audit event ({type(exc).__name__})") from exc
    return records


def check_events(
    key: MacKey, records: Sequence[AuditRecord], heads: Mapping[str, tuple[int, str]]
) -> list[AuditRecord]:
    """The records not yet in the log, each proven authentic and continuing its chain."""
    fresh = []
    by_writer: dict[str, list[AuditRecord]] = {}
    for record in records:
        if encoding.mac_of(key, record) != record.mac:
            raise BackupError(
                f"{record.writer}#{record.seq} ({record.event}): its MAC does not verify under the restored"
                " audit key; nothing replayed"
            )
        by_writer.setdefault(record.writer, []).append(record)
    for writer, chain in by_writer.items():
        seq, mac = heads.get(writer, (0, GENESIS))
        for record in sorted(chain, key=lambda r: r.seq):
            if record.seq <= seq:
                continue
            if record.seq != seq + 1 or record.prev_mac != mac:
                raise BackupError(
                    f"{writer}#{record.seq}: does not continue its chain (the log holds #{seq}); an event is"
                    " missing from the file; nothing replayed"
                )
            fresh.append(record)
            seq, mac = record.seq, record.mac
    return sorted(fresh, key=lambda r: (r.at, r.writer, r.seq))


def _issuer_fingerprint(cert: x509.Certificate, issuers: Sequence[x509.Certificate]) -> str:
    for ca in issuers:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca.fingerprint(hashes.SHA256()).hex()
    raise BackupError(f"certificate {cert.serial_number:x}: issued by no CA of the restored data directory")


def _record(event: AuditRecord, issuers: Sequence[x509.Certificate]) -> CertificateRecord:
    der = base64.b64decode(str(event.details["certificate"]))
    cert = x509.load_der_x509_certificate(der)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    serial = format(cert.serial_number, "x")
    message_type = event.details.get("message_type", MessageType.PKCS_REQ)
    return CertificateRecord(
        serial=serial,
        integration_id=str(event.details["integration"]),
        issuer_fingerprint=_issuer_fingerprint(cert, issuers),
        subject=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        der=der,
        transaction_id=str(event.details.get("transaction_id") or f"replayed-{serial}"),
        pubkey_sha256=hashlib.sha256(spki).hexdigest(),
        message_type=int(message_type) if isinstance(message_type, int) else int(MessageType.PKCS_REQ),
        requester_address=_text(event.details.get("address")),
        user_agent=_text(event.details.get("user_agent")),
        created_at=event.at,
    )


def ca_certificates(data_dir: Path) -> list[x509.Certificate]:
    """Every CA certificate in the data directory (the current CA, a next one, retired ones)."""
    found = []
    for path in sorted(data_dir.rglob("*.pem")):
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                found.append(cert)
        except (ValueError, x509.ExtensionNotFound):
            continue
    return found


def _text(value: object) -> str | None:
    return None if value is None else str(value)


async def replay(store: Store, fresh: Sequence[AuditRecord], issuers: Sequence[x509.Certificate]) -> ReplayResult:
    """Write ``fresh`` (from ``check_events``) back with the rows they describe."""
    result = ReplayResult()
    for event in fresh:
        written: list[bool] = []

        def seal(
            outcome: Mapping[str, int], event: AuditRecord = event, written: list[bool] = written
        ) -> list[AuditRecord]:
            written.append(True)
            return [event]

        if event.event in _ISSUING and "certificate" in event.details:
            try:
                await store.record_issuance(IssuanceRequest(_record(event, issuers), None, event.at), audit=seal)
                result.certificates += 1
            except (DuplicateSerial, DuplicateTransaction):
                pass
            except IntegrationNotFound:
                result.not_restorable += 1
        elif event.event == Event.CERT_REVOKED and "serial" in event.details:
            reason = str(event.details.get("reason", "unspecified"))
            if await store.revoke_certificate(str(event.details["serial"]), reason, event.at, audit=seal):
                result.revocations += 1
        if not written:
            await store.append_audit(seal)
        result.events += 1
    return result
