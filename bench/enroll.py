"""Enrollment throughput of real servers, side by side, against the RSA ceiling.

    .venv/bin/python bench/enroll.py --n 3000 --concurrency 16
    .venv/bin/python bench/enroll.py --targets scep-ca:1 --n 2000        # one target
    .venv/bin/python bench/enroll.py --rounds 3                          # medians of three rounds
    .venv/bin/python bench/enroll.py --targets scep-ca:1,scep-ca-pg:2 --audit-cost   # what the audit log costs

Targets (``--targets``, comma separated; default all):
  ``scep-ca:1``          scep-ca serve, 1 worker, SQLite (server pinned to CPU 0, load generator on CPU 1)
  ``scep-ca:2``          scep-ca serve, 2 workers, SQLite
  ``scep-ca-pg:2``       scep-ca serve, 2 workers, PostgreSQL at 127.0.0.1:5432 (a fresh database)
  ``scep-ca-hsm:1``      as ``scep-ca:1``, with the CA and RA keys in a temporary SoftHSM2 token
                         (keys.pkcs11; its own SOFTHSM2_CONF and token directory, removed afterwards)
  ``scep-ca-hsm-ca:1``   as ``scep-ca-hsm:1``, with only the CA key in the token and the RA keys in
                         files (keys.pkcs11.ra_keys: files): one token operation an enrollment, not three
  ``scepserver``         micromdm's scepserver 2.1.0 (Debian package ``scep``), pinned to CPU 0
  ``<scep-ca target>/noaudit``  that target with ``audit.enabled: false`` (no audit events);
                         ``--audit-cost`` runs each scep-ca target given both ways, interleaved,
                         and prints the share of enrollments per second the audit log costs

For each target, in order:
1. A throwaway data directory, CA and integration (real CLI); N one-time challenges seeded through
   the store (the code path of ``scep-ca challenge new``). scepserver has one static challenge.
2. N PKCSReq messages pre-built (RSA-2048 device keys from a pre-generated pool, SHA-256, AES-128),
   so client-side RSA is not timed: on a 2-core machine the load generator would otherwise compete
   with the server for the CPU being measured. Every target gets the same key pool.
3. The server started; every request POSTed at the given concurrency over loopback; latencies kept.
4. Afterwards (untimed) every reply verified: signature, SUCCESS, the certificate decrypted; the
   number of distinct serial numbers is reported (a duplicate is a failure of the server).
``openssl speed rsa2048`` on CPU 0, before the first target and after each one (each run is compared
with the mean of the readings around it; the core's speed drifts on a shared VM): private-key
operations per second / 3 (decrypt, sign certificate, sign CertRep) is the RSA-bound ceiling of one
core. Prints enrollments/s, p50/p99 latency, ratio to the ceiling (per worker), the server's CPU time
per enrollment and its ratio to three signatures' CPU time (openssl speed divides by CPU time, so
this ratio does not move when the virtual machine loses wall-clock time to its neighbours), ratio to
scepserver, the 1 -> 2 worker scaling, and file keys vs SoftHSM keys (all of them, or the CA's alone).
Beside the server's CPU: its PostgreSQL backends' CPU (``db cpu ms``) and the whole machine's busy
CPU (``machine cpu ms``, load generator and database included) per enrollment; with two busy cores
the second bounds what a target can reach, so PostgreSQL against SQLite at two workers is printed
with that bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from challenge.issuer import issue_challenge  # noqa: E402
from config import load_config  # noqa: E402
from scep_ca.protocol.client import build_csr, build_request, open_reply, self_signed_signer  # noqa: E402
from scep_ca.protocol.dn import parse_dn  # noqa: E402
from scep_ca.protocol.enums import ContentCipher, DigestAlg, PKIStatus  # noqa: E402
from store.factory import open_store  # noqa: E402
from tests.e2e.clients import ScepServerProcess, free_port  # noqa: E402
from tests.hsm import SoftHsm, init_softhsm  # noqa: E402

ALL_TARGETS = ("scep-ca:1", "scep-ca:2", "scep-ca-pg:2", "scep-ca-hsm:1", "scep-ca-hsm-ca:1", "scepserver")
# The SoftHSM targets and their keys.pkcs11.ra_keys: every key in the token, or the CA's alone.
HSM_RA_KEYS = {"scep-ca-hsm": "token", "scep-ca-hsm-ca": "files"}
NO_AUDIT = "/noaudit"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Result:
    target: str
    workers: int
    rate: float
    p50_ms: float
    p99_ms: float
    distinct_serials: int
    successes: int
    cpu_ms: float  # server CPU time (user + system, every process of the server) per enrollment
    db_cpu_ms: float | None  # PostgreSQL's backends for the server's database, per enrollment
    machine_cpu_ms: float  # every process on the machine (/proc/stat), load generator included


def _stat_cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, from /proc (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_backends_cpu_seconds(database: str) -> float:
    """User + system CPU time of PostgreSQL's backends connected to ``database``.

    Backends set their process title to ``postgres: [<cluster>:] <user> <database> <client> <state>``
    (Debian names the cluster, ``15/main:``); the pool's connections live through a run, so before
    and after bracket their work on it.
    """
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        words = title.split()
        if words[:1] == ["postgres:"] and database in words[1:4]:
            total += _stat_cpu_seconds(int(proc.name))
    return total


def machine_busy_cpu_seconds() -> float:
    """Every core's non-idle time since boot (/proc/stat), in seconds."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
    return busy / os.sysconf("SC_CLK_TCK")


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its live children (the worker processes), from /proc."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    pids = [pid, *(int(c) for c in children.read_text().split())] if children.exists() else [pid]
    return sum(_stat_cpu_seconds(one) for one in pids)


