"""The NTLM acceptor primitives: MS-NLMP test vectors, pyspnego as a real client, refusals."""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import replace
from typing import Any

import pytest
import spnego
from spnego.channel_bindings import GssChannelBindings

from challenge import ntlm
from challenge.credentials import nt_hash

SERVER_CHALLENGE = bytes.fromhex("0123456789abcdef")


def build_authenticate(
    *,
    nt: bytes,
    lm: bytes = b"",
    user: str = "User",
    domain: str = "Domain",
    workstation: str = "COMPUTER",
    flags: int = ntlm.Flag.UNICODE | ntlm.Flag.NTLM,
    session_key: bytes = b"",
) -> bytes:
    """A Type 3 with the 64-byte header (no version, no MIC), strings in UTF-16LE."""
    fields = [lm, nt, domain.encode("utf-16-le"), user.encode("utf-16-le"), workstation.encode("utf-16-le")]
    fields.append(session_key)
    header = ntlm.SIGNATURE + struct.pack("<I", ntlm.AUTHENTICATE)
    offset = 64
    descriptors = b""
    for value in fields:
        descriptors += struct.pack("<HHI", len(value), len(value), offset)
        offset += len(value)
    return header + descriptors + struct.pack("<I", flags) + b"".join(fields)


def ms_nlmp_blob() -> bytes:
    """The NTLMv2 ``temp`` of MS-NLMP 4.2.4.1.3 (time 0, client challenge 0xaa * 8)."""
    av = (
        struct.pack("<HH", 2, 12)
        + "Domain".encode("utf-16-le")
        + struct.pack("<HH", 1, 12)
        + "Server".encode("utf-16-le")
        + struct.pack("<HH", 0, 0)
    )
    return b"\x01\x01" + b"\x00" * 6 + b"\x00" * 8 + b"\xaa" * 8 + b"\x00" * 4 + av + b"\x00" * 4


# -- MS-NLMP 4.2.4 (NTLMv2 authentication) vectors -----------------------------------


def test_ntowfv2_ms_nlmp_vector() -> None:
    assert ntlm.ntowfv2(nt_hash("Password"), "User", "Domain").hex() == "0c868a403bfd7a93a3001ef22ef02e3f"


def test_ntowfv2_uppercases_user_but_not_domain() -> None:
    key = nt_hash("Password")
    assert ntlm.ntowfv2(key, "user", "Domain") == ntlm.ntowfv2(key, "USER", "Domain")
    assert ntlm.ntowfv2(key, "User", "DOMAIN") != ntlm.ntowfv2(key, "User", "Domain")


def test_verify_accepts_ms_nlmp_ntlmv2_response() -> None:
    proof = bytes.fromhex("68cd0ab851e51c96aabc927bebef6a1c")
    auth = ntlm.parse_authenticate(build_authenticate(nt=proof + ms_nlmp_blob()), 0)
    verdict = ntlm.verify(auth, nt_hash("Password"), SERVER_CHALLENGE, b"", b"", 0)
    assert verdict is ntlm.Verdict.OK


def test_verify_rejects_wrong_password_and_wrong_challenge() -> None:
    proof = bytes.fromhex("68cd0ab851e51c96aabc927bebef6a1c")
    auth = ntlm.parse_authenticate(build_authenticate(nt=proof + ms_nlmp_blob()), 0)
    assert ntlm.verify(auth, nt_hash("password"), SERVER_CHALLENGE, b"", b"", 0) is ntlm.Verdict.BAD_RESPONSE
    other = bytes(8)
    assert ntlm.verify(auth, nt_hash("Password"), other, b"", b"", 0) is ntlm.Verdict.BAD_RESPONSE


def test_verify_uses_domain_exactly_as_sent() -> None:
    proof = bytes.fromhex("68cd0ab851e51c96aabc927bebef6a1c")
    # The vector was computed with "Domain"; the same response claiming "DOMAIN" must fail.
    auth = ntlm.parse_authenticate(build_authenticate(nt=proof + ms_nlmp_blob(), domain="DOMAIN"), 0)
    assert ntlm.verify(auth, nt_hash("Password"), SERVER_CHALLENGE, b"", b"", 0) is ntlm.Verdict.BAD_RESPONSE


