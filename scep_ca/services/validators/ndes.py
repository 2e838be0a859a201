"""The default validator: one-time challenges issued by scep-ca (CLI or the NDES-style page).

The check itself is the store's: ``enrollment_state`` says whether the challenge is usable
and ``record_issuance`` consumes it in the transaction that records the certificate, so two
requests can never spend one challenge.
"""

from __future__ import annotations

from cryptography import x509

from challenge.codes import hash_challenge
from scep_ca.services.validators.base import ALLOW, ValidationRequest, Verdict

# PKCS#9 (RFC 2985 section 5.4.1) bounds challengePassword at 255 characters; our own
# challenges are far shorter, so a longer one is not ours.
MAX_CHALLENGE_CHARS = 255
CHALLENGE_REJECTED = "the challenge password is invalid, expired or used"


class NdesValidator:
    kind = "ndes"
    confirm_within: float | None = None

    def one_time_challenge(self, challenge: str | None) -> str | None:
        if not challenge or len(challenge) > MAX_CHALLENGE_CHARS:
            return None
        return hash_challenge(challenge)

    async def validate(self, request: ValidationRequest) -> Verdict:
        if request.renewal:
            return ALLOW
        if not request.challenge:
            return Verdict(False, "a challenge password is required", "no challengePassword in the CSR", True)
        if len(request.challenge) > MAX_CHALLENGE_CHARS:
            return Verdict(False, "challengePassword is too long", None, True)
        if not request.challenge_usable:
            return Verdict(False, CHALLENGE_REJECTED, None, True)
        return ALLOW

    async def issued(self, request: ValidationRequest, cert: x509.Certificate) -> None:
        return None

    async def failed(self, request: ValidationRequest, reason: str) -> None:
        return None
