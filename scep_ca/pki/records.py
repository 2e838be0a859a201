"""The domain's records: integrations, certificates, transactions, revocation entries.

They belong to the PKI layer; the store persists them (``store`` imports this module, never
the other way round). Serials are lowercase hex text; times are timezone-aware UTC.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from scep_ca.protocol.enums import MessageType


class CertStatus(enum.StrEnum):
    ISSUED = "issued"
    REVOKED = "revoked"


class TransactionStatus(enum.StrEnum):
    ISSUED = "issued"
    PENDING = "pending"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Integration:
    id: str
    name: str
    subject_template: str
    created_at: datetime
    validity_days: int
    username: str
    # scrypt hash string for Basic ("scrypt$n$r$p$salt_b64$hash_b64"); None until credentials exist.
    password_scrypt: str | None = None
    # NT hash encrypted with the server's secret key (AES-GCM nonce||ciphertext); see challenge/.
    nt_hash_encrypted: bytes | None = None
    # None: Basic allowed only over TLS or on loopback; True/False force it.
    allow_basic: bool | None = None
    allowed_san_types: tuple[str, ...] = ()
    include_ca_in_reply: bool | None = None
    deleted_at: datetime | None = None
    # PKCSReq answers PENDING until an operator approves (RFC 8894 section 3.3.2 PENDING).
    require_approval: bool = False
    # A renewal revokes the certificate it replaces (reason superseded).
    revoke_superseded: bool = False
    # How a request is judged genuine (scep_ca.services.validators): "ndes" (one-time
    # challenges), "intune" or "webhook".
    validator: str = "ndes"
    # The validator's non-secret settings, JSON text ("{}" for ndes).
    validator_settings: str = "{}"
    # The validator's secret (Intune client secret, webhook HMAC key), encrypted like the NT hash.
    validator_secret_encrypted: bytes | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


@dataclass(frozen=True)
class CertificateRecord:
    serial: str  # lowercase hex, no leading zeros
    integration_id: str
    issuer_fingerprint: str  # SHA-256 hex of the issuing CA certificate
    subject: str  # RFC 4514
    not_before: datetime
    not_after: datetime
    der: bytes
    transaction_id: str
    pubkey_sha256: str  # hex SHA-256 of the SubjectPublicKeyInfo DER
    message_type: int
    requester_address: str | None = None
    user_agent: str | None = None
    status: CertStatus = CertStatus.ISSUED
    revoked_at: datetime | None = None
    revocation_reason: str | None = None  # RFC 5280 reason name, e.g. "cessationOfOperation"
    created_at: datetime | None = None
    # Serial of the certificate that renewed this one: a certificate is renewed at most once.
    # Set only by the store (``IssuanceRequest.renews``, ``resolve_pending``); ignored on insert.
    superseded_by: str | None = None
    # The CRL shard whose URL the certificate's CDP names (scep_ca.pki.crl_shards); None:
    # issued before shards existed or with sharding off, so its CDP names the full CRL.
    crl_shard: int | None = None


@dataclass(frozen=True)
class Transaction:
    integration_id: str
    transaction_id: str
    pubkey_sha256: str
    status: TransactionStatus
    created_at: datetime
    serial: str | None = None
    message_type: int = MessageType.PKCS_REQ
    csr_der: bytes | None = None
    # A renewal waiting for approval: serial of the certificate it renews.
    renews: str | None = None


@dataclass(frozen=True)
class RevokedEntry:
    serial: str
    revoked_at: datetime
    reason: str | None
