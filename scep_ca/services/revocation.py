"""The revocation service: CRL, OCSP, status API, revocation and integration deletion.

This is the only revocation code that touches the store; the pure builders live in
``crl``, ``ocsp``, ``status`` and ``cert_format``. One instance per server process
(or CLI invocation) holds the CRL cache, so nothing here is module-level state.

CRL cache (RFC 5280 §5; regenerated after every change and before
nextUpdate): the cached DER is keyed by the store's ``revocation_epoch``, which every
revocation and deletion bumps in the same transaction, so a change made by any process
(the CLI, another worker) is served on the next fetch. The epoch is read *before* the
entries: a revocation racing with a rebuild leaves a cache keyed by the older epoch,
which the next fetch rebuilds, never a stale CRL under a new epoch. A CRL is also
rebuilt once half its validity has passed, so what is served always has at least half
of ``crl_next_update_hours`` left.

CRL shards (RFC 5280 §5.2.5; ``scep_ca.pki.crl_shards``): each shard of each CA is cached
and rebuilt the same way, under its own key, from the store's entries of that shard alone;
it carries an issuingDistributionPoint naming the URL its certificates' CDP names, built
from the same public URL and ``ca_set.crl_path``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.x509 import ocsp as x509_ocsp

from audit.events import SYSTEM, Event
from audit.service import AuditSink, Draft, NoAudit, certificate_target, integration_target
from config.clock import Clock, utc_now
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.ca_set import CASet, ca_id, crl_path
from scep_ca.pki.cert_format import record_to_dict
from scep_ca.pki.crl import build_crl
from scep_ca.pki.crl_shards import valid_shard
from scep_ca.pki.keys import KeyUnavailable
from scep_ca.pki.ocsp import (
    OcspIssuer,
    OcspRequestError,
    build_ocsp_response,
    decode_get_path,
    error_response,
    is_for_issuer,
    parse_ocsp_request,
    status_from_record,
)
from scep_ca.pki.reasons import Reason, parse_reason
from scep_ca.pki.records import CertificateRecord
from scep_ca.pki.serials import Base, candidates
from scep_ca.pki.status import VerifyStatus, serial_of_pem, verify_certificate
from store.base import CertificateStore, DeleteResult, IntegrationStore, RevocationStore, StoreUnavailable

log = logging.getLogger(__name__)


class RevocationServiceStore(IntegrationStore, CertificateStore, RevocationStore, Protocol):
    """The store roles revocation uses: deleting integrations, revoking, building CRLs."""


class AmbiguousSerial(ValueError):
    """A digits-only serial matches one certificate read as hex and another read as decimal."""

    def __init__(self, text: str, matches: list[str]) -> None:
        super().__init__(f"serial {text!r} matches {', '.join(matches)}: give it as 0x... or with --decimal")
        self.matches = matches


@dataclass(frozen=True)
class _CachedCRL:
    der: bytes
    epoch: int
    refresh_at: dt.datetime


class _IssuerState:
    """Per issuing CA: its OCSP identity and its CRL caches (the full CRL under None, each
    shard under its number)."""

    def __init__(self, ca: CAIdentity) -> None:
        self.ca = ca
        self.ocsp_issuer = OcspIssuer.of(ca)
        self.crls: dict[int | None, _CachedCRL] = {}
        # Serialises rebuilds so that concurrent fetches of a stale CRL build it once
        # (and use one CRL number) instead of once each.
        self.lock = asyncio.Lock()

    def fresh(self, shard: int | None, epoch: int, now: dt.datetime) -> bytes | None:
        cached = self.crls.get(shard)
        if cached is not None and cached.epoch == epoch and now < cached.refresh_at:
            return cached.der
        return None


class RevocationService:
    """Async revocation operations on one store, for the current CA and the previous ones.

    After a CA rollover the certificates of the previous CA stay valid until they expire,
    so their CRL (``/crl/<ca id>.crl``) and OCSP answers are still built and signed by it.
    """

    def __init__(
        self,
        store: RevocationServiceStore,
        ca: CAIdentity | CASet,
        crl_next_update_hours: float = 24,
        clock: Clock = utc_now,
        ocsp_validity: dt.timedelta = dt.timedelta(hours=1),
        audit: AuditSink | None = None,
        public_url: str | None = None,
    ) -> None:
        self._audit = audit or NoAudit()
        if crl_next_update_hours <= 0:
            raise ValueError("crl_next_update_hours must be positive")
        cas = ca if isinstance(ca, CASet) else CASet(current=ca)
        self._store = store
        self._cas = cas
        self._ca = cas.current
        self._issuers = [_IssuerState(c) for c in cas.issuers]
        self._crl_hours = crl_next_update_hours
        self._clock = clock
        # OCSP answers are computed live; a short nextUpdate bounds how long a client
        # may keep a "good" after a revocation (RFC 6960 §4.2.2.1).
        self._ocsp_validity = ocsp_validity
        # The base of the URLs certificates name: a shard's issuingDistributionPoint repeats
        # its certificates' CDP. None (the operator CLI): only full CRLs are built.
        self._public_url = public_url

    def crl_names(self) -> set[str]:
        """``ca`` (the current CA) and the id of every CA whose certificates may be in use."""
        return {"ca", *(ca_id(state.ca) for state in self._issuers)}

    def ca_certificate_der(self, name: str) -> bytes | None:
        """A CA's certificate, named like its CRL: the caIssuers target (RFC 5280 section 4.2.2.1)."""
        if name == "ca":
            return self._ca.cert_der
        ca = self._cas.by_id(name)
        return ca.cert_der if ca is not None else None

    # -- CRL ---------------------------------------------------------------------------

    def _issuer_state(self, name: str) -> _IssuerState:
        state = self._issuers[0] if name == "ca" else next((s for s in self._issuers if ca_id(s.ca) == name), None)
        if state is None:
            raise KeyError(name)
        return state

    async def current_crl(self, name: str = "ca") -> bytes:
        """The DER CRL of a CA, rebuilt when revocations changed or it is half-way to nextUpdate.

        Raises KeyError for a name that is not in ``crl_names()``.
        """
        return await self._crl(self._issuer_state(name), None)

    async def shard_crl(self, name: str, shard: int) -> bytes:
        """The DER CRL of one shard of a CA (RFC 5280 §5.2.5): complete for the certificates
        whose CDP names it, cached and rebuilt like the full CRL.

        Raises KeyError for a CA name not in ``crl_names()`` (``ca`` included: the URL a
        certificate names carries the CA id), a shard number no configuration can give
        (``crl_shards.valid_shard``), or when this service has no public URL.
        """
        if name == "ca" or not valid_shard(shard) or self._public_url is None:
            raise KeyError(name)
        return await self._crl(self._issuer_state(name), shard)

    async def _crl(self, state: _IssuerState, shard: int | None) -> bytes:
        der = state.fresh(shard, await self._store.revocation_epoch(), self._clock())
        if der is not None:
            return der
        async with state.lock:
            epoch = await self._store.revocation_epoch()
            now = self._clock()
            der = state.fresh(shard, epoch, now)
            if der is not None:
                return der
            fingerprint = state.ca.fingerprint_sha256
            point: str | None = None
            if shard is None:
                entries = await self._store.revoked_entries(fingerprint)
            else:
                # RFC 5280 §3.3: an entry stays until it has appeared on a CRL issued after the
                # certificate's notAfter; one nextUpdate period past notAfter covers that.
                expired_before = now - dt.timedelta(hours=self._crl_hours)
                entries = await self._store.revoked_shard_entries(fingerprint, shard, expired_before)
                point = f"{self._public_url}{crl_path(state.ca, shard)}"
            details: dict[str, object] = {"entries": len(entries), "shard": shard}
            crl = Draft(Event.CRL_ISSUED, f"crl/{ca_id(state.ca)}", details)
            with self._audit.recording(crl) as seal:  # the store adds "number"
                number = await self._store.next_crl_number(fingerprint, audit=seal)
            # Encoding 100,000 entries takes a few hundred ms of CPU: off the event loop,
            # so SCEP and OCSP requests keep being served meanwhile.
            der = await asyncio.to_thread(
                build_crl, state.ca, entries, number, now, self._crl_hours, distribution_point=point
            )
            state.crls[shard] = _CachedCRL(der, epoch, now + dt.timedelta(hours=self._crl_hours / 2))
            log.info(
                "CRL %d of %s%s built: %d entries, %d bytes",
                number,
                ca_id(state.ca),
                "" if shard is None else f" shard {shard}",
                len(entries),
                len(der),
            )
            return der

    # -- OCSP --------------------------------------------------------------------------

    async def ocsp(self, der: bytes) -> bytes:
        """A DER OCSPResponse for a DER OCSPRequest (RFC 6960); errors are OCSP error responses."""
        try:
            query = parse_ocsp_request(der)
        except OcspRequestError as exc:
            return error_response(exc.status)
        state = next((s for s in self._issuers if is_for_issuer(s.ocsp_issuer, query)), None)
        if state is None:
            return error_response(x509_ocsp.OCSPResponseStatus.UNAUTHORIZED)
        try:
            record = await self._store.get_certificate(query.serial_hex)
        except StoreUnavailable:
            # HTTP 503 with Retry-After (scep_ca.server.store_faults), as on every endpoint.
            raise
        except Exception:
            # RFC 6960 §2.3 internalError: a store outage must not look like "unknown".
            log.exception("OCSP: store lookup failed")
            return error_response(x509_ocsp.OCSPResponseStatus.INTERNAL_ERROR)
        try:
            return build_ocsp_response(
                state.ca, query, status_from_record(state.ca, record), self._clock(), self._ocsp_validity
            )
        except KeyUnavailable:
            # RFC 6960 §2.3 tryLater: the CA key's token is out of reach for now.
            log.warning("OCSP: the CA key is unavailable; answered tryLater", exc_info=True)
            return error_response(x509_ocsp.OCSPResponseStatus.TRY_LATER)

    async def ocsp_get(self, encoded: str) -> bytes:
        """The GET form (RFC 6960 Appendix A.1): ``encoded`` is the path after ``/ocsp/``."""
        try:
            der = decode_get_path(encoded)
        except OcspRequestError as exc:
            return error_response(exc.status)
        return await self.ocsp(der)

    # -- lookups -----------------------------------------------------------------------

    async def find_certificate(self, serial: str, *, base: Base = "auto") -> CertificateRecord | None:
        """The record an operator's serial text denotes (``serials.candidates`` rules).

        Raises ``SerialError`` for text that is no serial and ``AmbiguousSerial`` when a
        digits-only serial matches one certificate as hex and another as decimal.
        """
        found: list[CertificateRecord] = []
        for form in candidates(serial, base=base):
            record = await self._store.get_certificate(form)
            if record is not None:
                found.append(record)
        if len(found) > 1:
            raise AmbiguousSerial(serial, [r.serial for r in found])
        return found[0] if found else None

    async def certificate_status(self, serial: str, *, base: Base = "auto") -> dict[str, Any] | None:
        """JSON-ready status of one certificate, None when we have no such serial."""
        record = await self.find_certificate(serial, base=base)
        return None if record is None else record_to_dict(record, self._clock())

    async def verify(self, pem: bytes) -> dict[str, Any]:
        """Classify a PEM certificate (``status.verify_certificate``); raises CertificateParseError."""
        record = await self._store.get_certificate(serial_of_pem(pem))
        now = self._clock()
        results = [verify_certificate(state.ca, pem, record, now) for state in self._issuers]
        # The CA that signed it decides; a certificate no CA of ours signed is unknown-issuer.
        chosen = next((r for r in results if r.status is not VerifyStatus.UNKNOWN_ISSUER), results[0])
        return chosen.to_dict()

    # -- changes -----------------------------------------------------------------------

    async def revoke(
        self, serial: str, reason: str | Reason = Reason.UNSPECIFIED, *, base: Base = "auto", actor: str = SYSTEM
    ) -> bool:
        """Revoke one certificate; False when there is no such certificate or it is already revoked.

        Raises ``ReasonError``, ``SerialError`` or ``AmbiguousSerial`` for bad input, before
        anything changes. The next CRL fetch lists it (the store bumps the epoch).
        """
        parsed = reason if isinstance(reason, Reason) else parse_reason(reason)
        record = await self.find_certificate(serial, base=base)
        if record is None:
            return False
        event = Draft(
            Event.CERT_REVOKED,
            certificate_target(record.serial),
            {"serial": record.serial, "integration": record.integration_id, "reason": parsed.rfc_name},
            actor=actor,
        )
        with self._audit.recording(event) as seal:
            revoked = await self._store.revoke_certificate(record.serial, parsed.rfc_name, self._clock(), audit=seal)
        if revoked:
            log.info("certificate %s revoked (%s)", record.serial, parsed.rfc_name)
        return revoked

    async def delete_integration(self, integration_id: str, *, actor: str = SYSTEM) -> DeleteResult:
        """Delete the integration and revoke all its certificates in one store transaction (README "Revocation").

        Raises ``IntegrationNotFound`` when there is no live integration with this id.
        """
        event = Draft(
            Event.INTEGRATION_DELETED, integration_target(integration_id), {"integration": integration_id}, actor=actor
        )
        with self._audit.recording(event) as seal:
            # The store adds "revoked": how many certificates the deletion revoked.
            result = await self._store.delete_integration(integration_id, self._clock(), audit=seal)
        log.info("integration %s deleted: %d certificates revoked", integration_id, result.revoked)
        return result
