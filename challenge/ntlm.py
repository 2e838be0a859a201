"""NTLM acceptor primitives (MS-NLMP): parse Type 1 and 3, build Type 2, verify NTLMv2.

Pure functions and immutable records: no I/O, no clock, no randomness (the caller
passes the server challenge and the timestamp). Only NTLMv2 is accepted. NTLMv1,
NTLMv1 with extended session security ("NTLM2 session response") and LM are
refused: their 24-byte responses can be cracked back to the NT hash offline.

Connection state (which server challenge belongs to which TCP connection) lives in
``challenge.service``; this module never keeps anything between calls.

Why not pyspnego's NTLM acceptor: it reads its credentials from a file named by the
``NTLM_USER_FILE`` environment variable (one process-wide file of passwords or NT hashes),
while ours are per integration in the store and a rotation applies at once; and with its
default ``LM_COMPAT_LEVEL`` (3) an acceptor still takes LM and NTLMv1 responses, which this
module refuses outright. pyspnego stays a test dependency: the tests and the fuzz corpus use
it as an independent NTLM *client*.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
from cryptography.hazmat.primitives.ciphers import Cipher

SIGNATURE = b"NTLMSSP\x00"
NEGOTIATE = 1
CHALLENGE = 2
AUTHENTICATE = 3

# NTLM tokens are a few hundred bytes; aiohttp caps header lines at 8 KiB anyway.
MAX_MESSAGE_BYTES = 8192


class Flag(enum.IntFlag):
    """NEGOTIATE flags (MS-NLMP 2.2.2.5) that this acceptor reads or sets."""

    UNICODE = 0x00000001
    OEM = 0x00000002
    REQUEST_TARGET = 0x00000004
    SIGN = 0x00000010
    SEAL = 0x00000020
    LM_KEY = 0x00000080
    NTLM = 0x00000200
    ALWAYS_SIGN = 0x00008000
    TARGET_TYPE_DOMAIN = 0x00010000
    TARGET_TYPE_SERVER = 0x00020000
    EXTENDED_SESSIONSECURITY = 0x00080000
    TARGET_INFO = 0x00800000
    VERSION = 0x02000000
    NEGOTIATE_128 = 0x20000000
    KEY_EXCH = 0x40000000
    NEGOTIATE_56 = 0x80000000


# Flags echoed in the Type 2 when the client asked for them. We never sign or seal
# (HTTP authentication only), but refusing them would make some clients give up.
_ECHOED = (
    Flag.SIGN
    | Flag.SEAL
    | Flag.EXTENDED_SESSIONSECURITY
    | Flag.VERSION
    | Flag.NEGOTIATE_128
    | Flag.KEY_EXCH
    | Flag.NEGOTIATE_56
)


class AvId(enum.IntEnum):
    """AV_PAIR identifiers (MS-NLMP 2.2.2.1) used here."""

    EOL = 0
    NB_COMPUTER_NAME = 1
    NB_DOMAIN_NAME = 2
    DNS_COMPUTER_NAME = 3
    DNS_DOMAIN_NAME = 4
    FLAGS = 6
    TIMESTAMP = 7
    TARGET_NAME = 9
    CHANNEL_BINDINGS = 10


# MsvAvFlags bit: the AUTHENTICATE message carries a MIC.
_AV_FLAG_MIC_PRESENT = 0x00000002

# Windows Server 2022 (10.0 build 20348), NTLM revision 15: what NDES hosts send.
_VERSION = struct.pack("<BBH3xB", 10, 0, 20348, 15)

# AUTHENTICATE layout: fixed fields, then optional session key, flags, version, MIC.
_AUTH_MIN_HEADER = 52
_AUTH_SESSION_KEY_END = 60
_AUTH_FLAGS_END = 64
_AUTH_MIC_OFFSET = 72
_AUTH_MIC_END = 88

# NTLMv2 response: NTProofStr (16) then the blob: RespType, HiRespType, 6 reserved,
# timestamp (8), client challenge (8), 4 reserved, AV pairs.
_NT_PROOF_BYTES = 16
_BLOB_HEADER_BYTES = 28
_V1_RESPONSE_BYTES = 24


class NTLMError(Exception):
    """A message is malformed (wrong signature, type, or a field outside the message)."""


class Verdict(enum.Enum):
    """Outcome of checking an AUTHENTICATE message."""

    OK = "ok"
    ANONYMOUS = "anonymous"
    V1_REFUSED = "ntlmv1-or-lm-refused"
    MALFORMED = "malformed"
    BAD_RESPONSE = "bad-response"
    BAD_MIC = "bad-mic"
    TARGET_MISMATCH = "target-name-mismatch"
    BINDINGS_MISMATCH = "channel-bindings-mismatch"


@dataclass(frozen=True)
class NegotiateMessage:
    flags: int
    raw: bytes


@dataclass(frozen=True)
class AuthenticateMessage:
    lm_response: bytes
    nt_response: bytes
    domain: str
    user: str
    workstation: str
    encrypted_session_key: bytes
    # None when the message is too short to carry its own flags (very old clients).
    flags: int | None
    # Whether the header is long enough to hold a MIC at offset 72.
    has_mic_field: bool
    raw: bytes


@dataclass(frozen=True)
class Expected:
    """What the client's MsvAvTargetName and MsvAvChannelBindings must name (MS-NLMP 2.2.2.1).

    ``target_hosts``: lowercase host names (``normalize_host``) a target name
    ``HTTP/<host>`` may carry; empty: any non-empty target name is refused.
    ``channel_bindings``: the MD5 of our ``gss_channel_bindings_struct``
    (``channel_bindings_hash``), or None when there is no TLS channel between the
    client and us: then any non-zero bindings are refused, as nothing could match.
    ``tls_offloaded``: TLS ends at a proxy whose certificate we do not hold; the
    bindings cannot be checked and are ignored (IIS's Extended Protection "Proxy" mode),
    and the target name carries the check.
    """

    target_hosts: frozenset[str]
    channel_bindings: bytes | None
    tls_offloaded: bool = False


@dataclass(frozen=True)
class TargetNames:
    """Names the server announces in its Type 2 (NetBIOS and DNS forms)."""

    netbios_domain: str = "SCEPCA"
    netbios_computer: str = "SCEPCA"
    dns_domain: str = "scepca"
    dns_computer: str = "scepca"


def message_type(data: bytes) -> int:
    """The NTLM message type of ``data``; NTLMError unless it is an NTLMSSP message."""
    if len(data) < 12 or not data.startswith(SIGNATURE):
        raise NTLMError("not an NTLMSSP message")
    if len(data) > MAX_MESSAGE_BYTES:
        raise NTLMError("NTLM message too long")
    (kind,) = struct.unpack_from("<I", data, 8)
    return int(kind)


def parse_negotiate(data: bytes) -> NegotiateMessage:
    """Parse a Type 1. Only the flags matter; domain and workstation hints are ignored."""
    if message_type(data) != NEGOTIATE:
        raise NTLMError("not a NEGOTIATE message")
    if len(data) < 16:
        raise NTLMError("NEGOTIATE message too short")
    (flags,) = struct.unpack_from("<I", data, 12)
    return NegotiateMessage(flags=flags, raw=bytes(data))


def _field(data: bytes, offset: int) -> tuple[bytes, int]:
    """A (len, maxlen, offset) security buffer: its bytes and its payload offset."""
    length, _max_length, start = struct.unpack_from("<HHI", data, offset)
    if start + length > len(data):
        raise NTLMError("field outside the message")
    return data[start : start + length], start if length else len(data)


def _decode(raw: bytes, unicode: bool) -> str:
    if not unicode:
        # OEM code page: unknown to us; latin-1 keeps every byte, and only ASCII
        # user names can match ours anyway.
        return raw.decode("latin-1")
    try:
        return raw.decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise NTLMError("string is not valid UTF-16LE") from exc


def parse_authenticate(data: bytes, challenge_flags: int) -> AuthenticateMessage:
    """Parse a Type 3. ``challenge_flags`` (from our Type 2) decide the string encoding
    when the message does not carry flags of its own."""
    if message_type(data) != AUTHENTICATE:
        raise NTLMError("not an AUTHENTICATE message")
    if len(data) < _AUTH_MIN_HEADER:
        raise NTLMError("AUTHENTICATE message too short")
    lm, lm_at = _field(data, 12)
    nt, nt_at = _field(data, 20)
    domain_raw, domain_at = _field(data, 28)
    user_raw, user_at = _field(data, 36)
    workstation_raw, ws_at = _field(data, 44)
    payload_start = min(lm_at, nt_at, domain_at, user_at, ws_at)
    session_key = b""
    flags: int | None = None
    if payload_start >= _AUTH_SESSION_KEY_END and len(data) >= _AUTH_SESSION_KEY_END:
        session_key, key_at = _field(data, 52)
        payload_start = min(payload_start, key_at)
    if payload_start >= _AUTH_FLAGS_END and len(data) >= _AUTH_FLAGS_END:
        (flags,) = struct.unpack_from("<I", data, 60)
    effective = challenge_flags if flags is None else flags
    unicode = bool(effective & Flag.UNICODE)
    return AuthenticateMessage(
        lm_response=lm,
        nt_response=nt,
        domain=_decode(domain_raw, unicode),
        user=_decode(user_raw, unicode),
        workstation=_decode(workstation_raw, unicode),
        encrypted_session_key=session_key,
        flags=flags,
        has_mic_field=payload_start >= _AUTH_MIC_END and len(data) >= _AUTH_MIC_END,
        raw=bytes(data),
    )


def _av_pair(av_id: int, value: bytes) -> bytes:
    return struct.pack("<HH", av_id, len(value)) + value


def parse_av_pairs(data: bytes) -> dict[int, bytes]:
    """AV pairs up to MsvAvEOL (first occurrence of each id wins); NTLMError if truncated."""
    pairs: dict[int, bytes] = {}
    offset = 0
    while True:
        if offset + 4 > len(data):
            raise NTLMError("AV pairs without MsvAvEOL")
        av_id, length = struct.unpack_from("<HH", data, offset)
        offset += 4
        if av_id == AvId.EOL:
            return pairs
        if offset + length > len(data):
            raise NTLMError("AV pair outside the message")
        pairs.setdefault(av_id, data[offset : offset + length])
        offset += length


def client_av_pairs(auth: AuthenticateMessage) -> dict[int, bytes]:
    """The AV pairs of the client's NTLMv2 blob (after NTProofStr and the blob header).

    NTLMError when the NT response is not an NTLMv2 response or its pairs are truncated.
    Only trustworthy once ``verify`` has checked the NTProofStr, which covers the blob.
    """
    nt = auth.nt_response
    if len(nt) < _NT_PROOF_BYTES + _BLOB_HEADER_BYTES or nt[_NT_PROOF_BYTES] != 1 or nt[_NT_PROOF_BYTES + 1] != 1:
        raise NTLMError("not an NTLMv2 response")
    return parse_av_pairs(nt[_NT_PROOF_BYTES + _BLOB_HEADER_BYTES :])


def normalize_host(authority: str) -> str:
    """The host of ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``: lowercase, no port, no brackets."""
    host = authority.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :] if end > 0 else ""
        if end > 0 and (not rest or (rest.startswith(":") and rest[1:].isdigit())):
            return host[1:end]
        return host
    name, sep, port = host.rpartition(":")
    if sep and ":" not in name and port.isdigit():
        return name
    return host


def target_name_host(target_name: str) -> str | None:
    """The host an MsvAvTargetName ``HTTP/<host>[:port]`` names; None for another service class or form.

    The service class is compared case-insensitively (SPNs are); a three-part SPN
    (``HTTP/host/name``) names a service we are not.
    """
    service, sep, host = target_name.partition("/")
    if not sep or service.upper() != "HTTP" or not host or "/" in host:
        return None
    return normalize_host(host)


def channel_bindings_hash(application_data: bytes) -> bytes:
    """MD5 of a ``gss_channel_bindings_struct`` with no addresses (RFC 2744 3.11, MS-NLMP 3.1.5.1.2).

    Both address types are GSS_C_AF_UNSPEC (0) with empty addresses; integers are
    little-endian, as Windows and pyspnego pack them. For TLS, ``application_data``
    is ``b"tls-server-end-point:" + hash`` (RFC 5929 4.1).
    """
    packed = struct.pack("<II", 0, 0) + struct.pack("<II", 0, 0) + struct.pack("<I", len(application_data))
    return hashlib.md5(packed + application_data).digest()


_NO_BINDINGS = b"\x00" * 16


def _check_binding(av_pairs: dict[int, bytes], expected: Expected) -> Verdict:
    """MsvAvTargetName and MsvAvChannelBindings against ``expected`` (absent or empty: accepted)."""
    raw_name = av_pairs.get(AvId.TARGET_NAME, b"")
    if raw_name:
        try:
            name = raw_name.decode("utf-16-le")
        except UnicodeDecodeError:
            return Verdict.MALFORMED
        if target_name_host(name) not in expected.target_hosts:
            return Verdict.TARGET_MISMATCH
    bindings = av_pairs.get(AvId.CHANNEL_BINDINGS)
    if bindings is not None:
        if len(bindings) != 16:
            return Verdict.MALFORMED
        # All zeros: the client has no bindings to offer (MS-NLMP 2.2.2.1).
        matches = expected.channel_bindings is not None and hmac.compare_digest(bindings, expected.channel_bindings)
        if bindings != _NO_BINDINGS and not expected.tls_offloaded and not matches:
            return Verdict.BINDINGS_MISMATCH
    return Verdict.OK


def challenge_flags_for(negotiate_flags: int) -> int:
    """The flags of our Type 2, given the client's Type 1 flags."""
    flags = Flag.NTLM | Flag.ALWAYS_SIGN | Flag.REQUEST_TARGET | Flag.TARGET_INFO | Flag.TARGET_TYPE_SERVER
    flags |= Flag.UNICODE if negotiate_flags & Flag.UNICODE or not negotiate_flags & Flag.OEM else Flag.OEM
    flags |= negotiate_flags & _ECHOED
    return int(flags)


def build_challenge(
    negotiate_flags: int, server_challenge: bytes, timestamp_filetime: int, names: TargetNames
) -> bytes:
    """A Type 2 answering a Type 1 with ``negotiate_flags``.

    The target info always holds MsvAvTimestamp: NTLMv2 clients then add a MIC (which
    ``verify`` checks) and curl switches to NTLMv2 only when target info is present.
    """
    if len(server_challenge) != 8:
        raise ValueError("the server challenge is 8 bytes")
    flags = challenge_flags_for(negotiate_flags)
    unicode = bool(flags & Flag.UNICODE)
    target_name = names.netbios_domain.encode("utf-16-le" if unicode else "latin-1")
    target_info = b"".join(
        [
            _av_pair(AvId.NB_DOMAIN_NAME, names.netbios_domain.encode("utf-16-le")),
            _av_pair(AvId.NB_COMPUTER_NAME, names.netbios_computer.encode("utf-16-le")),
            _av_pair(AvId.DNS_DOMAIN_NAME, names.dns_domain.encode("utf-16-le")),
            _av_pair(AvId.DNS_COMPUTER_NAME, names.dns_computer.encode("utf-16-le")),
            _av_pair(AvId.TIMESTAMP, struct.pack("<Q", timestamp_filetime)),
            _av_pair(AvId.EOL, b""),
        ]
    )
    header_len = 56
    name_at = header_len
    info_at = name_at + len(target_name)
    header = (
        SIGNATURE
        + struct.pack("<I", CHALLENGE)
        + struct.pack("<HHI", len(target_name), len(target_name), name_at)
        + struct.pack("<I", flags)
        + server_challenge
        + b"\x00" * 8
        + struct.pack("<HHI", len(target_info), len(target_info), info_at)
        + _VERSION
    )
    return header + target_name + target_info


def _hmac_md5(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.md5).digest()


def ntowfv2(nt_hash: bytes, user: str, domain: str) -> bytes:
    """NTOWFv2 = HMAC-MD5(NT hash, UTF-16LE(UPPER(user) + domain)), domain exactly as sent."""
    return _hmac_md5(nt_hash, (user.upper() + domain).encode("utf-16-le"))


def _exported_session_key(session_base_key: bytes, auth: AuthenticateMessage, flags: int) -> bytes:
    # NTLMv2: KeyExchangeKey is the SessionBaseKey; with KEY_EXCH the client sent a
    # random session key encrypted under it with RC4 (MS-NLMP 3.2.5.1.2).
    if flags & Flag.KEY_EXCH and auth.encrypted_session_key:
        if len(auth.encrypted_session_key) != 16:
            raise NTLMError("encrypted session key is not 16 bytes")
        decryptor = Cipher(ARC4(session_base_key), mode=None).decryptor()
        return decryptor.update(auth.encrypted_session_key) + decryptor.finalize()
    return session_base_key


def verify(
    auth: AuthenticateMessage,
    nt_hash: bytes,
    server_challenge: bytes,
    negotiate_raw: bytes,
    challenge_raw: bytes,
    challenge_flags: int,
    binding: Expected | None = None,
) -> Verdict:
    """Check a Type 3 against the NT hash of the claimed user's password.

    Accepts only NTLMv2. When the client's blob announces a MIC (MsvAvFlags bit 2,
    which clients set because our Type 2 carries a timestamp), the MIC over the
    three messages must verify too, so flags or names cannot be altered in transit.

    With ``binding``, a target name or channel bindings in the blob must name this
    server (MS-NLMP 3.2.5.1.2 with Extended Protection required): a response made
    for another service or TLS channel is not accepted here, which is what defeats
    relaying it. None skips that check.
    """
    nt = auth.nt_response
    if not nt:
        return Verdict.V1_REFUSED if auth.lm_response.strip(b"\x00") else Verdict.ANONYMOUS
    if len(nt) == _V1_RESPONSE_BYTES:
        return Verdict.V1_REFUSED
    if len(nt) < _NT_PROOF_BYTES + _BLOB_HEADER_BYTES:
        return Verdict.MALFORMED
    proof, blob = nt[:_NT_PROOF_BYTES], nt[_NT_PROOF_BYTES:]
    if blob[0] != 1 or blob[1] != 1:
        return Verdict.MALFORMED
    key = ntowfv2(nt_hash, auth.user, auth.domain)
    expected = _hmac_md5(key, server_challenge + blob)
    if not hmac.compare_digest(proof, expected):
        return Verdict.BAD_RESPONSE
    # The blob is now known to come from someone holding the NT hash: parse it.
    try:
        av_pairs = client_av_pairs(auth)
    except NTLMError:
        return Verdict.MALFORMED
    av_flags_raw = av_pairs.get(AvId.FLAGS, b"")
    av_flags = struct.unpack("<I", av_flags_raw)[0] if len(av_flags_raw) == 4 else 0
    if av_flags & _AV_FLAG_MIC_PRESENT:
        if not auth.has_mic_field:
            return Verdict.MALFORMED
        flags = challenge_flags if auth.flags is None else auth.flags
        try:
            exported = _exported_session_key(_hmac_md5(key, proof), auth, flags)
        except NTLMError:
            return Verdict.MALFORMED
        mic = auth.raw[_AUTH_MIC_OFFSET:_AUTH_MIC_END]
        zeroed = auth.raw[:_AUTH_MIC_OFFSET] + b"\x00" * 16 + auth.raw[_AUTH_MIC_END:]
        expected_mic = _hmac_md5(exported, negotiate_raw + challenge_raw + zeroed)
        if not hmac.compare_digest(mic, expected_mic):
            return Verdict.BAD_MIC
    if binding is not None:
        return _check_binding(av_pairs, binding)
    return Verdict.OK


def filetime(unix_seconds: float) -> int:
    """A Windows FILETIME (100 ns ticks since 1601-01-01) for a Unix time."""
    return int((unix_seconds + 11644473600) * 10_000_000)
