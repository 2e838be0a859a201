"""Fuzz the NTLM acceptor's parsers (``challenge.ntlm``): message_type, parse_negotiate, parse_authenticate.

Seeds are pyspnego's Type 1 and Type 3 for our Type 2. A parsed Type 3 is also run
through ``verify`` (with the seed's NT hash), so mutated blobs, AV pairs and MIC
fields are reached. Allowed outcome: a result or ``NTLMError``.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["challenge"]):
    from challenge import ntlm
    from challenge.credentials import nt_hash

from _common import run

PASSWORD = "S3cret"
NT_HASH = nt_hash(PASSWORD)
SERVER_CHALLENGE = bytes.fromhex("0123456789abcdef")


def seeds() -> list[bytes]:
    import spnego

    out = []
    for user in ("scep-abc", "EXAMPLE\\scep-abc", "scep-abc@example.com"):
        client = spnego.client(user, PASSWORD, protocol="ntlm")
        type1 = client.step()
        assert type1 is not None
        flags = ntlm.parse_negotiate(type1).flags
        type2 = ntlm.build_challenge(flags, SERVER_CHALLENGE, ntlm.filetime(1.7e9), ntlm.TargetNames())
        type3 = client.step(type2)
        assert type3 is not None
        out += [type1, type3]
    return out


def test_one_input(data: bytes) -> None:
    try:
        kind = ntlm.message_type(data)
        if kind == ntlm.NEGOTIATE:
            negotiate = ntlm.parse_negotiate(data)
            ntlm.build_challenge(negotiate.flags, SERVER_CHALLENGE, 0, ntlm.TargetNames())
        elif kind == ntlm.AUTHENTICATE:
            flags = ntlm.challenge_flags_for(ntlm.Flag.UNICODE)
            auth = ntlm.parse_authenticate(data, flags)
            ntlm.verify(auth, NT_HASH, SERVER_CHALLENGE, b"", b"", flags)
    except ntlm.NTLMError:
        pass


if __name__ == "__main__":
    run(test_one_input, seeds)
