#!/usr/bin/env python3
"""Capture PKIOperation requests from the real clients installed here against OUR server.

    python scripts/capture_vectors.py [--out tests/vectors/scep-ca-YYYY-MM-DD]

Starts a throwaway ``scep-ca serve`` (own data dir, 127.0.0.1, free port) with one integration
(subject ``CN=$USERID$,OU=MDM,O=scep-client,C=US``), puts a recording HTTP proxy on loopback in
front of it, and enrolls once with each real client through the proxy:

* micromdm ``scepclient`` (Debian ``scep``), see ``tests.e2e.clients.run_scepclient``;
* certmonger (Debian ``certmonger``): a private daemon on a private D-Bus bus
  (``tests.e2e.clients.Certmonger``), ``getcert add-scep-ca`` with the URL only, then
  ``getcert request``. The message the proxy saw is compared with the ``scep_req`` the daemon
  stored.

Each client must end with a certificate (the capture fails otherwise). The proxy records the
exact bytes on the wire: the POST body, or the GET ``message=`` parameter (percent- and
base64-decoded). The output folder is emptied, then gets each request as
``<client>-pkcsreq.der``, the device key as ``<client>-device.key``, the server's ``ra.pem``,
``ra.key`` and ``ca.pem``, ``manifest.json``; finally ``scripts/make_vectors.py`` adds the
built cipher x digest combinations and writes README.md.

Everything stays on 127.0.0.1; every process started here is stopped on the way out.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import http.client
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import make_vectors  # noqa: E402
from asn1crypto import pem  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from scep_ca.asn1.ber import children, read_tlv  # noqa: E402
from scep_ca.protocol.client import open_reply  # noqa: E402
from scep_ca.protocol.enums import PKIStatus  # noqa: E402
from scep_ca.protocol.message import decode_pki_message  # noqa: E402
from tests.e2e import clients  # noqa: E402
from tests.e2e.conftest import DEFAULT_SUBJECT, ScepCaServer  # noqa: E402

LOOPBACK = clients.LOOPBACK


@dataclass(frozen=True)
class Exchange:
    method: str
    target: str  # the raw request target (path and query, still percent-encoded)
    request_headers: dict[str, str]
    body: bytes
    status: int
    reply_content_type: str
    reply: bytes

    @property
    def operation(self) -> str:
        query = urllib.parse.urlsplit(self.target).query
        for pair in query.split("&"):
            key, _, value = pair.partition("=")
            if key.lower() == "operation":
                return urllib.parse.unquote(value)
        return ""

    def raw_message(self) -> str:
        """The GET ``message`` parameter as it came (still percent-encoded)."""
        query = urllib.parse.urlsplit(self.target).query
        for pair in query.split("&"):
            key, _, value = pair.partition("=")
            if key.lower() == "message":
                return value
        return ""

    def pki_message(self) -> bytes:
        if self.method == "POST" and self.body:
            return self.body
        return base64.b64decode(urllib.parse.unquote(self.raw_message()))


class RecordingProxy:
    """A loopback HTTP proxy (reverse: clients talk to it as if it were the server) that records
    every request and answer byte for byte."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def take(self) -> list[Exchange]:
        with self._lock:
            taken, self.exchanges = self.exchanges, []
        return taken

    def start(self) -> RecordingProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn = http.client.HTTPConnection(LOOPBACK, proxy.upstream_port, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    reply = resp.read()
                    ctype = resp.getheader("Content-Type") or ""
                    status = resp.status
                finally:
                    conn.close()
                with proxy._lock:
                    proxy.exchanges.append(Exchange(self.command, self.path, headers, body, status, ctype, reply))
                self.send_response(status)
                if ctype:
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_GET(self) -> None:
                self._forward()

            def do_POST(self) -> None:
                self._forward()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="recording-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


@contextmanager
def running(server: ScepCaServer) -> Iterator[ScepCaServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def package_version(package: str) -> str:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def only_pki_operation(exchanges: list[Exchange], client: str) -> Exchange:
    ops = [e for e in exchanges if e.operation == "PKIOperation"]
    if len(ops) != 1:
        raise SystemExit(f"{client}: expected one PKIOperation, saw {[(e.method, e.target[:80]) for e in exchanges]}")
    return ops[0]


def describe_transport(exchange: Exchange) -> str:
    if exchange.method == "POST":
        ctype = exchange.request_headers.get("Content-Type", "(none)")
        message = "no message=" if "message=" not in exchange.target else "message= in the query"
        return f"POST, Content-Type: {ctype}, {message}"
    return f"GET, message= of {len(exchange.raw_message())} characters (percent-encoded base64)"


def checked_entry(
    folder: Path,
    client: str,
    exchange: Exchange,
    device_key: Path,
    *,
    version: str,
    command: str,
    challenge: str,
    subject: str,
    today: str,
) -> dict[str, Any]:
    """Write ``<client>-pkcsreq.der`` and ``<client>-device.key``; check both; the manifest entry."""
    der = exchange.pki_message()
    name = f"{client}-pkcsreq.der"
    (folder / name).write_bytes(der)
    key_name = f"{client}-device.key"
    shutil.copyfile(device_key, folder / key_name)
    make_vectors.openssl_cmsout(folder / name)
    _, recipient = make_vectors.load_recipient(folder)
    cipher, digest, tid = make_vectors.check_request(folder / name, recipient)
    # The server answered SUCCESS, and the reply opens with the device key.
    msg = decode_pki_message(der)
    key = serialization.load_pem_private_key(device_key.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signer = x509.load_der_x509_certificate(msg.signer_cert_der)
    reply = open_reply(exchange.reply, signer, key)
    if reply.status is not PKIStatus.SUCCESS:
        raise SystemExit(f"{client}: the server answered {reply.status.name} {reply.fail_info}")
    return {
        "file": name,
        "client": client,
        "version": version,
        "date": today,
        "command": command,
        "transport": describe_transport(exchange),
        "cipher": make_vectors.CIPHER_NAMES[cipher],
        "digest": make_vectors.DIGEST_NAMES[digest],
        "cipher_id": cipher.value,
        "digest_id": digest.value,
        "transaction_id": tid,
        "challenge": challenge,
        "subject": subject,
        "device_key": key_name,
        "notes": (
            f"{encoding_notes(der)}; signer {signer.subject.rfc4514_string()}; "
            f"User-Agent: {exchange.request_headers.get('User-Agent', '(none)')}"
        ),
    }


def _indefinite(data: bytes) -> bool:
    """Whether any TLV in ``data`` (walking constructed values) uses the indefinite length form."""
    pos = 0
    while pos < len(data):
        tlv = read_tlv(data, pos)
        # SCEP uses single-byte tags only, so the length octet follows the tag octet.
        if tlv.constructed and (data[pos + 1] == 0x80 or _indefinite(tlv.content)):
            return True
        pos = tlv.end
    return False


def encoding_notes(der: bytes) -> str:
    """How the message is encoded: lengths of the outer SignedData and of the EnvelopedData, and
    whether encryptedContent is a constructed (BER) OCTET STRING."""
    msg = decode_pki_message(der)
    assert msg.content is not None
    outer = "indefinite lengths" if _indefinite(der) else "definite lengths"
    env = "indefinite lengths" if _indefinite(msg.content) else "definite lengths"
    info = children(read_tlv(msg.content).content)
    fields = [
        f for f in children(children(info[1].content)[0].content)[1:] if not (f.tag_class == 2 and f.tag_number == 0)
    ]
    encrypted = children(fields[1].content)[2]
    segments = "constructed (BER)" if encrypted.constructed else "primitive"
    return f"SignedData {outer}; EnvelopedData {env}, encryptedContent {segments}"


def capture(folder: Path, workdir: Path) -> list[dict[str, Any]]:
    today = dt.date.today().isoformat()
    entries: list[dict[str, Any]] = []
    with running(ScepCaServer(workdir / "server")) as server:
        integration = server.create_integration("vectors", DEFAULT_SUBJECT)
        iid = integration["id"]
        # ra.pem/ra.key in a vector folder: the RA the requests are encrypted to, which is the
        # encryption RA of the default pair (ra-enc.*) or a combined RA.
        enc = "ra-enc" if (server.data_dir / "ra-enc.pem").exists() else "ra"
        for src, dst in ((f"{enc}.pem", "ra.pem"), (f"{enc}.key", "ra.key"), ("ca.pem", "ca.pem")):
            shutil.copyfile(server.data_dir / src, folder / dst)
        proxy = RecordingProxy(server.port).start()
        try:
            scep_url = proxy.url(f"/scep/{iid}")

            # scepclient ------------------------------------------------------------------------
            challenge = server.challenge(iid)
            result = clients.run_scepclient(scep_url, challenge, workdir / "scepclient", subject_cn="vector-scepclient")
            if not result.issued:
                raise SystemExit(f"scepclient did not enroll:\n{result.describe()}")
            exchange = only_pki_operation(proxy.take(), "scepclient")
            entries.append(
                checked_entry(
                    folder,
                    "scepclient",
                    exchange,
                    result.key_path,
                    version=f"2.1.0 (Debian scep {package_version('scep')})",
                    command=(
                        f"scepclient -server-url http://127.0.0.1:PORT/scep/{iid} -private-key key.pem "
                        "-certificate cert.pem -cn vector-scepclient -organization scep-client -ou MDM -country US "
                        "-keySize 2048 -challenge CHALLENGE -debug"
                    ),
                    challenge=challenge,
                    subject="CN=vector-scepclient,OU=MDM,O=scep-client,C=US",
                    today=today,
                )
            )

            # certmonger ------------------------------------------------------------------------
            with clients.Certmonger(workdir / "certmonger") as cm:
                cm.add_scep_ca("scep-ca", scep_url)
                challenge = server.challenge(iid)
                key_path = workdir / "certmonger-key.pem"
                cert_path = workdir / "certmonger-cert.pem"
                subject = "C=US,O=scep-client,OU=MDM,CN=vector-certmonger"
                state = cm.request("scep-ca", key_path, cert_path, challenge, subject)
                if state.state != "MONITORING":
                    raise SystemExit(f"certmonger did not enroll: {state.stdout}\n{cm.daemon_log()[-3000:]}")
                stored = cm.request_record(cert_path).get("scep_req", "")
            exchange = only_pki_operation(proxy.take(), "certmonger")
            _, _, stored_der = pem.unarmor(stored.encode())
            if stored_der != exchange.pki_message():
                raise SystemExit("certmonger's stored scep_req differs from what the proxy saw")
            entries.append(
                checked_entry(
                    folder,
                    "certmonger",
                    exchange,
                    key_path,
                    version=f"0.79.17 (Debian certmonger {package_version('certmonger')})",
                    command=(
                        f"getcert add-scep-ca -s -c scep-ca -u http://127.0.0.1:PORT/scep/{iid}; "
                        f"getcert request -s -c scep-ca -k key.pem -f cert.pem -N {subject} -L CHALLENGE -w"
                    ),
                    challenge=challenge,
                    subject="CN=vector-certmonger,OU=MDM,O=scep-client,C=US",
                    today=today,
                )
            )
        finally:
            proxy.stop()
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out",
        type=Path,
        default=make_vectors.VECTORS / f"scep-ca-{dt.date.today().isoformat()}",
        help="vector folder (emptied first)",
    )
    args = parser.parse_args(argv)
    folder: Path = args.out
    if folder.resolve().parent != make_vectors.VECTORS.resolve() or not folder.name.startswith("scep-ca-"):
        raise SystemExit(f"refusing to empty {folder}: expected tests/vectors/scep-ca-*")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="capture-vectors-") as tmp:
        entries = capture(folder, Path(tmp))
    make_vectors.save_manifest(folder, {"date": dt.date.today().isoformat(), "vectors": entries})
    make_vectors.build_missing(folder)
    make_vectors.write_readme(folder)
    total = sum(p.stat().st_size for p in folder.iterdir())
    print(f"wrote {len(list(folder.iterdir()))} files, {total} bytes, to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
