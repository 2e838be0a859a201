"""Stand-ins for the services validators call, as aiohttp apps on 127.0.0.1.

``IntuneStandIn`` follows Microsoft's contract (README "Validators"; reference library
microsoft/Intune-Resource-Access, src/CsrValidation): an Entra token endpoint, Graph's
service discovery and the three ScepActions, recording every call in order.
``WebhookReceiver`` checks ``X-Smallstep-Signature`` as step-ca's webhook receivers do.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_SECRET = "s3cr3t~client~value"


@dataclass(frozen=True)
class StandInTls:
    """A test CA and a certificate for 127.0.0.1 signed by it: the stand-ins serve https.

    ``ca_file`` is what ``intune.ca_file`` names; ``pin`` is the SHA-256 of the server's
    certificate (hex), what a webhook integration's ``tls_pin_sha256`` holds.
    """

    ca_file: Path
    cert_file: Path
    key_file: Path
    pin: str

    @classmethod
    def create(cls, directory: Path, host: str = "127.0.0.1") -> StandInTls:
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "stand-in test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(*[False] * 5, True, True, False, False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        tls = cls(directory / "standin-ca.pem", directory / "standin.pem", directory / "standin.key", "")
        tls.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        tls.cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        tls.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        pin = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
        return cls(tls.ca_file, tls.cert_file, tls.key_file, pin)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@dataclass
class Call:
    name: str
    headers: dict[str, str]
    body: dict[str, object]


@dataclass
class IntuneStandIn:
    calls: list[Call] = field(default_factory=list)
    validate_code: str = "Success"
    success_code: str = "Success"
    success_status: int = 200
    delay_seconds: float = 0.0
    # Extra time successNotification takes: a resend can arrive while it is in flight.
    success_delay_seconds: float = 0.0
    base: str = ""
    # expires_in of every token, in seconds (Entra gives about an hour).
    token_lifetime: int = 3599

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_get("/v1.0/servicePrincipals/appId={app_id}/endpoints", self._endpoints)
        app.router.add_post("/intune/ScepActions/{action}", self._action)
        return app

    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.calls.append(
            Call(f"token:{form.get('scope')}", dict(request.headers), {k: str(v) for k, v in form.items()})
        )
        if (
            request.match_info["tenant"] != TENANT
            or form.get("client_id") != CLIENT_ID
            or form.get("client_secret") != CLIENT_SECRET
            or form.get("grant_type") != "client_credentials"
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": self.token_lifetime, "access_token": f"tok-{form['scope']}"}
        )

    async def _endpoints(self, request: web.Request) -> web.Response:
        self.calls.append(Call("discovery", dict(request.headers), {}))
        if request.headers.get("Authorization") != "Bearer tok-https://graph.microsoft.com/.default":
            return web.json_response({"error": {"code": "InvalidAuthenticationToken"}}, status=401)
        return web.json_response(
            {
                "value": [
                    {"providerName": "SomeOtherService", "uri": f"{self.base}/other"},
                    {"providerName": "scepRequestValidationFEService", "uri": f"{self.base}/intune"},
                ]
            }
        )

    async def _action(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        body = await request.json()
        self.calls.append(Call(action, dict(request.headers), body))
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if action == "successNotification" and self.success_delay_seconds:
            await asyncio.sleep(self.success_delay_seconds)
        if request.headers.get("Authorization") != "Bearer tok-https://api.manage.microsoft.com//.default":
            return web.json_response({"code": "Unauthorized"}, status=401)
        if request.headers.get("api-version") != "2018-02-20" or not request.headers.get("client-request-id"):
            return web.json_response({"code": "BadRequest", "errorDescription": "headers"}, status=400)
        if action == "validateRequest":
            return web.json_response({"code": self.validate_code, "errorDescription": ""})
        if action == "successNotification":
            return web.json_response({"code": self.success_code, "errorDescription": ""}, status=self.success_status)
        return web.json_response({"code": "Success", "errorDescription": ""})


@dataclass
class WebhookReceiver:
    secret: bytes
    allow: bool = True
    delay_seconds: float = 0.0
    seen: list[dict[str, object]] = field(default_factory=list)
    bad_signatures: int = 0
    # Calls being answered now, and the most there ever were at once.
    in_flight: int = 0
    max_in_flight: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/scepchallenge", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        # As step-ca's receivers do: HMAC-SHA256 of the exact body, compared in constant time.
        expected = hmac.new(self.secret, raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Smallstep-Signature", "")):
            self.bad_signatures += 1
            return web.json_response(
                {"allow": False, "error": {"code": "bad-signature", "message": "hmac"}}, status=401
            )
        self.seen.append({"webhook_id": request.headers.get("X-Smallstep-Webhook-ID"), **json.loads(raw)})
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
        finally:
            self.in_flight -= 1
        return web.json_response({"allow": self.allow})


@dataclass
class SegmentedAnswer:
    """A raw HTTP/1.1 server that writes one answer in several TCP segments, pausing between them.

    ``body`` goes out in ``segments`` pieces (each flushed, then ``pause`` seconds), with
    Content-Length when ``declare_length`` is set, else delimited by closing the connection.
    """

    body: bytes
    segments: int = 4
    pause: float = 0.05
    declare_length: bool = True
    requests: int = 0

    async def start(self) -> tuple[asyncio.Server, str]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        return server, f"http://127.0.0.1:{port}/"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        self.requests += 1
        fields = [b"HTTP/1.1 200 OK", b"Content-Type: application/json", b"Connection: close"]
        if self.declare_length:
            fields.append(b"Content-Length: %d" % len(self.body))
        writer.write(b"\r\n".join(fields) + b"\r\n\r\n")
        await writer.drain()
        step = -(-len(self.body) // self.segments)
        for start in range(0, len(self.body), step):
            await asyncio.sleep(self.pause)
            writer.write(self.body[start : start + step])
            await writer.drain()
        writer.close()
        await writer.wait_closed()
