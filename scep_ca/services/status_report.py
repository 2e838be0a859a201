"""``scep-ca status``: what expires when, and whether anything needs action within 30 days.

The facts come from the CA files, the store (one aggregate count) and the CRL the server
serves (fetched by the caller, which owns the transport). Rendering is the CLI's job.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.pki.ca_set import CASet
from scep_ca.pki.ra_renewal import ra_certificates
from scep_ca.services.expiry import ACTION_DAYS, EXPIRING_WITHIN, ca_warning, days_left, ra_warnings, read_counts
from store.base import CertificateStatsStore, IntegrationStore


@dataclass(frozen=True)
class CertFacts:
    role: str  # "CA", "next CA", "RA signing", "RA encryption", "RA combined", "previous RA"
    subject: str
    serial: str
    not_after: str
    days_left: int


@dataclass(frozen=True)
class CrlFacts:
    """The CRL as the server serves it; ``error`` when it could not be fetched."""

    number: int | None = None
    next_update: str | None = None
    days_left: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class IntegrationFacts:
    id: str
    name: str
    deleted: bool
    valid: int
    revoked: int
    expiring_7d: int
    expiring_30d: int


@dataclass
class StatusReport:
    certificates: list[CertFacts]
    crl: CrlFacts
    integrations: list[IntegrationFacts]
    warnings: list[str] = field(default_factory=list)
    # Something needs the operator within ACTION_DAYS (``status`` exits 1).
    action_needed: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def crl_facts(der: bytes, now: dt.datetime, ca: x509.Certificate) -> CrlFacts:
    """What ``der`` says, once its signature verifies with the CA's key (it may come over any channel)."""
    crl = x509.load_der_x509_crl(der)
    public = ca.public_key()
    if not isinstance(public, rsa.RSAPublicKey) or not crl.is_signature_valid(public):
        return CrlFacts(error="the CRL the server serves is not signed by the current CA")
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    next_update = crl.next_update_utc
    if next_update is None:
        return CrlFacts(number=number)
    left = round((next_update - now) / dt.timedelta(days=1), 2)
    return CrlFacts(number, next_update.isoformat(), left)


def _facts(role: str, cert: x509.Certificate, now: dt.datetime) -> CertFacts:
    return CertFacts(
        role,
        cert.subject.rfc4514_string(),
        f"{cert.serial_number:x}",
        cert.not_valid_after_utc.isoformat(),
        days_left(cert.not_valid_after_utc, now),
    )


class StatusStore(CertificateStatsStore, IntegrationStore, Protocol):
    """The store roles ``status`` reads."""


async def build_status(
    store: StatusStore,
    cas: CASet,
    crl: CrlFacts,
    now: dt.datetime,
    renew_before_days: int,
) -> StatusReport:
    current = cas.current
    certs = [_facts("CA", current.cert, now)]
    if cas.next is not None:
        certs.append(_facts("next CA", cas.next.cert, now))
    certs += [_facts(f"RA {ra.usage}", ra.cert, now) for ra in ra_certificates(current)]
    certs += [_facts("previous RA", cert, now) for cert, _ in current.previous_decryption]
    integrations = await _integrations(store, now)
    report = StatusReport(certs, crl, integrations)
    warning = ca_warning(current, now)
    if warning is not None:
        report.warnings.append(warning)
        report.action_needed |= days_left(current.cert.not_valid_after_utc, now) < ACTION_DAYS
    for problem in ra_warnings(current, now, renew_before_days):
        report.warnings.append(problem)
        report.action_needed = True
    if crl.error is not None:
        report.warnings.append(f"the CRL could not be fetched from the server: {crl.error}")
        report.action_needed = True
    elif crl.days_left is not None and crl.days_left < 0:
        report.warnings.append("the CRL's nextUpdate has passed: relying parties treat revocation as unknown")
        report.action_needed = True
    return report


async def _integrations(store: StatusStore, now: dt.datetime) -> list[IntegrationFacts]:
    counts = {row.integration_id: row for row in await read_counts(store, now)}
    within = list(EXPIRING_WITHIN)
    facts = []
    for integration in await store.list_integrations(include_deleted=True):
        row = counts.get(integration.id)
        expiring = dict(zip(within, row.expiring, strict=True)) if row is not None else {}
        facts.append(
            IntegrationFacts(
                integration.id,
                integration.name,
                integration.deleted,
                row.valid if row is not None else 0,
                row.revoked if row is not None else 0,
                expiring.get("7d", 0),
                expiring.get("30d", 0),
            )
        )
    return facts
