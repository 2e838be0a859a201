"""Certificates for enrolled clients: subject templates, one Issuer per validity, the record.

The services decide whether to issue; this unit only builds: it signs the checked CSR with
the CA (``scep_ca.pki.issue``) under a Profile carrying the CRL distribution point, OCSP and
caIssuers URLs (RFC 5280 sections 4.2.1.13 and 4.2.2.1), and returns the ``CertificateRecord``
the store keeps.
"""

from __future__ import annotations

from cryptography import x509

from config.clock import Clock
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.ca_set import ca_id, crl_path
from scep_ca.pki.crl_shards import shard_of
from scep_ca.pki.issue import Issuer, Profile, random_serial
from scep_ca.pki.records import CertificateRecord, Integration
from scep_ca.protocol.csr import CheckedCsr
from scep_ca.protocol.dn import DNError, parse_dn
from scep_ca.protocol.errors import BadRequest


class CertificateFactory:
    def __init__(self, ca: CAIdentity, base_url: str, clock: Clock, crl_shards: int = 0) -> None:
        """``base_url``: server.public_url (the CLI fills it in from the data directory,
        scep_ca.pki.public_url), else the listen address; always present, so that a relying
        party can check revocation. ``crl_shards``: revocation.crl_shards (0: the CDP names
        the full CRL)."""
        self._ca = ca
        self._base_url = base_url
        self._crl_shards = crl_shards
        self._clock = clock
        self._templates: dict[str, x509.Name] = {}
        # One Issuer per certificate validity: integrations differ only in that.
        self._issuers: dict[int, Issuer] = {}
        # Named by CA id, not "ca": after a rollover these URLs still serve this CA's CRL and certificate.
        self._crl_url = base_url + crl_path(ca)
        self._ocsp_url = f"{base_url}/ocsp"
        self._ca_issuers_url = f"{base_url}/ca/{ca_id(ca)}.crt"

    def subject_template(self, integration: Integration) -> x509.Name:
        """The integration's subject template, parsed once per distinct text."""
        template = self._templates.get(integration.subject_template)
        if template is None:
            try:
                template = parse_dn(integration.subject_template)
            except DNError as exc:
                raise BadRequest("the integration's subject template is invalid") from exc
            self._templates[integration.subject_template] = template
        return template

    def _issuer(self, validity_days: int) -> Issuer:
        issuer = self._issuers.get(validity_days)
        if issuer is None:
            profile = Profile(
                validity_days,
                crl_url=self._crl_url,
                ocsp_url=self._ocsp_url,
                ca_issuers_url=self._ca_issuers_url,
            )
            issuer = self._issuers[validity_days] = Issuer(self._ca, profile)
        return issuer

    def sign(
        self,
        integration: Integration,
        checked: CheckedCsr,
        transaction_id: str,
        message_type: int,
        remote: str | None,
        user_agent: str | None,
    ) -> CertificateRecord:
        """A new certificate with a fresh random serial, as the record to store."""
        now = self._clock()
        serial = random_serial()
        shard = shard_of(serial, self._crl_shards)
        issued = self._issuer(integration.validity_days).issue(
            subject=checked.subject,
            public_key=checked.public_key,
            sans=checked.sans,
            serial=serial,
            now=now,
            spki_der=checked.spki_der,
            crl_url=None if shard is None else self._base_url + crl_path(self._ca, shard),
        )
        return CertificateRecord(
            serial=format(serial, "x"),
            integration_id=integration.id,
            issuer_fingerprint=self._ca.fingerprint_sha256,
            subject=checked.subject.rfc4514_string(),
            not_before=issued.not_before,
            not_after=issued.not_after,
            der=issued.der,
            transaction_id=transaction_id,
            pubkey_sha256=checked.pubkey_sha256,
            message_type=message_type,
            requester_address=remote,
            user_agent=user_agent,
            created_at=now,
            crl_shard=shard,
        )
