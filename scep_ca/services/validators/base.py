"""The validator interface the enrollment code calls; it knows nothing of the kinds.

A validator answers allow or deny for a decrypted CSR (RFC 8894 section 3.3.1: the CA
decides whether to grant a PKCSReq), and hears afterwards whether the certificate was
issued. Its answers never carry secrets: ``reason`` goes to the log, ``fail_text`` to the
client as failInfoText.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cryptography import x509


@dataclass(frozen=True)
class ValidationRequest:
    """What a validator may look at: the decrypted CSR, the transaction and the requester."""

    integration_id: str
    csr_der: bytes
    csr: x509.CertificateSigningRequest
    challenge: str | None
    transaction_id: str
    message_type: int
    remote: str | None
    user_agent: str | None
    # A RenewalReq (or certmonger's re-key PKCSReq) that already passed the renewal rules.
    renewal: bool = False
    # The store's answer for the one-time challenge the validator named (``one_time_challenge``).
    challenge_usable: bool = False


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    fail_text: str = ""
    reason: str | None = None
    # A refused PKCSReq signed by a certificate this CA issued may be certmonger's re-key:
    # the enrollment code then applies the renewal rules instead of refusing.
    try_renewal: bool = False


ALLOW = Verdict(True)


class ValidatorBusy(Exception):
    """Over a bound on the integration's outbound calls (gate.py): nothing was called or
    recorded; the client is to retry after ``retry_after`` seconds (HTTP 503)."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class ConfirmationFailed(Exception):
    """The validator did not confirm an issued certificate: it must not be delivered."""


class Validator(Protocol):
    kind: str
    # Seconds within which ``issued`` returns, for a validator that confirms certificates
    # (``issued`` may raise ConfirmationFailed): its certificates are recorded on hold until
    # then, and a hold older than this is a worker that died. None: it never refuses.
    confirm_within: float | None

    def one_time_challenge(self, challenge: str | None) -> str | None:
        """The hash of a one-time challenge to consume with the certificate, or None."""
        ...

    async def validate(self, request: ValidationRequest) -> Verdict: ...

    async def issued(self, request: ValidationRequest, cert: x509.Certificate) -> None:
        """Called after the certificate is recorded, before it is returned; raises ConfirmationFailed."""
        ...

    async def failed(self, request: ValidationRequest, reason: str) -> None:
        """Called when issuance failed after an allow; never raises."""
        ...
