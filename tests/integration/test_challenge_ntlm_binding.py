"""NTLM target name and channel bindings on the whole app (``build_app``), over real TLS.

MsvAvTargetName must be ``HTTP/<this server>`` and MsvAvChannelBindings the
``tls-server-end-point`` binding of the certificate this server presents (MS-NLMP
2.2.2.1, RFC 5929 4.1); absent and all-zero values are accepted. Refusals are
failed logins: 401, counted towards the lockout, and no challenge is created.
pyspnego is the client, on one keep-alive connection (TLS or not).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import spnego
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID
from spnego.channel_bindings import GssChannelBindings

from challenge import ntlm
from challenge.credentials import make_credentials, nt_hash
from challenge.secret_key import load_or_create_secret_key
from config import load_config
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.records import Integration
from scep_ca.server.app import build_app, ssl_context
from store.base import Store
from store.factory import open_store

HOST = "127.0.0.1"  # what the test client sends as Host (with the port)
# MS-NLMP 2.2.2.1, spelled out here rather than taken from the code under test.
MSV_AV_CHANNEL_BINDINGS = 10


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path
    der: bytes


def _self_signed(directory: Path, name: str) -> TLSFiles:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .sign(key, hashes.SHA384())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TLSFiles(directory / "tls.pem", directory / "tls.key", cert.public_bytes(Encoding.DER))
    files.cert.write_bytes(cert.public_bytes(Encoding.PEM))
    files.key.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return files


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[TLSFiles, TLSFiles]:
    """This server's certificate, and another one (a relaying attacker's)."""
    base = Path(tmp_path_factory.mktemp("tls"))
    return _self_signed(base / "ours", "ours"), _self_signed(base / "theirs", "theirs")


def end_point(files: TLSFiles) -> bytes:
    # RFC 5929 4.1: the certificate is signed with ECDSA-SHA384, so SHA-384 of its DER.
    return b"tls-server-end-point:" + hashlib.sha384(files.der).digest()


@dataclass
class Site:
    client: TestClient  # type: ignore[type-arg]
    store: Store
    integration: Integration
    password: str
    url: str

    async def unused(self) -> int:
        return await self.store.count_unused_challenges(self.integration.id, dt.datetime.now(dt.UTC))


SiteFactory = Callable[..., Awaitable[Site]]


@pytest.fixture
async def make_site(
    tmp_path: Path,
    shared_ca: tuple[Path, CAIdentity],
    tls_files: tuple[TLSFiles, TLSFiles],
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
) -> AsyncIterator[SiteFactory]:
    count = 0

    async def factory(*, tls: bool, public_url: str | None = None) -> Site:
        nonlocal count
        count += 1
        overrides: dict[str, object] = {"data_dir": str(tmp_path / f"site{count}"), "challenge.lockout_failures": 2}
        if tls:
            overrides |= {"tls.cert": str(tls_files[0].cert), "tls.key": str(tls_files[0].key)}
        if public_url:
            overrides["server.public_url"] = public_url
        config = load_config(None, {}, overrides)
        config.data_dir.mkdir(parents=True)
        store = open_store(config)
        app = build_app(config, shared_ca[1], store)
        # The client trusts exactly our certificate: the TLS channel is the one the bindings name.
        client_tls = ssl.create_default_context(cafile=str(tls_files[0].cert)) if tls else True
        server = TestServer(app)
        await server.start_server(ssl=ssl_context(config))  # as run_server serves it
        client = await aiohttp_client(server, connector=aiohttp.TCPConnector(limit=1, ssl=client_tls))
        creds = make_credentials(load_or_create_secret_key(config.data_dir), "intega")
        integration = Integration(
            id="intega",
            name="intega",
            subject_template="CN=$USERID$",
            created_at=dt.datetime.now(dt.UTC),
            validity_days=365,
            username=creds.username,
            password_scrypt=creds.password_scrypt,
            nt_hash_encrypted=creds.nt_hash_encrypted,
        )
        await store.create_integration(integration)
        assert str(client.make_url("/")).startswith("https://" if tls else "http://")
        return Site(client, store, integration, creds.password, "/challenge/intega/certsrv/mscep_admin/")

    yield factory


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hand_made_type3(user: str, password: str, type2: bytes, av_pairs: bytes) -> bytes:
    """An NTLMv2 Type 3 (64-byte header, no MIC) whose blob carries exactly ``av_pairs``."""
    server_challenge = type2[24:32]
    blob = b"\x01\x01" + bytes(6) + bytes(8) + b"\xaa" * 8 + bytes(4) + av_pairs + struct.pack("<HH", 0, 0) + bytes(4)
    key = ntlm.ntowfv2(nt_hash(password), user, "")
    nt = hmac.new(key, server_challenge + blob, hashlib.md5).digest() + blob
    fields = [bytes(24), nt, b"", user.encode("utf-16-le"), b"", b""]
    offset, descriptors = 64, b""
    for value in fields:
        descriptors += struct.pack("<HHI", len(value), len(value), offset)
        offset += len(value)
    flags = struct.pack("<I", ntlm.Flag.UNICODE | ntlm.Flag.NTLM | ntlm.Flag.EXTENDED_SESSIONSECURITY)
    return ntlm.SIGNATURE + struct.pack("<I", ntlm.AUTHENTICATE) + descriptors + flags + b"".join(fields)


def av(av_id: int, value: bytes) -> bytes:
    return struct.pack("<HH", av_id, len(value)) + value


async def login(
    site: Site,
    *,
    hostname: str = HOST,
    bindings: bytes | None = None,
    av_pairs: bytes | None = None,
) -> int:
    """Type 1, our Type 2, then pyspnego's Type 3 (or a hand-made one with ``av_pairs``) on one connection."""
    channel_bindings = GssChannelBindings(application_data=bindings) if bindings is not None else None
    ctx = spnego.client(
        site.integration.username,
        site.password,
        hostname=hostname,
        service="HTTP",
        protocol="ntlm",
        channel_bindings=channel_bindings,
    )
    type1 = ctx.step()
    assert isinstance(type1, bytes)
    first = await site.client.get(site.url, headers={"Authorization": f"NTLM {_b64(type1)}"})
    await first.read()
    assert first.status == 401
    type2 = base64.b64decode(first.headers["WWW-Authenticate"].split(" ", 1)[1])
    if av_pairs is None:
        answer = ctx.step(type2)
        assert isinstance(answer, bytes)
    else:
        answer = hand_made_type3(site.integration.username, site.password, type2, av_pairs)
    final = await site.client.get(site.url, headers={"Authorization": f"NTLM {_b64(answer)}"})
    await final.read()
    return final.status