def scep_ca_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "scep-ca"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "scep_ca.cli.main"]


def can_pin() -> bool:
    return shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2


def openssl_rsa2048_signs_per_second(pin: bool, seconds: int) -> float:
    cmd = ["openssl", "speed", "-seconds", str(seconds), "rsa2048"]
    if pin:
        cmd = ["taskset", "-c", "0", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    # "rsa 2048 bits 0.000214s 0.000006s   4672.0 161205.6"
    match = re.search(r"rsa\s+2048 bits\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"cannot read openssl speed output:\n{out}")
    return float(match.group(1))


class KeyPool:
    def __init__(self, size: int) -> None:
        self.keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(size)]
        self.signers = [self_signed_signer(k) for k in self.keys]

    def requests(self, recipient: x509.Certificate, challenges: list[str], subject: str) -> list[bytes]:
        out = []
        for i, challenge in enumerate(challenges):
            k = i % len(self.keys)
            csr = build_csr(self.keys[k], parse_dn(subject.format(i=i)), challenge)
            req = build_request(
                csr,
                signer_cert=self.signers[k],
                signer_key=self.keys[k],
                recipient=recipient,
                transaction_id=f"bench-{secrets.token_hex(8)}-{i}",
                cipher=ContentCipher.AES128,
                digest=DigestAlg.SHA256,
            )
            out.append(req.der)
        return out

    def check(self, replies: list[bytes]) -> tuple[int, int]:
        """(successes, distinct serials) over all replies."""
        serials, ok = set(), 0
        for i, reply in enumerate(replies):
            k = i % len(self.keys)
            opened = open_reply(reply, self.signers[k], self.keys[k])
            if opened.status is PKIStatus.SUCCESS:
                ok += 1
                serials.add(opened.certificates[0].serial_number)
        return ok, len(serials)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes) -> bytes:
    """One request on a keep-alive connection; the reply body (Content-Length or chunked, as Go sends)."""
    writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
    header = await reader.readuntil(b"\r\n\r\n")
    status_line, _, rest = header.partition(b"\r\n")
    fields = {}
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    if b"content-length" in fields:
        reply = await reader.readexactly(int(fields[b"content-length"]))
    elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")  # no trailers: the empty line after the last chunk
        reply = b"".join(parts)
    else:
        raise RuntimeError(f"reply without a length: {status_line!r}")
    if status_line.split()[1] != b"200":
        raise RuntimeError(f"{status_line.decode(errors='replace')}: {reply[:200]!r}")
    return reply


