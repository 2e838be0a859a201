"""Connection deadlines, the connection cap and the file-descriptor limit against a real ``scep-ca serve``.

Slow clients (idle, trickling a header, trickling a body) are cut off by TOTAL deadlines;
clients that pipeline requests and never read their answers are cut off by the write
deadline, and a run of pipelined requests is capped; header fields and the whole head are
capped apart from the request line; an NTLM handshake still works on one keep-alive
connection; a worker with a 64-descriptor limit survives more connections than that,
answers again once they are gone, and logs accept failures at most once a second instead
of a traceback each. TLS 1.2 offers AEAD suites only.
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
    "max_header_field_bytes": 8_192,
    "max_head_bytes": 32_768,
    "max_pipelined_requests": 5,
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


def healthz_on(conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
    """GET /healthz on a keep-alive connection, its answer read."""
    conn.request("GET", "/healthz")
    resp = conn.getresponse()
    resp.read()
    return resp


def test_keep_alive_connection_serves_a_second_request_then_idles_out(server: ScepCaServer) -> None:
    conn = http.client.HTTPConnection(clients.LOOPBACK, server.port, timeout=10)
    try:
        for _ in range(2):
            assert healthz_on(conn).status == 200
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


# -- answers nobody reads, pipelining ---------------------------------------------------------

WRITE_TIMEOUT = 2


def _pipeline_unread(server: ScepCaServer, path: str, count: int) -> socket.socket:
    """A connection that sends ``count`` pipelined GETs of ``path`` and never reads an answer.

    Its receive buffer is made small, so that the answers stay in the server's buffers.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((clients.LOOPBACK, server.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: scep\r\n\r\n".encode() * count)
    return sock


def test_clients_that_never_read_their_answers_are_cut_off_by_the_write_deadline(tmp_path: Path) -> None:
    """As many never-reading pipelining connections as server.max_connections: after the
    write deadline a fresh client is served again, and each stalled write is counted.

    Each connection asks for more than the kernel's socket buffers take (net.ipv4.tcp_wmem
    allows 4 MiB), so aiohttp waits for the buffer to drain, which it never does.
    Also: the "listening on" line names the bind address, not only the public URL.
    """
    held_count = 4
    config = {
        "server": {
            **NET,
            "max_connections": held_count,
            "write_timeout_seconds": WRITE_TIMEOUT,
            "max_pipelined_requests": 10_000,  # the write deadline alone must free the connections
            "public_url": "https://scep.example.test",
        }
    }
    with ScepCaServer(tmp_path / "unread", config) as server:
        assert server.wait_log(
            rf"scep-ca listening on http://127\.0\.0\.1:{server.port} \(public URL https://scep\.example\.test\)"
        )
        with urllib.request.urlopen(f"{server.base_url}/metrics", timeout=5) as resp:
            answer_size = len(resp.read())  # the largest answer a loopback client gets (>10 kB)
        count = 6 * 1024 * 1024 // answer_size + 100
        before = metric(server, "scep_ca_connections_timed_out_total", phase="write", worker="0")
        held = [_pipeline_unread(server, "/metrics", count) for _ in range(held_count)]
        try:
            time.sleep(0.5)
            with pytest.raises(OSError):  # every slot is held: a fresh client is closed at once
                healthz(server)
            # Answering thousands of requests takes a while on a busy machine; then the deadline.
            deadline = time.monotonic() + WRITE_TIMEOUT + KEEPALIVE_TIMEOUT + 10
            while True:
                try:
                    assert healthz(server) == 200
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the never-reading connections still hold every slot"
                    time.sleep(0.2)
        finally:
            for sock in held:
                sock.close()
        assert metric(server, "scep_ca_connections_timed_out_total", phase="write", worker="0") == before + held_count
        assert "Traceback" not in server.log()


def _read_until_closed(sock: socket.socket, limit: float = 10.0) -> bytes:
    sock.settimeout(limit)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_run_of_pipelined_requests_is_capped(server: ScepCaServer) -> None:
    """max_pipelined_requests is 5: eight pipelined requests get five answers, the fifth with
    Connection: close; requests sent one after another's answer are not capped."""
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: scep\r\n\r\n" * 8)
        started = time.monotonic()
        answers = _read_until_closed(sock)
    assert answers.count(b"HTTP/1.1 200 OK") == 5, answers
    assert time.monotonic() - started < KEEPALIVE_TIMEOUT, "closed by the cap, not by the keep-alive deadline"
    last_head = answers.rsplit(b"HTTP/1.1 200 OK", 1)[1].split(b"\r\n\r\n", 1)[0].lower()
    assert b"connection: close" in last_head, answers
    conn = http.client.HTTPConnection(clients.LOOPBACK, server.port, timeout=10)
    try:
        for _ in range(8):
            resp = healthz_on(conn)
            assert resp.status == 200 and not resp.will_close
    finally:
        conn.close()


# -- head size ---------------------------------------------------------------------------------