# -- refusals -------------------------------------------------------------------------


def test_ntlmv1_response_refused() -> None:
    auth = ntlm.parse_authenticate(build_authenticate(nt=b"\x11" * 24, lm=b"\x22" * 24), 0)
    assert ntlm.verify(auth, nt_hash("Password"), SERVER_CHALLENGE, b"", b"", 0) is ntlm.Verdict.V1_REFUSED


def test_lm_only_refused_and_anonymous_refused() -> None:
    lm_only = ntlm.parse_authenticate(build_authenticate(nt=b"", lm=b"\x22" * 24), 0)
    assert ntlm.verify(lm_only, nt_hash("x"), SERVER_CHALLENGE, b"", b"", 0) is ntlm.Verdict.V1_REFUSED
    anonymous = ntlm.parse_authenticate(build_authenticate(nt=b"", lm=b"\x00", user="", domain=""), 0)
    assert ntlm.verify(anonymous, nt_hash(""), SERVER_CHALLENGE, b"", b"", 0) is ntlm.Verdict.ANONYMOUS


@pytest.mark.parametrize("nt", [b"\x00" * 16, b"\x00" * 43, b"\x00" * 16 + b"\x02\x01" + b"\x00" * 30])
def test_short_or_wrong_blob_is_malformed(nt: bytes) -> None:
    auth = ntlm.parse_authenticate(build_authenticate(nt=nt), 0)
    assert ntlm.verify(auth, nt_hash("x"), SERVER_CHALLENGE, b"", b"", 0) is ntlm.Verdict.MALFORMED


# -- parsing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"NTLMSSP", b"NTLMSSX\x00\x01\x00\x00\x00", b"NTLMSSP\x00" + b"\x01\x00\x00\x00" + b"\x00" * 8192],
)
def test_message_type_rejects_non_ntlm(data: bytes) -> None:
    with pytest.raises(ntlm.NTLMError):
        ntlm.message_type(data)


def test_field_outside_message_rejected() -> None:
    data = bytearray(build_authenticate(nt=b"\x00" * 48))
    struct.pack_into("<HHI", data, 36, 200, 200, 64)  # user name runs past the end
    with pytest.raises(ntlm.NTLMError):
        ntlm.parse_authenticate(bytes(data), 0)


def test_truncated_authenticate_rejected() -> None:
    with pytest.raises(ntlm.NTLMError):
        ntlm.parse_authenticate(ntlm.SIGNATURE + struct.pack("<I", 3) + b"\x00" * 20, 0)


def test_wrong_message_type_rejected() -> None:
    with pytest.raises(ntlm.NTLMError):
        ntlm.parse_negotiate(build_authenticate(nt=b""))
    with pytest.raises(ntlm.NTLMError):
        ntlm.parse_authenticate(ntlm.SIGNATURE + struct.pack("<II", 1, 0), 0)


def test_bad_utf16_rejected() -> None:
    data = bytearray(build_authenticate(nt=b"", user="ab"))
    struct.pack_into("<HHI", data, 36, 3, 3, struct.unpack_from("<I", data, 40)[0])  # odd length
    with pytest.raises(ntlm.NTLMError):
        ntlm.parse_authenticate(bytes(data), 0)


def test_oem_strings_when_unicode_not_negotiated() -> None:
    fields = [b"", b"", b"DOM", b"user", b"WS", b""]
    header = ntlm.SIGNATURE + struct.pack("<I", 3)
    offset, descriptors = 64, b""
    for value in fields:
        descriptors += struct.pack("<HHI", len(value), len(value), offset)
        offset += len(value)
    data = header + descriptors + struct.pack("<I", ntlm.Flag.OEM) + b"".join(fields)
    auth = ntlm.parse_authenticate(data, ntlm.Flag.UNICODE)
    assert (auth.user, auth.domain, auth.workstation) == ("user", "DOM", "WS")