async def fire(url: str, bodies: list[bytes], concurrency: int) -> tuple[list[bytes], list[float], float]:
    """POST every body over ``concurrency`` keep-alive connections; replies, latencies, elapsed seconds.

    A bare HTTP/1.1 client on asyncio streams, not aiohttp's: on a 2-core machine the load
    generator shares the CPUs with a 2-worker server, and a client that costs less per request
    takes less from the server being measured (the same client drives every target).
    """
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    head = (
        f"POST {parsed.path}?operation=PKIOperation HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/x-pki-message\r\nContent-Length: "
    ).encode()
    replies: list[bytes] = [b""] * len(bodies)
    latencies: list[float] = [0.0] * len(bodies)
    pending = iter(range(len(bodies)))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in pending:
                t0 = time.perf_counter()
                replies[i] = await _exchange(reader, writer, head, bodies[i])
                latencies[i] = time.perf_counter() - t0
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return replies, latencies, time.perf_counter() - start


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url + "?operation=GetCACaps", timeout=1).read()
            return
        except OSError:
            if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
                raise RuntimeError(f"server at {url} did not start") from None
            time.sleep(0.1)


@contextmanager
def postgres_database() -> Iterator[str]:
    import asyncpg

    name = f"scep_ca_bench_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def softhsm_token(tmp: Path) -> Iterator[SoftHsm]:
    """A fresh SoftHSM2 token under ``tmp``; SOFTHSM2_CONF points at it for the run only."""
    saved = os.environ.get("SOFTHSM2_CONF")
    try:
        yield init_softhsm(tmp / "softhsm")
    finally:
        if saved is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = saved


async def seed(config_path: Path, integration_id: str, n: int) -> list[str]:
    config = load_config(config_path, {}, {})
    store = open_store(config)
    await store.open()
    try:
        out = []
        for _ in range(n):
            challenge = await issue_challenge(store, config.challenge, integration_id)
            assert challenge is not None, "challenge cache full: raise challenge.max_unused"
            out.append(challenge)
        return out
    finally:
        await store.close()


@dataclass(frozen=True)
class CpuSpent:
    """CPU seconds over the timed part of a run: the server's, its database's, the machine's."""

    server: float
    database: float | None
    machine: float


class CpuMeter:
    """Brackets the timed part of a run: made just before it, ``stop`` just after."""

    def __init__(self, server_pid: int | None, database: str | None) -> None:
        self._pid, self._database = server_pid, database
        self._start = self._read()

    def _read(self) -> CpuSpent:
        server = process_tree_cpu_seconds(self._pid) if self._pid else float("nan")
        db = database_backends_cpu_seconds(self._database) if self._database else None
        return CpuSpent(server, db, machine_busy_cpu_seconds())

    def stop(self) -> CpuSpent:
        end = self._read()
        db = None if end.database is None or self._start.database is None else end.database - self._start.database
        return CpuSpent(end.server - self._start.server, db, end.machine - self._start.machine)


def summarize(
    target: str, workers: int, n: int, latencies: list[float], elapsed: float, check: tuple[int, int], cpu: CpuSpent
) -> Result:
    lat = sorted(latencies)
    return Result(
        target=target,
        workers=workers,
        rate=n / elapsed,
        p50_ms=statistics.median(lat) * 1000,
        p99_ms=lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        successes=check[0],
        distinct_serials=check[1],
        cpu_ms=cpu.server / n * 1000,
        db_cpu_ms=None if cpu.database is None else cpu.database / n * 1000,
        machine_cpu_ms=cpu.machine / n * 1000,
    )