# -- over TLS ----------------------------------------------------------------------------


async def test_tls_bindings_of_our_certificate(make_site: SiteFactory, tls_files: tuple[TLSFiles, TLSFiles]) -> None:
    site = await make_site(tls=True)
    assert await login(site, bindings=end_point(tls_files[0])) == 200
    assert await site.unused() == 1


async def test_tls_bindings_of_another_certificate_are_a_failed_login(
    make_site: SiteFactory, tls_files: tuple[TLSFiles, TLSFiles]
) -> None:
    site = await make_site(tls=True)
    # challenge.lockout_failures is 2: counted like a wrong password, the third failure locks out.
    statuses = [await login(site, bindings=end_point(tls_files[1])) for _ in range(3)]
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    assert await login(site, bindings=end_point(tls_files[0])) == 429
    assert await site.unused() == 0


@pytest.mark.parametrize(
    "pairs",
    [b"", av(MSV_AV_CHANNEL_BINDINGS, bytes(16))],
    ids=["absent", "all-zero"],
)
async def test_tls_without_bindings(make_site: SiteFactory, pairs: bytes) -> None:
    site = await make_site(tls=True)
    assert await login(site, av_pairs=pairs) == 200
    assert await site.unused() == 1


# -- plain HTTP -------------------------------------------------------------------------


async def test_http_bindings_cannot_match(make_site: SiteFactory, tls_files: tuple[TLSFiles, TLSFiles]) -> None:
    site = await make_site(tls=False)
    assert await login(site, bindings=end_point(tls_files[0])) == 401
    assert await site.unused() == 0
    assert await login(site, av_pairs=av(MSV_AV_CHANNEL_BINDINGS, bytes(16))) == 200


@pytest.mark.parametrize(
    ("hostname", "status"),
    [(HOST, 200), ("scep.example.com", 401), ("unspecified", 401)],
)
async def test_target_name_names_the_host_header(make_site: SiteFactory, hostname: str, status: int) -> None:
    site = await make_site(tls=False)
    assert await login(site, hostname=hostname) == status
    assert await site.unused() == (1 if status == 200 else 0)


async def test_target_name_absent(make_site: SiteFactory) -> None:
    site = await make_site(tls=False)
    assert await login(site, av_pairs=b"") == 200


# -- behind a TLS-terminating proxy (public_url https, plain HTTP here) ------------------


async def test_public_url_host_is_the_name(make_site: SiteFactory, tls_files: tuple[TLSFiles, TLSFiles]) -> None:
    site = await make_site(tls=False, public_url="https://SCEP.example.com/")
    # The Host header is the client's choice (a relaying attacker's too): not the name here.
    assert await login(site, hostname=HOST) == 401
    # Bindings to the proxy's certificate cannot be checked here; the target name carries the check.
    assert await login(site, hostname="scep.example.com", bindings=end_point(tls_files[1])) == 200
    assert await site.unused() == 1
