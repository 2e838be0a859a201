"""The exception tree of the protocol core.

Two families: ``MalformedRequest`` (nothing signed can be answered: HTTP 400) and
``ScepFailure`` (the request was parsed far enough to answer with a signed CertRep
FAILURE; RFC 8894 section 3.3.2.2). Each ``ScepFailure`` carries its failInfo and
a short public text; detail for the log goes in ``detail`` and never holds secrets.
"""

from __future__ import annotations

from scep_ca.protocol.enums import FailInfo


class ScepCoreError(Exception):
    """Base of every error the protocol core raises on purpose."""


class MalformedRequest(ScepCoreError):
    """Not a pkiMessage we can parse (bad DER, wrong content type, missing attributes)."""


class ScepFailure(ScepCoreError):
    """Answered with CertRep pkiStatus FAILURE and this failInfo."""

    fail_info: FailInfo = FailInfo.BAD_REQUEST

    def __init__(self, text: str, detail: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.detail = detail or text


class BadAlg(ScepFailure):
    """Unrecognised or unsupported algorithm (failInfo badAlg)."""

    fail_info = FailInfo.BAD_ALG


class BadMessageCheck(ScepFailure):
    """Integrity check (signature, messageDigest, decryption) failed (failInfo badMessageCheck)."""

    fail_info = FailInfo.BAD_MESSAGE_CHECK


class BadRequest(ScepFailure):
    """Transaction not permitted or not supported (failInfo badRequest)."""

    fail_info = FailInfo.BAD_REQUEST


class BadCertId(ScepFailure):
    """No certificate matches the given identifier (failInfo badCertId)."""

    fail_info = FailInfo.BAD_CERT_ID
