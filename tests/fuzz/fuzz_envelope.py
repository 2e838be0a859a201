"""Fuzz EnvelopedData decryption (``scep_ca.protocol.envelope``) with the keys the vectors were encrypted to.

Seeds are the EnvelopedData of every vector request, so mutations reach the key
transport and content decryption. Allowed outcome: plaintext or ``ScepCoreError``.
"""

from __future__ import annotations

import contextlib

import atheris

with atheris.instrument_imports(include=["scep_ca"]):
    from scep_ca.protocol.envelope import decrypt_envelope
    from scep_ca.protocol.errors import ScepCoreError
    from scep_ca.protocol.message import decode_pki_message

from _ca import vector_recipients
from _common import run, vector_files

RECIPIENTS = vector_recipients()


def seeds() -> list[bytes]:
    out = []
    for path in vector_files("*/*pkcsreq.der"):
        content = decode_pki_message(path.read_bytes()).content
        if content:
            out.append(content)
    return out


def test_one_input(data: bytes) -> None:
    # The stand-in key is a function of the input: the same input always takes the same path.
    for recipient in RECIPIENTS:
        with contextlib.suppress(ScepCoreError):
            decrypt_envelope(data, recipient, allow_des=True, stand_in_secret=bytes(32))


if __name__ == "__main__":
    run(test_one_input, seeds)