def prepare(base: list[str], config_path: Path, data_dir: Path, pool: KeyPool, n: int) -> tuple[str, list[bytes]]:
    """A CA and an integration (the real CLI), ``n`` challenges and ``n`` PKCSReq messages built
    with them: (integration id, request bodies)."""
    subprocess.run([*base, "init"], check=True, capture_output=True)
    created = subprocess.run(
        [*base, "integration", "create", "bench", "--subject", "CN=$USERID$,O=bench", "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    integration = json.loads(created.stdout)["id"]
    challenges = asyncio.run(seed(config_path, integration, n))
    # Requests go to the encryption RA of the default pair (ra.pem when the RA is combined).
    enc = data_dir / "ra-enc.pem"
    ra = x509.load_pem_x509_certificate((enc if enc.exists() else data_dir / "ra.pem").read_bytes())
    return integration, pool.requests(ra, challenges, "CN=device-{i},O=bench")


def run_scep_ca(
    target: str,
    workers: int,
    dsn: str | None,
    pool: KeyPool,
    args: argparse.Namespace,
    tmp: Path,
    hsm: SoftHsm | None = None,
    audit: bool = True,
    ra_keys: str = "token",
) -> Result:
    data_dir = tmp / "data"
    config_path = tmp / "config.yaml"
    port = free_port()
    store_line = f"store: {{dsn: '{dsn}'}}\n" if dsn else ""
    # init and serve find the token through SOFTHSM2_CONF, inherited from this process.
    keys_line = f"keys: {json.dumps(hsm.keys_config(tmp / 'pin', ra_keys))}\n" if hsm else ""
    config_path.write_text(
        f"data_dir: {data_dir}\nserver: {{port: {port}, workers: {workers}}}\n"
        f"challenge: {{max_unused: {args.n + 10}}}\nlog: {{level: WARNING}}\n{store_line}{keys_line}"
        f"audit: {{enabled: {'true' if audit else 'false'}}}\n"
        "console: {enabled: false}\n"
    )
    base = [*scep_ca_cmd(), "--config", str(config_path)]
    integration, bodies = prepare(base, config_path, data_dir, pool, args.n)
    serve = [*base, "serve"]
    pin = can_pin() and workers == 1
    if pin:
        serve = ["taskset", "-c", "0", *serve]
    server = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/scep/{integration}"
    try:
        wait_ready(url, server)
        if pin:
            os.sched_setaffinity(0, {1})
        meter = CpuMeter(server.pid, dsn.rsplit("/", 1)[1] if dsn else None)
        replies, latencies, elapsed = asyncio.run(fire(url, bodies, args.concurrency))
        cpu = meter.stop()
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    return summarize(target, workers, args.n, latencies, elapsed, pool.check(replies), cpu)


def run_scepserver(pool: KeyPool, args: argparse.Namespace, tmp: Path) -> Result:
    ref = ScepServerProcess(tmp / "scepserver", debug=False)
    ref.init_ca()
    ca = x509.load_pem_x509_certificate(ref.ca_cert_path.read_bytes())
    bodies = pool.requests(ca, ["secret"] * args.n, "CN=device-{i},O=bench")
    pin = can_pin()
    # The harness starts it in its own session; pin it with taskset after it starts.
    ref.start()
    try:
        if pin and ref._proc is not None:
            subprocess.run(["taskset", "-a", "-p", "-c", "0", str(ref._proc.pid)], check=True, capture_output=True)
            os.sched_setaffinity(0, {1})
        meter = CpuMeter(ref._proc.pid if ref._proc is not None else None, None)
        replies, latencies, elapsed = asyncio.run(fire(ref.url, bodies, args.concurrency))
        cpu = meter.stop()
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        ref.stop()
    return summarize("scepserver", 1, args.n, latencies, elapsed, pool.check(replies), cpu)


def run_target(target: str, pool: KeyPool, args: argparse.Namespace) -> Result:
    with tempfile.TemporaryDirectory(prefix="scep-bench-") as tmp:
        print(f"running {target} ...", file=sys.stderr)
        if target == "scepserver":
            return run_scepserver(pool, args, Path(tmp))
        audit = not target.endswith(NO_AUDIT)
        workers = int(target.removesuffix(NO_AUDIT).split(":")[1])
        if target.startswith("scep-ca-pg"):
            with postgres_database() as dsn:
                return run_scep_ca(target, workers, dsn, pool, args, Path(tmp), audit=audit)
        ra_keys = HSM_RA_KEYS.get(target.split(":")[0])
        if ra_keys is not None:
            with softhsm_token(Path(tmp)) as hsm:
                return run_scep_ca(target, workers, None, pool, args, Path(tmp), hsm, audit=audit, ra_keys=ra_keys)
        return run_scep_ca(target, workers, None, pool, args, Path(tmp), audit=audit)


@dataclass
class Summary:
    """One target over every round: medians, and the range of the ratio to the ceiling."""

    target: str
    workers: int
    rate: float
    p50_ms: float
    p99_ms: float
    successes: int
    distinct_serials: int
    per_core: float  # median of rate / workers / (signs / 3), each run with the ceiling read around it
    per_core_low: float
    per_core_high: float
    cpu_ms: float
    cpu_ratio: float  # median of (3 signatures' CPU time) / (server CPU time per enrollment)
    db_cpu_ms: float | None
    machine_cpu_ms: float


def summarize_target(target: str, runs: list[tuple[Result, float]]) -> Summary:
    per_core = [r.rate / r.workers / (signs / 3) for r, signs in runs]
    return Summary(
        target=target,
        workers=runs[0][0].workers,
        rate=statistics.median(r.rate for r, _ in runs),
        p50_ms=statistics.median(r.p50_ms for r, _ in runs),
        p99_ms=statistics.median(r.p99_ms for r, _ in runs),
        successes=min(r.successes for r, _ in runs),
        distinct_serials=min(r.distinct_serials for r, _ in runs),
        per_core=statistics.median(per_core),
        per_core_low=min(per_core),
        per_core_high=max(per_core),
        cpu_ms=statistics.median(r.cpu_ms for r, _ in runs),
        cpu_ratio=statistics.median(3000 / signs / r.cpu_ms for r, signs in runs),
        db_cpu_ms=None if runs[0][0].db_cpu_ms is None else statistics.median(r.db_cpu_ms or 0.0 for r, _ in runs),
        machine_cpu_ms=statistics.median(r.machine_cpu_ms for r, _ in runs),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="enrollments per target")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--targets", default=",".join(ALL_TARGETS))
    parser.add_argument("--key-pool", type=int, default=16, help="pre-generated device keys")
    parser.add_argument("--speed-seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="run every target this many times; report medians")
    parser.add_argument(
        "--audit-cost", action="store_true", help="run each scep-ca target also without the audit log, interleaved"
    )
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.audit_cost:
        targets = [v for t in targets for v in ((t, t + NO_AUDIT) if t.startswith("scep-ca") else (t,))]
    unknown = {t.removesuffix(NO_AUDIT) for t in targets} - set(ALL_TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    pool = KeyPool(args.key_pool)
    # On a shared virtual machine the core's speed drifts by tens of percent within minutes:
    # the ceiling is read between targets, and each run is compared with the mean of the
    # readings just before and just after it.
    speeds = [openssl_rsa2048_signs_per_second(can_pin(), args.speed_seconds)]
    runs: dict[str, list[tuple[Result, float]]] = {t: [] for t in targets}
    for _round in range(args.rounds):
        for target in targets:
            result = run_target(target, pool, args)
            speeds.append(openssl_rsa2048_signs_per_second(can_pin(), args.speed_seconds))
            runs[target].append((result, (speeds[-2] + speeds[-1]) / 2))
    results = [summarize_target(t, runs[t]) for t in targets]

    signs = statistics.median(speeds)
    print(
        f"openssl speed rsa2048 on CPU 0, read {len(speeds)} times: {min(speeds):.0f}-{max(speeds):.0f} signs/s, "
        f"median {signs:.0f} -> RSA ceiling {signs / 3:.0f} enrollments/s per core"
    )
    print(
        f"{args.n} enrollments per target at concurrency {args.concurrency}, same key pool and request shape, "
        f"{args.rounds} round(s): medians"
    )
    reference = next((r for r in results if r.target == "scepserver"), None)
    header = f"{'target':20} {'workers':>7} {'enroll/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ok':>6} {'serials':>8}"
    print(
        header + f" {'vs ceiling/core':>18} {'cpu ms/enroll':>14} {'vs ceiling (cpu)':>17} {'vs scepserver':>14}"
        f" {'db cpu ms':>10} {'machine cpu ms':>15}"
    )
    for r in results:
        vs_ref = f"{r.rate / reference.rate:.2f}x" if reference else "-"
        spread = f"{r.per_core:.0%} ({r.per_core_low:.0%}-{r.per_core_high:.0%})"
        db = "-" if r.db_cpu_ms is None else f"{r.db_cpu_ms:.2f}"
        print(
            f"{r.target:20} {r.workers:>7} {r.rate:>9.0f} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f} {r.successes:>6} "
            f"{r.distinct_serials:>8} {spread:>18} {r.cpu_ms:>14.2f} {r.cpu_ratio:>17.0%} {vs_ref:>14}"
            f" {db:>10} {r.machine_cpu_ms:>15.2f}"
        )
    # openssl speed divides by CPU time, not wall-clock time: "vs ceiling (cpu)" compares the
    # server's CPU time per enrollment with three signatures' CPU time on the same footing.
    print(f"three RSA-2048 signatures at the median speed: {3000 / signs:.2f} ms of CPU")
    one = next((r for r in results if r.target == "scep-ca:1"), None)
    two = next((r for r in results if r.target == "scep-ca:2"), None)
    if one and two:
        print(f"scaling 1 -> 2 workers (SQLite): {two.rate / one.rate:.2f}x")
    pg = next((r for r in results if r.target == "scep-ca-pg:2"), None)
    if two and pg:
        # Two busy cores finish 2 / (CPU per enrollment) enrollments a second, whoever spends it:
        # the machine's CPU per enrollment bounds the PostgreSQL/SQLite ratio when both saturate.
        print(
            f"PostgreSQL vs SQLite (2 workers): {pg.rate / two.rate:.0%}; machine CPU per enrollment "
            f"{pg.machine_cpu_ms:.2f} vs {two.machine_cpu_ms:.2f} ms "
            f"(bound {two.machine_cpu_ms / pg.machine_cpu_ms:.0%}): "
            f"workers {pg.cpu_ms:.2f} vs {two.cpu_ms:.2f} ms, PostgreSQL's backends {pg.db_cpu_ms or 0.0:.2f} ms"
        )
    hsm = next((r for r in results if r.target == "scep-ca-hsm:1"), None)
    if one and hsm:
        print(f"SoftHSM keys vs file keys (1 worker): {hsm.rate / one.rate:.2f}x")
    hsm_ca = next((r for r in results if r.target == "scep-ca-hsm-ca:1"), None)
    if one and hsm_ca:
        print(f"SoftHSM CA key, RA keys in files vs file keys (1 worker): {hsm_ca.rate / one.rate:.2f}x")
    for r in results:
        without = next((w for w in results if w.target == r.target + NO_AUDIT), None)
        if without is not None:
            # CPU time per enrollment as well: on a busy machine it moves less than the rate.
            print(
                f"audit log cost, {r.target}: {r.rate:.0f} vs {without.rate:.0f} enrollments/s without it "
                f"(costs {1 - r.rate / without.rate:.1%}); CPU {r.cpu_ms:.2f} vs {without.cpu_ms:.2f} ms/enrollment "
                f"(costs {r.cpu_ms / without.cpu_ms - 1:.1%})"
            )
    failed = [t for t in targets if t.startswith("scep-ca") and any(r.successes != args.n for r, _ in runs[t])]
    dupes = [t for t in targets if any(r.distinct_serials != r.successes for r, _ in runs[t])]
    if dupes:
        print(f"DUPLICATE SERIALS: {', '.join(dupes)}")
    if failed:
        print(f"FAILED ENROLLMENTS: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