def test_av_pairs_need_eol() -> None:
    assert ntlm.parse_av_pairs(struct.pack("<HH", 7, 2) + b"ab" + struct.pack("<HH", 0, 0)) == {7: b"ab"}
    with pytest.raises(ntlm.NTLMError):
        ntlm.parse_av_pairs(struct.pack("<HH", 7, 2) + b"ab")
    with pytest.raises(ntlm.NTLMError):
        ntlm.parse_av_pairs(struct.pack("<HH", 7, 9) + b"ab")


# -- the Type 2 -----------------------------------------------------------------------


def test_challenge_message_layout() -> None:
    requested = ntlm.Flag.UNICODE | ntlm.Flag.OEM | ntlm.Flag.NTLM | ntlm.Flag.EXTENDED_SESSIONSECURITY
    data = ntlm.build_challenge(requested, SERVER_CHALLENGE, 1234, ntlm.TargetNames())
    assert ntlm.message_type(data) == ntlm.CHALLENGE
    (flags,) = struct.unpack_from("<I", data, 20)
    assert flags & ntlm.Flag.TARGET_INFO
    assert flags & ntlm.Flag.UNICODE and not flags & ntlm.Flag.OEM
    # curl sends NTLMv2 only when extended session security is echoed; else NTLMv1.
    assert flags & ntlm.Flag.EXTENDED_SESSIONSECURITY
    assert data[24:32] == SERVER_CHALLENGE
    name_len, _, name_at = struct.unpack_from("<HHI", data, 12)
    assert data[name_at : name_at + name_len].decode("utf-16-le") == "SCEPCA"
    info_len, _, info_at = struct.unpack_from("<HHI", data, 40)
    pairs = ntlm.parse_av_pairs(data[info_at : info_at + info_len])
    assert pairs[ntlm.AvId.TIMESTAMP] == struct.pack("<Q", 1234)
    assert pairs[ntlm.AvId.NB_DOMAIN_NAME].decode("utf-16-le") == "SCEPCA"


def test_challenge_flags_oem_client() -> None:
    flags = ntlm.challenge_flags_for(ntlm.Flag.OEM | ntlm.Flag.NTLM)
    assert flags & ntlm.Flag.OEM and not flags & ntlm.Flag.UNICODE
    assert not flags & ntlm.Flag.EXTENDED_SESSIONSECURITY


def test_filetime_epoch() -> None:
    assert ntlm.filetime(0) == 116444736000000000


# -- pyspnego as the client -------------------------------------------------------------


def handshake(user: str, password: str) -> tuple[bytes, bytes, bytes, int]:
    client = spnego.client(user, password, protocol="ntlm")
    type1 = client.step()
    assert type1 is not None
    flags = ntlm.parse_negotiate(type1).flags
    type2 = ntlm.build_challenge(flags, SERVER_CHALLENGE, ntlm.filetime(1.7e9), ntlm.TargetNames())
    type3 = client.step(type2)
    assert type3 is not None
    return type1, type2, type3, ntlm.challenge_flags_for(flags)


@pytest.mark.parametrize(
    ("presented", "user", "domain"),
    [
        ("scep-abc", "scep-abc", ""),
        ("EXAMPLE\\scep-abc", "scep-abc", "EXAMPLE"),
        ("scep-abc@example.com", "scep-abc@example.com", ""),
    ],
)
def test_pyspnego_round_trip(presented: str, user: str, domain: str) -> None:
    type1, type2, type3, flags = handshake(presented, "S3cret")
    auth = ntlm.parse_authenticate(type3, flags)
    assert (auth.user, auth.domain) == (user, domain)
    assert auth.has_mic_field
    assert ntlm.verify(auth, nt_hash("S3cret"), SERVER_CHALLENGE, type1, type2, flags) is ntlm.Verdict.OK
    assert ntlm.verify(auth, nt_hash("wrong"), SERVER_CHALLENGE, type1, type2, flags) is ntlm.Verdict.BAD_RESPONSE


