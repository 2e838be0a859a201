"""Connection deadlines, the connection cap and the file-descriptor limit against a real ``scep-ca serve``.

Slow clients (idle, trickling a header, trickling a body) are cut off by TOTAL deadlines;
an NTLM handshake still works on one keep-alive connection; a worker with a 64-descriptor
limit survives more connections than that, answers again once they are gone, and logs
accept failures at most once a second instead of a traceback each.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import re
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import spnego
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.e2e import clients
from tests.e2e.conftest import SCEP_CA, ScepCaServer

HEADER_TIMEOUT = 2
BODY_TIMEOUT = 2
KEEPALIVE_TIMEOUT = 3
# A deadline fires within this much of its due time on a busy 2-core machine.
SLACK = 1.5

NET = {
    "workers": 1,
    "header_timeout_seconds": HEADER_TIMEOUT,
    "body_timeout_seconds": BODY_TIMEOUT,
    "keepalive_timeout_seconds": KEEPALIVE_TIMEOUT,
    # Small enough that an over-long request line fits the socket buffers whole: the client has
    # sent it all before the server answers 400 and closes.
    "max_line_bytes": 16_384,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepCaServer]:
    with ScepCaServer(tmp_path_factory.mktemp("scep-ca-net"), {"server": NET}) as srv:
        yield srv


def connect(server: ScepCaServer) -> socket.socket:
    return socket.create_connection((clients.LOOPBACK, server.port), timeout=5)


def seconds_until_closed(sock: socket.socket, feed: bytes = b"", every: float = 0.5, limit: float = 10.0) -> float:
    """Send ``feed`` one byte each ``every`` seconds; return when the server closed the connection."""
    started = time.monotonic()
    sock.settimeout(every)
    sent = 0
    while time.monotonic() - started < limit:
        if sent < len(feed):
            try:
                sock.send(feed[sent : sent + 1])
            except OSError:
                return time.monotonic() - started
            sent += 1
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:  # reset: the server aborted the connection
            return time.monotonic() - started
    raise AssertionError(f"still open after {limit} s ({sent} bytes sent)")


def metric(server: ScepCaServer, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"{server.base_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{([^}}]*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    raise AssertionError(f"{name}{{{wanted}}} not in /metrics")


def healthz(server: ScepCaServer) -> int:
    with urllib.request.urlopen(f"{server.base_url}/healthz", timeout=5) as resp:
        return int(resp.status)


def test_idle_connection_closed_within_the_header_timeout(server: ScepCaServer) -> None:
    before = metric(server, "scep_ca_connections_timed_out_total", phase="head", worker="0")
    with connect(server) as sock:
        elapsed = seconds_until_closed(sock)
    assert HEADER_TIMEOUT - 0.2 <= elapsed <= HEADER_TIMEOUT + SLACK
    assert metric(server, "scep_ca_connections_timed_out_total", phase="head", worker="0") == before + 1


def test_header_trickle_is_cut_off_by_the_total_deadline(server: ScepCaServer) -> None:
    """One byte every 0.5 s: each read is quick, but the head is never complete in time."""
    head = b"GET /healthz HTTP/1.1\r\nHost: scep\r\nX-Slow: " + b"a" * 100
    with connect(server) as sock:
        elapsed = seconds_until_closed(sock, head, every=0.5)
    assert elapsed <= HEADER_TIMEOUT + SLACK


def test_body_trickle_is_cut_off_by_the_body_deadline(server: ScepCaServer) -> None:
    integration = server.create_integration("net-body")
    mark = server.log_mark()
    head = (
        f"POST /scep/{integration['id']}?operation=PKIOperation HTTP/1.1\r\nHost: scep\r\n"
        "Content-Type: application/x-pki-message\r\nContent-Length: 2000\r\n\r\n"
    ).encode()
    with connect(server) as sock:
        sock.sendall(head)
        elapsed = seconds_until_closed(sock, b"\x30" * 2000, every=0.5)
    assert elapsed <= BODY_TIMEOUT + SLACK
    time.sleep(0.3)
    assert "Traceback" not in server.log(mark)
    assert metric(server, "scep_ca_connections_timed_out_total", phase="body", worker="0") >= 1


def test_keep_alive_connection_serves_a_second_request_then_idles_out(server: ScepCaServer) -> None:
    conn = http.client.HTTPConnection(clients.LOOPBACK, server.port, timeout=10)
    try:
        for _ in range(2):
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
            time.sleep(KEEPALIVE_TIMEOUT - 1.5)  # within the keep-alive window: the same connection
        sock = conn.sock
        assert sock is not None
        elapsed = seconds_until_closed(sock)
        assert elapsed <= 1.5 + SLACK
    finally:
        conn.close()


def test_ntlm_handshake_on_one_keep_alive_connection(server: ScepCaServer) -> None:
    """Type 1, our Type 2 and Type 3 on one connection, with a pause between the legs."""
    integration = server.create_integration("net-ntlm")
    path = f"/challenge/{integration['id']}/certsrv/mscep_admin/"
    ctx = spnego.client(
        integration["username"], integration["password"], hostname="127.0.0.1", service="HTTP", protocol="ntlm"
    )
    conn = http.client.HTTPConnection(clients.LOOPBACK, server.port, timeout=10)
    try:
        type1 = ctx.step()
        assert type1 is not None
        conn.request("GET", path, headers={"Authorization": "NTLM " + base64.b64encode(type1).decode()})
        first = conn.getresponse()
        first.read()
        assert first.status == 401
        offer = first.getheader("WWW-Authenticate") or ""
        assert offer.startswith("NTLM ")
        time.sleep(1.0)
        type3 = ctx.step(base64.b64decode(offer.split(" ", 1)[1]))
        assert type3 is not None
        conn.request("GET", path, headers={"Authorization": "NTLM " + base64.b64encode(type3).decode()})
        page = conn.getresponse()
        body = page.read()
        assert page.status == 200
        assert "The enrollment challenge password is:" in body.decode("utf-16-le")
    finally:
        conn.close()


def _accept_error_lines(log: str) -> int:
    return len(re.findall(r"cannot accept connections|socket\.accept\(\) out of system resource", log))


def _hold(server: ScepCaServer, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        try:
            held.append(connect(server))
        except OSError:
            break
    return held


def test_more_connections_than_descriptors_with_an_explicit_cap(tmp_path: Path) -> None:
    """max_connections above what a 64-descriptor limit allows: accept() fails with EMFILE.

    The worker survives, logs the failures at most once a second without tracebacks, and
    answers again once the connections are gone.
    """
    config = {"server": {**NET, "max_connections": 1000}}
    with ScepCaServer(tmp_path / "emfile", config, fd_limit=64) as server:
        server.wait_log(r"open-file limit 64;")
        held = _hold(server, 150)
        try:
            time.sleep(2.5)
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 8
        while True:
            try:
                assert healthz(server) == 200
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        log = server.log()
        assert server.running
        assert 1 <= _accept_error_lines(log) <= 6, log[-3000:]
        assert "Traceback" not in log
        assert "Too many open files" in log  # the reason is named once in a while


def test_connections_beyond_the_derived_cap_are_closed_at_once(tmp_path: Path) -> None:
    """Default max_connections with a 64-descriptor limit: a cap below it; the rest are closed at once."""
    config = {"server": {**NET, "header_timeout_seconds": 6}}
    with ScepCaServer(tmp_path / "cap", config, fd_limit=64) as server:
        match = server.wait_log(r"open-file limit 64; at most (\d+) connections")
        cap = int(match.group(1))
        assert 0 < cap < 64
        held = _hold(server, cap + 10)
        try:
            time.sleep(0.5)
            # Exactly ``cap`` stay open; the others see their connection closed without an answer.
            closed = 0
            for sock in held:
                sock.settimeout(0.02)
                try:
                    if sock.recv(1) == b"":
                        closed += 1
                except TimeoutError:
                    pass
                except ConnectionResetError:
                    closed += 1
            assert len(held) == cap + 10 and closed == 10
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)
        assert healthz(server) == 200
        assert metric(server, "scep_ca_connections_rejected_total", worker="0") == 10
        log = server.log()
        assert 1 <= len(re.findall("connection limit reached", log)) <= 3
        assert "Traceback" not in log


# -- TLS ------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, ssl.SSLContext]]:
    base = tmp_path_factory.mktemp("scep-ca-tls")
    cert, key = _self_signed(base)
    port = clients.free_port()
    config = {
        "server": {**NET, "host": clients.LOOPBACK, "port": port},
        "tls": {"cert": str(cert), "key": str(key)},
        "console": {"listen": f"{clients.LOOPBACK}:{clients.free_port()}"},
    }
    (base / "scep-ca.yaml").write_text(yaml.safe_dump(config))
    context = ssl.create_default_context(cafile=str(cert))
    with (base / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            [str(SCEP_CA), "--config", str(base / "scep-ca.yaml"), "--data-dir", str(base / "data"), "serve"],
            env={k: v for k, v in clients.clean_env().items() if not k.startswith("SCEP_CA_")},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=context, timeout=2) as resp:
                    assert resp.status == 200
                break
            except OSError:
                assert proc.poll() is None, (base / "server.log").read_text()
                assert time.monotonic() < deadline, (base / "server.log").read_text()
                time.sleep(0.1)
        yield port, context
    finally:
        clients.kill_process_group(proc)


def test_tls_handshake_not_started_is_cut_off(tls_server: tuple[int, ssl.SSLContext]) -> None:
    port, _ = tls_server
    with socket.create_connection((clients.LOOPBACK, port), timeout=5) as sock:
        assert seconds_until_closed(sock) <= HEADER_TIMEOUT + SLACK


def test_tls_idle_and_trickling_connections_are_cut_off(tls_server: tuple[int, ssl.SSLContext]) -> None:
    port, context = tls_server
    with context.wrap_socket(
        socket.create_connection((clients.LOOPBACK, port), timeout=5), server_hostname="127.0.0.1"
    ) as idle:
        assert seconds_until_closed(idle) <= HEADER_TIMEOUT + SLACK
    head = b"GET /healthz HTTP/1.1\r\nHost: scep\r\nX-Slow: " + b"a" * 100
    with context.wrap_socket(
        socket.create_connection((clients.LOOPBACK, port), timeout=5), server_hostname="127.0.0.1"
    ) as slow:
        assert seconds_until_closed(slow, head, every=0.5) <= HEADER_TIMEOUT + SLACK
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=context, timeout=5) as resp:
        assert resp.status == 200


def test_unparseable_requests_are_400_and_one_log_line(server: ScepCaServer) -> None:
    """A request line over server.max_line_bytes and a malformed header: 400 each, no traceback in the log."""
    mark = server.log_mark()
    too_long = b"GET /scep/x?operation=PKIOperation&message=" + b"A" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    for request in (too_long, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"):
        with connect(server) as sock:
            sock.sendall(request)
            assert sock.recv(64).split(b" ", 2)[1] == b"400", request[:40]
    deadline = time.monotonic() + 5
    while server.log(mark).count("unparseable HTTP request") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log(mark)
    assert log.count("unparseable HTTP request from 127.0.0.1 answered 400") == 2, log
    assert "Traceback" not in log and "AAAAAAAA" not in log, log
