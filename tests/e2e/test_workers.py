"""``scep-ca serve --workers N`` as a real process tree: kill -9 under load, and SIGTERM drain.

The enrollments are real PKCSReq messages (``scep_ca.protocol.client``) with challenges issued into the
store before the server starts, sent over a new TCP connection each, so that SO_REUSEPORT
spreads them over the workers. The invariants:

* kill -9 of one worker in the middle of the load: every certificate a client received is in
  the store byte for byte, the store holds no certificate that no client received (an
  interrupted request is retried with the same transactionID and gets the one already
  recorded), the supervisor restarts the worker under the same index, and new enrollments
  succeed;
* SIGTERM to the supervisor while requests are in flight (their bodies half sent): new
  connections are refused at once, the in-flight requests complete with SUCCESS, and the
  process exits 0.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from challenge.issuer import issue_challenge
from config import load_config
from scep_ca.pki.ca import CAIdentity, create_ca
from scep_ca.pki.records import Integration
from scep_ca.protocol.client import Reply, build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import PKIStatus
from store.base import Store
from store.factory import open_store
from tests.e2e import clients

SCEP_CA = Path(sys.executable).parent / "scep-ca"
INTEGRATION = "workers"
# Connection-level failures a client sees when the worker holding its connection is killed.
_RETRYABLE = (aiohttp.ClientConnectionError, asyncio.TimeoutError)


@dataclass
class Prepared:
    """One enrollment: the PKCSReq body, and what opens the reply."""

    body: bytes
    transaction_id: str
    signer: x509.Certificate
    key: rsa.RSAPrivateKey


@dataclass
class Deployment:
    data_dir: Path
    config_path: Path
    ca: CAIdentity
    keys: list[rsa.RSAPrivateKey]
    challenges: list[str]

    def store(self) -> Store:
        return open_store(load_config(self.config_path, {}, {}))

    def request(self, n: int, transaction_id: str) -> Prepared:
        key = self.keys[n % len(self.keys)]
        signer = self_signed_signer(key)
        csr = build_csr(key, parse_dn(f"CN=device-{n},O=Example"), self.challenges[n])
        req = build_request(
            csr,
            signer_cert=signer,
            signer_key=key,
            recipient=self.ca.encryption_cert,
            transaction_id=transaction_id,
        )
        return Prepared(req.der, transaction_id, signer, key)


class Server:
    """``scep-ca serve`` (the supervisor, or the lone server) in its own process group."""

    def __init__(self, deployment: Deployment, workers: int, log_path: Path) -> None:
        self.port = clients.free_port()
        self.log_path = log_path
        config = yaml.safe_load(deployment.config_path.read_text())
        config["server"] = {"host": clients.LOOPBACK, "port": self.port, "workers": workers}
        # The console runs in worker 0 (or the lone process): on its own free port, so that
        # servers of this module never contend for the default one.
        config["console"] = {"listen": f"{clients.LOOPBACK}:{clients.free_port()}"}
        deployment.config_path.write_text(yaml.safe_dump(config))
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(SCEP_CA), "--config", str(deployment.config_path), "serve"],
                env={k: v for k, v in clients.clean_env().items() if not k.startswith("SCEP_CA_")},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        clients.wait_http(f"{self.base}/readyz", timeout=20, proc=self.proc, describe=self.log())

    @property
    def base(self) -> str:
        return f"http://{clients.LOOPBACK}:{self.port}"

    @property
    def scep_url(self) -> str:
        return f"{self.base}/scep/{INTEGRATION}?operation=PKIOperation"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (match := re.search(pattern, self.log())) is None:
            assert time.monotonic() < deadline, f"{pattern!r} not in the log:\n{self.log()}"
            time.sleep(0.05)
        return match

    def stop(self) -> None:
        clients.kill_process_group(self.proc)


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    """A data dir with a CA, one integration and 100 unused challenges (no server yet)."""
    data_dir = tmp_path / "data"
    ca = create_ca(data_dir, subject="CN=Workers Test CA", key_size=2048, validity_days=30, passphrase=None)
    config_path = tmp_path / "scep-ca.yaml"
    config_path.write_text(
        yaml.safe_dump({"data_dir": str(data_dir), "challenge": {"max_unused": 1000}, "log": {"level": "INFO"}})
    )
    config = load_config(config_path, {}, {})

    async def seed() -> list[str]:
        store = open_store(config)
        await store.open()
        try:
            await store.create_integration(
                Integration(
                    id=INTEGRATION,
                    name=INTEGRATION,
                    subject_template="CN=$USERID$,O=Example",
                    created_at=dt.datetime.now(dt.UTC),
                    validity_days=30,
                    username=f"scep-{INTEGRATION}",
                )
            )
            issued = [await issue_challenge(store, config.challenge, INTEGRATION) for _ in range(100)]
        finally:
            await store.close()
        return [c for c in issued if c is not None]

    keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(4)]
    return Deployment(data_dir, config_path, ca, keys, asyncio.run(seed()))


@pytest.fixture
def server_factory(deployment: Deployment, tmp_path: Path) -> Iterator[Callable[[int], Server]]:
    started: list[Server] = []

    def start(workers: int) -> Server:
        server = Server(deployment, workers, tmp_path / f"server{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
async def fresh_connections() -> AsyncIterator[aiohttp.ClientSession]:
    # A new TCP connection per request: the kernel picks a worker per connection.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


async def enroll(session: aiohttp.ClientSession, url: str, prepared: Prepared) -> tuple[Reply, int]:
    """POST until an answer arrives (a killed worker drops its connections); (reply, attempts)."""
    for attempt in range(1, 11):
        try:
            async with session.post(url, data=prepared.body, timeout=aiohttp.ClientTimeout(total=30)) as resp:
                assert resp.status == 200, await resp.text()
                return open_reply(await resp.read(), prepared.signer, prepared.key), attempt
        except _RETRYABLE:
            await asyncio.sleep(0.1)
    raise AssertionError(f"no answer for {prepared.transaction_id} after 10 attempts")


async def worker_pids(session: aiohttp.ClientSession, base: str, count: int, timeout: float = 15.0) -> dict[int, int]:
    """worker index -> pid, from /healthz over fresh connections until ``count`` workers answered."""
    seen: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only workers {seen} answered /healthz"
        try:
            async with session.get(f"{base}/healthz") as resp:
                body = await resp.json()
                seen[body["worker"]] = body["pid"]
        except _RETRYABLE:
            await asyncio.sleep(0.05)
    return seen


async def test_kill_9_of_a_worker_under_load_loses_no_certificate(
    deployment: Deployment, server_factory: Callable[[int], Server], fresh_connections: aiohttp.ClientSession
) -> None:
    server = server_factory(2)
    session = fresh_connections
    before = await worker_pids(session, server.base, 2)
    victim = before[0]
    total, concurrency = 60, 8
    prepared = [deployment.request(n, f"LOAD-{n}") for n in range(total)]
    answered = 0
    killed = asyncio.Event()
    queue: asyncio.Queue[Prepared] = asyncio.Queue()
    for p in prepared:
        queue.put_nowait(p)
    results: dict[str, tuple[Reply, int]] = {}

    async def client() -> None:
        nonlocal answered
        while not queue.empty():
            p = queue.get_nowait()
            results[p.transaction_id] = await enroll(session, server.scep_url, p)
            answered += 1
            if answered == total // 4 and not killed.is_set():
                killed.set()
                os.kill(victim, signal.SIGKILL)  # in the middle: the other clients are in flight

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    assert killed.is_set()
    server.wait_log(rf"worker 0 \(pid {victim}\) died \(signal SIGKILL\)")

    # Every client got SUCCESS, and each certificate is in the store exactly as received.
    assert {reply.status for reply, _ in results.values()} == {PKIStatus.SUCCESS}
    store = deployment.store()
    await store.open()
    try:
        for reply, _ in results.values():
            cert = reply.certificates[0]
            record = await store.get_certificate(format(cert.serial_number, "x"))
            assert record is not None, f"{cert.serial_number:x} was delivered but is not in the store"
            assert record.der == cert.public_bytes(serialization.Encoding.DER)
        # No certificate that no client received: an interrupted request's retry got the recorded one.
        assert await store.count_certificates(INTEGRATION) == total
    finally:
        await store.close()

    # The supervisor restarted worker 0 (a new pid) and the server keeps enrolling.
    after = await worker_pids(session, server.base, 2)
    assert after[0] != victim and after[1] == before[1]
    for n in range(total, total + 6):
        reply, _ = await enroll(session, server.scep_url, deployment.request(n, f"AFTER-{n}"))
        assert reply.status is PKIStatus.SUCCESS
    assert server.proc.poll() is None
    retried = sum(1 for _, attempts in results.values() if attempts > 1)
    print(f"\n{total} enrollments in {elapsed:.2f}s across the kill; {retried} retried after the kill")

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=45) == 0, server.log()


def _refused(port: int) -> bool:
    """True once nothing accepts on the port. A connection that landed in the accept queue just as
    the listening socket closed is reset rather than refused: that too means "not accepting"."""
    try:
        with socket.create_connection((clients.LOOPBACK, port), timeout=1):
            return False
    except (ConnectionRefusedError, ConnectionResetError):
        return True


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_drains_in_flight_requests_then_exits_0(
    deployment: Deployment, server_factory: Callable[[int], Server], workers: int
) -> None:
    server = server_factory(workers)
    prepared = [deployment.request(n, f"DRAIN-{n}") for n in range(4)]
    streams = []
    for p in prepared:
        # Headers and half the body: the handler is running, waiting for the rest.
        reader, writer = await asyncio.open_connection(clients.LOOPBACK, server.port)
        head = (
            f"POST /scep/{INTEGRATION}?operation=PKIOperation HTTP/1.1\r\nHost: {clients.LOOPBACK}\r\n"
            f"Content-Type: application/x-pki-message\r\nContent-Length: {len(p.body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        writer.write(head + p.body[: len(p.body) // 2])
        await writer.drain()
        streams.append((reader, writer))
    await asyncio.sleep(0.3)

    server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while not _refused(server.port):  # listening sockets close first
        assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
        await asyncio.sleep(0.05)
    assert server.proc.poll() is None, "exited before the in-flight requests were answered"

    for p, (reader, writer) in zip(prepared, streams, strict=True):
        writer.write(p.body[len(p.body) // 2 :])
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), response[:300]
        assert open_reply(body, p.signer, p.key).status is PKIStatus.SUCCESS

    assert await asyncio.to_thread(server.proc.wait, 45) == 0, server.log()
    # Each worker logs how many requests it was draining when it stopped: all four were.
    draining = re.findall(r"stopping: no new connections; draining (\d+) requests in flight", server.log())
    assert len(draining) == workers and sum(map(int, draining)) == len(prepared), server.log()
    if workers > 1:
        server.wait_log(r"all workers stopped")


def test_a_taken_port_is_refused_before_any_worker_starts(deployment: Deployment, tmp_path: Path) -> None:
    """SO_REUSEPORT would let the workers join another listener's group silently."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as an old instance's workers
        taken.bind((clients.LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = clients.run_command(
            [
                str(SCEP_CA),
                "--config",
                str(deployment.config_path),
                "serve",
                "--port",
                str(port),
                "--workers",
                "2",
            ],
            timeout=30,
        )
    assert result.returncode == 1, result.describe()
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "worker 0 started" not in result.output