def test_mic_protects_the_other_fields() -> None:
    type1, type2, type3, flags = handshake("scep-abc", "S3cret")
    auth = ntlm.parse_authenticate(type3, flags)
    ws_len, _, ws_at = struct.unpack_from("<HHI", type3, 44)
    assert ws_len
    tampered = bytearray(type3)
    tampered[ws_at] ^= 0x01  # the workstation name is outside the NTProofStr, inside the MIC
    forged = ntlm.parse_authenticate(bytes(tampered), flags)
    assert ntlm.verify(auth, nt_hash("S3cret"), SERVER_CHALLENGE, type1, type2, flags) is ntlm.Verdict.OK
    assert ntlm.verify(forged, nt_hash("S3cret"), SERVER_CHALLENGE, type1, type2, flags) is ntlm.Verdict.BAD_MIC
    # The MIC covers our Type 2 too: a different challenge message breaks it.
    other_type2 = type2[:-1] + bytes([type2[-1] ^ 1])
    assert ntlm.verify(auth, nt_hash("S3cret"), SERVER_CHALLENGE, type1, other_type2, flags) is ntlm.Verdict.BAD_MIC


# -- other client layouts -----------------------------------------------------------------


def _v2_response(password: str, user: str, domain: str, av_pairs: bytes) -> bytes:
    blob = b"\x01\x01" + b"\x00" * 6 + b"\x00" * 8 + b"\xaa" * 8 + b"\x00" * 4 + av_pairs + b"\x00" * 4
    key = ntlm.ntowfv2(nt_hash(password), user, domain)
    return hmac.new(key, SERVER_CHALLENGE + blob, hashlib.md5).digest() + blob


def _with_mic_slot(type3_64: bytes) -> bytes:
    """Re-lay a 64-byte-header Type 3 with version and a zero MIC (88-byte header), as go-ntlmssp does."""
    fields = []
    for at in (12, 20, 28, 36, 44, 52):
        length, _, start = struct.unpack_from("<HHI", type3_64, at)
        fields.append(type3_64[start : start + length])
    offset, descriptors = 88, b""
    for value in fields:
        descriptors += struct.pack("<HHI", len(value), len(value), offset)
        offset += len(value)
    flags = type3_64[60:64]
    return type3_64[:12] + descriptors + flags + b"\x00" * 8 + b"\x00" * 16 + b"".join(fields)


def test_go_ntlmssp_layout_without_mic_flag() -> None:
    # Older go-ntlmssp (Fleet): 88-byte header, MIC slot left zero, target name as the domain, no MsvAvFlags.
    eol = struct.pack("<HH", 0, 0)
    nt = _v2_response("S3cret", "scep-abc", "SCEPCA", eol)
    data = _with_mic_slot(build_authenticate(nt=nt, lm=b"\x00" * 24, user="scep-abc", domain="SCEPCA"))
    auth = ntlm.parse_authenticate(data, 0)
    assert auth.has_mic_field and auth.domain == "SCEPCA"
    assert ntlm.verify(auth, nt_hash("S3cret"), SERVER_CHALLENGE, b"", b"", 0) is ntlm.Verdict.OK


def test_mic_announced_but_no_room_for_it() -> None:
    av = struct.pack("<HHI", ntlm.AvId.FLAGS, 4, 2) + struct.pack("<HH", 0, 0)
    nt = _v2_response("S3cret", "scep-abc", "", av)
    auth = ntlm.parse_authenticate(build_authenticate(nt=nt, user="scep-abc", domain=""), 0)
    assert not auth.has_mic_field
    assert ntlm.verify(auth, nt_hash("S3cret"), SERVER_CHALLENGE, b"", b"", 0) is ntlm.Verdict.MALFORMED


def test_mic_announced_and_zero_is_refused() -> None:
    av = struct.pack("<HHI", ntlm.AvId.FLAGS, 4, 2) + struct.pack("<HH", 0, 0)
    nt = _v2_response("S3cret", "scep-abc", "", av)
    data = _with_mic_slot(build_authenticate(nt=nt, user="scep-abc", domain=""))
    auth = ntlm.parse_authenticate(data, 0)
    assert ntlm.verify(auth, nt_hash("S3cret"), SERVER_CHALLENGE, b"t1", b"t2", 0) is ntlm.Verdict.BAD_MIC