def _answer_status(server: ScepCaServer, request: bytes) -> bytes:
    with connect(server) as sock:
        sock.sendall(request)
        return sock.recv(64).split(b" ", 2)[1]


def test_a_header_field_over_its_cap_is_400_while_the_request_line_keeps_its_own(server: ScepCaServer) -> None:
    mark = server.log_mark()
    long_line = b"GET /healthz?pad=" + b"a" * 15_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _answer_status(server, long_line) == b"200"
    big_field = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 10_000 + b"\r\n\r\n"
    assert _answer_status(server, big_field) == b"400"
    line = server.wait_log(r"unparseable HTTP request from 127\.0\.0\.1 answered 400[^\n]*", since=mark)
    log = server.log(mark)
    assert "Traceback" not in log and "bbbbbbbb" not in log, line


def test_a_head_over_the_total_cap_is_431_and_one_log_line(server: ScepCaServer) -> None:
    """Six 7,000-byte header fields: each under max_header_field_bytes, together over max_head_bytes."""
    mark = server.log_mark()
    fields = b"".join(b"X-Pad-%d: " % i + b"c" * 7_000 + b"\r\n" for i in range(6))
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
    with connect(server) as sock:
        sock.sendall(request)
        answer = _read_until_closed(sock, limit=HEADER_TIMEOUT + SLACK)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:100]
    assert answer.endswith(b"\r\n\r\nrequest head too large\n"), answer
    server.wait_log(r"request head from 127\.0\.0\.1 over server\.max_head_bytes", since=mark)
    log = server.log(mark)
    assert "Traceback" not in log and "ccccccc" not in log, log
    assert healthz(server) == 200


# -- TLS 1.2 cipher suites -------------------------------------------------------------------


def _tls12_handshake(port: int, ciphers: str) -> str:
    """Handshake offering TLS 1.2 with ``ciphers`` only; the suite the server chose."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    with context.wrap_socket(socket.create_connection((clients.LOOPBACK, port), timeout=5)) as tls:
        cipher = tls.cipher()
        assert cipher is not None and tls.version() == "TLSv1.2"
        return cipher[0]


@pytest.mark.parametrize("suite", ["ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES256-SHA384"])
def test_tls12_refuses_cbc_and_non_forward_secret_suites(tls_server: tuple[int, ssl.SSLContext], suite: str) -> None:
    port, _ = tls_server
    with pytest.raises(ssl.SSLError, match=r"HANDSHAKE_FAILURE|NO_SHARED_CIPHER|UNEXPECTED_EOF"):
        _tls12_handshake(port, suite)


@pytest.mark.parametrize(
    "suite", ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"]
)
def test_tls12_accepts_ecdhe_aead_suites_and_tls13_is_unchanged(
    tls_server: tuple[int, ssl.SSLContext], suite: str
) -> None:
    port, context = tls_server
    assert _tls12_handshake(port, suite) == suite
    with context.wrap_socket(
        socket.create_connection((clients.LOOPBACK, port), timeout=5), server_hostname="127.0.0.1"
    ) as tls:
        assert tls.version() == "TLSv1.3"


def test_the_head_cap_counts_across_reads_and_stops_at_the_blank_line(server: ScepCaServer) -> None:
    """A head whose blank line straddles two reads is complete (the body after it is not head);
    a head over the cap sent in pieces is refused all the same."""
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"d" * 7_000 + b"\r\n\r")
        time.sleep(0.3)
        sock.sendall(b"\n")
        assert sock.recv(64).split(b" ", 2)[1] == b"200"
    integration = server.create_integration("net-head-body")
    body = b"\x30" * 40_000  # more than max_head_bytes, after a small head: not counted as head
    head = (
        f"POST /scep/{integration['id']}?operation=PKIOperation HTTP/1.1\r\nHost: scep\r\n"
        f"Content-Type: application/x-pki-message\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with connect(server) as sock:
        sock.sendall(head + body)
        assert sock.recv(64).split(b" ", 2)[1] not in (b"431", b"500")
    with connect(server) as sock:
        for i in range(6):
            sock.sendall(b"X-Pad-%d: " % i + b"e" * 7_000 + b"\r\n" if i else b"GET /healthz HTTP/1.1\r\n")
            time.sleep(0.1)
        sock.sendall(b"X-Last: " + b"e" * 7_000 + b"\r\n\r\n")
        assert sock.recv(64).split(b" ", 2)[1] == b"431"


def test_a_pipelined_head_over_the_cap_is_431_too(server: ScepCaServer) -> None:
    """A small request, and behind it in the same write a head over max_head_bytes: the first
    is answered, the second refused (aiohttp alone would parse and queue it)."""
    fields = b"".join(b"X-Pad-%d: " % i + b"f" * 7_000 + b"\r\n" for i in range(6))
    with connect(server) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
        )
        answers = _read_until_closed(sock, limit=HEADER_TIMEOUT + SLACK)
    assert answers.startswith(b"HTTP/1.1 200 OK\r\n"), answers[:100]
    assert answers.count(b"HTTP/1.1 431 Request Header Fields Too Large\r\n") == 1, answers
