"""Fuzz the pkiMessage decoder and verifier (``scep_ca.protocol.message``), seeded with real clients' requests.

Allowed outcomes: a ``PKIMessage`` (and a verified signer) or ``ScepCoreError``
(``MalformedRequest`` → HTTP 400, ``ScepFailure`` → a FAILURE CertRep).
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["scep_ca"]):
    from scep_ca.protocol.errors import ScepCoreError
    from scep_ca.protocol.message import decode_pki_message, verify_pki_message

from _common import run, vector_files


def seeds() -> list[bytes]:
    return [path.read_bytes() for path in vector_files("*/*.der")]


def test_one_input(data: bytes) -> None:
    try:
        msg = decode_pki_message(data)
        # What the service and the CertRep reader touch besides decode and verify.
        msg.reply_digest()
        for name in ("pki_status", "fail_info", "fail_info_text", "message_type"):
            msg.text_attribute(name)
        msg.octets_attribute("recipient_nonce")
        verify_pki_message(msg)
    except ScepCoreError:
        pass


if __name__ == "__main__":
    run(test_one_input, seeds)