# -- target name and channel bindings (MS-NLMP 2.2.2.1) -------------------------------------

CBT_DATA = b"tls-server-end-point:" + hashlib.sha256(b"our certificate").digest()
OURS = ntlm.Expected(
    target_hosts=frozenset({"scep.example.com"}), channel_bindings=ntlm.channel_bindings_hash(CBT_DATA)
)


def bound_handshake(**client: Any) -> tuple[bytes, bytes, bytes, int]:
    """A pyspnego Type 1/2/3 with ``hostname``, ``service`` or ``channel_bindings`` set."""
    ctx = spnego.client("scep-abc", "S3cret", protocol="ntlm", **client)
    type1 = ctx.step()
    assert type1 is not None
    flags = ntlm.parse_negotiate(type1).flags
    type2 = ntlm.build_challenge(flags, SERVER_CHALLENGE, ntlm.filetime(1.7e9), ntlm.TargetNames())
    type3 = ctx.step(type2)
    assert type3 is not None
    return type1, type2, type3, ntlm.challenge_flags_for(flags)


def verify_bound(expected: ntlm.Expected, **client: Any) -> ntlm.Verdict:
    type1, type2, type3, flags = bound_handshake(**client)
    auth = ntlm.parse_authenticate(type3, flags)
    return ntlm.verify(auth, nt_hash("S3cret"), SERVER_CHALLENGE, type1, type2, flags, expected)


@pytest.mark.parametrize(
    ("hostname", "service", "verdict"),
    [
        ("scep.example.com", "HTTP", ntlm.Verdict.OK),
        ("SCEP.Example.COM", "http", ntlm.Verdict.OK),
        ("scep.example.com:443", "HTTP", ntlm.Verdict.OK),
        ("evil.example.com", "HTTP", ntlm.Verdict.TARGET_MISMATCH),
        ("scep.example.com", "cifs", ntlm.Verdict.TARGET_MISMATCH),
        ("scep.example.com", "HOST", ntlm.Verdict.TARGET_MISMATCH),
        ("unspecified", "host", ntlm.Verdict.TARGET_MISMATCH),  # pyspnego's default
        ("scep.example.com/other", "HTTP", ntlm.Verdict.TARGET_MISMATCH),
    ],
)
def test_target_name_must_name_this_server(hostname: str, service: str, verdict: ntlm.Verdict) -> None:
    assert verify_bound(OURS, hostname=hostname, service=service) is verdict


def test_target_name_refused_when_no_host_is_known() -> None:
    nobody = ntlm.Expected(target_hosts=frozenset(), channel_bindings=None)
    assert verify_bound(nobody, hostname="scep.example.com", service="HTTP") is ntlm.Verdict.TARGET_MISMATCH


def test_without_expectations_the_names_are_not_checked() -> None:
    type1, type2, type3, flags = bound_handshake(hostname="evil.example.com", service="HTTP")
    auth = ntlm.parse_authenticate(type3, flags)
    assert ntlm.verify(auth, nt_hash("S3cret"), SERVER_CHALLENGE, type1, type2, flags) is ntlm.Verdict.OK


def test_channel_bindings_match_pyspnego() -> None:
    assert (
        ntlm.channel_bindings_hash(CBT_DATA)
        == hashlib.md5(GssChannelBindings(application_data=CBT_DATA).pack()).digest()
    )


@pytest.mark.parametrize(
    ("expected", "data", "verdict"),
    [
        (OURS, CBT_DATA, ntlm.Verdict.OK),
        (OURS, b"tls-server-end-point:" + bytes(32), ntlm.Verdict.BINDINGS_MISMATCH),
        # Plain HTTP: no TLS channel here, so no bindings can be right.
        (replace(OURS, channel_bindings=None), CBT_DATA, ntlm.Verdict.BINDINGS_MISMATCH),
        # TLS ends at a proxy: we cannot know its certificate, the target name does the work.
        (replace(OURS, channel_bindings=None, tls_offloaded=True), CBT_DATA, ntlm.Verdict.OK),
    ],
)
def test_channel_bindings(expected: ntlm.Expected, data: bytes, verdict: ntlm.Verdict) -> None:
    bindings = GssChannelBindings(application_data=data)
    assert verify_bound(expected, hostname="scep.example.com", service="HTTP", channel_bindings=bindings) is verdict


def _hand_made(av: bytes) -> ntlm.AuthenticateMessage:
    nt = _v2_response("S3cret", "scep-abc", "", av + struct.pack("<HH", 0, 0))
    return ntlm.parse_authenticate(build_authenticate(nt=nt, user="scep-abc", domain=""), 0)


def _av(av_id: int, value: bytes) -> bytes:
    return struct.pack("<HH", av_id, len(value)) + value


@pytest.mark.parametrize(
    ("av", "verdict"),
    [
        (b"", ntlm.Verdict.OK),  # curl, go-ntlmssp: neither pair
        (_av(ntlm.AvId.TARGET_NAME, b""), ntlm.Verdict.OK),  # empty name: no name
        (_av(ntlm.AvId.CHANNEL_BINDINGS, bytes(16)), ntlm.Verdict.OK),  # zero: no bindings
        (_av(ntlm.AvId.TARGET_NAME, "HTTP/scep.example.com".encode("utf-16-le")), ntlm.Verdict.OK),
        (_av(ntlm.AvId.TARGET_NAME, b"\x00\xd8"), ntlm.Verdict.MALFORMED),  # lone surrogate
        (_av(ntlm.AvId.CHANNEL_BINDINGS, bytes(15)), ntlm.Verdict.MALFORMED),
        (_av(ntlm.AvId.CHANNEL_BINDINGS, b"\x01" * 16), ntlm.Verdict.BINDINGS_MISMATCH),
    ],
)
def test_hand_made_target_and_bindings(av: bytes, verdict: ntlm.Verdict) -> None:
    for expected in (OURS, replace(OURS, channel_bindings=None)):
        auth = _hand_made(av)
        assert ntlm.verify(auth, nt_hash("S3cret"), SERVER_CHALLENGE, b"", b"", 0, expected) is verdict


def test_names_are_checked_only_after_the_password() -> None:
    auth = _hand_made(_av(ntlm.AvId.TARGET_NAME, "HTTP/evil".encode("utf-16-le")))
    assert ntlm.verify(auth, nt_hash("wrong"), SERVER_CHALLENGE, b"", b"", 0, OURS) is ntlm.Verdict.BAD_RESPONSE


def test_client_av_pairs() -> None:
    name = "HTTP/scep.example.com".encode("utf-16-le")
    pairs = ntlm.client_av_pairs(_hand_made(_av(ntlm.AvId.TARGET_NAME, name)))
    assert pairs == {ntlm.AvId.TARGET_NAME: name}
    with pytest.raises(ntlm.NTLMError):
        ntlm.client_av_pairs(ntlm.parse_authenticate(build_authenticate(nt=b"\x11" * 24), 0))


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        ("Scep.Example.com", "scep.example.com"),
        ("scep.example.com:8443", "scep.example.com"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("host:notaport", "host:notaport"),
        ("[::1]junk", "[::1]junk"),
    ],
)
def test_normalize_host(authority: str, host: str) -> None:
    assert ntlm.normalize_host(authority) == host


@pytest.mark.parametrize(
    ("spn", "host"),
    [
        ("HTTP/Scep.example.com", "scep.example.com"),
        ("http/scep.example.com:443", "scep.example.com"),
        ("HOST/scep.example.com", None),
        ("HTTP/", None),
        ("HTTP", None),
        ("HTTP/a/b", None),
    ],
)
def test_target_name_host(spn: str, host: str | None) -> None:
    assert ntlm.target_name_host(spn) == host
