"""Challenge pages per second from a real `scep-ca serve` process, over NTLM and over Basic,
against the credential-check ceilings measured in the same run.

    .venv/bin/python bench/challenge.py --seconds 3 --concurrency 4

What it does, in order:
1. Makes a throwaway data directory, config (``challenge.max_unused`` far above what a run can
   fetch, so the cache never fills) and integration with the real CLI.
2. Measures the ceilings on the core the server will use, before the server starts (and again
   after it stops; the better one counts): scrypt
   verifications per second (``challenge.credentials.scrypt_verify`` of the integration's own
   stored hash: what every Basic login costs) and NTLMv2 verifications per second
   (``challenge.ntlm.verify`` of a pyspnego Type 3: the HMAC-MD5 computations and the MIC check
   that every NTLM login costs).
3. Starts `scep-ca serve` pinned to CPU 0 (the clients run on CPU 1 when there are two cores).
4. NTLM phase: ``--concurrency`` threads, each on its own keep-alive connection, each page a full
   three-leg handshake (Type 1 -> 401 with Type 2 -> Type 3 -> 200), for ``--seconds``.
5. Basic phase: the same with ``Authorization: Basic`` (one request a page).
Every page is checked for a challenge, all challenges must be distinct, and the store must
hold exactly one unused challenge per page. Prints pages/s, latency, ceilings and ratios, and
the pages of each phase's first and last second: every page leaves one more unused challenge in
the store, so a falling rate shows what a raised ``max_unused`` costs per page.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import spnego

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from challenge import ntlm  # noqa: E402
from challenge.credentials import nt_hash, scrypt_verify  # noqa: E402
from tests.e2e.clients import clean_env, free_port, kill_process_group, wait_http  # noqa: E402

FLEET_REGEX = re.compile(r"The enrollment challenge password is: <B> (\S*)")


def scep_ca_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "scep-ca"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "scep_ca.cli.main"]


# -- ceilings ---------------------------------------------------------------------------------


def per_second(work: Callable[[], object], seconds: float) -> float:
    """Calls of ``work`` per second, run back to back for about ``seconds``."""
    work()  # warm-up
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        work()
        count += 1
    return count / elapsed


def scrypt_rate(password: str, stored: str, seconds: float) -> float:
    def work() -> None:
        if not scrypt_verify(password, stored):
            raise RuntimeError("scrypt_verify refused the integration's own password")

    return per_second(work, seconds)


def ntlm_rate(user: str, password: str, seconds: float) -> float:
    """``ntlm.verify`` of one pyspnego handshake against our own Type 2, as the server runs it."""
    client = spnego.client(user, password, protocol="ntlm")
    type1 = client.step()
    assert isinstance(type1, bytes)
    negotiate = ntlm.parse_negotiate(type1)
    server_challenge = os.urandom(8)
    type2 = ntlm.build_challenge(negotiate.flags, server_challenge, ntlm.filetime(time.time()), ntlm.TargetNames())
    type3 = client.step(type2)
    assert isinstance(type3, bytes)
    flags = ntlm.challenge_flags_for(negotiate.flags)
    auth = ntlm.parse_authenticate(type3, flags)
    key = nt_hash(password)

    def work() -> None:
        if ntlm.verify(auth, key, server_challenge, type1, type2, flags) is not ntlm.Verdict.OK:
            raise RuntimeError("ntlm.verify refused pyspnego's Type 3")

    return per_second(work, seconds)


# -- load -------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    pages: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)  # seconds since the phase started
    elapsed: float = 0.0
    client_cpu: float = 0.0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _ntlm_page(conn: http.client.HTTPConnection, path: str, user: str, password: str) -> bytes:
    ctx = spnego.client(user, password, protocol="ntlm")
    type1 = ctx.step()
    assert isinstance(type1, bytes)
    conn.request("GET", path, headers={"Authorization": "NTLM " + base64.b64encode(type1).decode()})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 401:
        raise RuntimeError(f"Type 1 answered {resp.status}")
    type2 = base64.b64decode(resp.getheader("WWW-Authenticate", "").split(" ", 1)[1])
    type3 = ctx.step(type2)
    assert isinstance(type3, bytes)
    conn.request("GET", path, headers={"Authorization": "NTLM " + base64.b64encode(type3).decode()})
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"Type 3 answered {resp.status}")
    return body


def _basic_page(conn: http.client.HTTPConnection, path: str, token: str) -> bytes:
    conn.request("GET", path, headers={"Authorization": token})
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"Basic answered {resp.status}")
    return body


def run_phase(name: str, port: int, path: str, user: str, password: str, concurrency: int, seconds: float) -> Phase:
    phase = Phase(name)
    token = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    start = time.perf_counter()
    deadline = start + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                body = _ntlm_page(conn, path, user, password) if name == "NTLM" else _basic_page(conn, path, token)
                latency = time.perf_counter() - t0
                match = FLEET_REGEX.search(body.decode("utf-16-le"))
                if match is None:
                    raise RuntimeError(f"no challenge on the page: {body[:200]!r}")
                with phase.lock:
                    phase.pages.append(match.group(1))
                    phase.latencies.append(latency)
                    phase.done_at.append(time.perf_counter() - start)
        except Exception as exc:
            with phase.lock:
                phase.errors.append(repr(exc))
        finally:
            conn.close()

    cpu0 = time.process_time()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.elapsed = time.perf_counter() - start
    phase.client_cpu = time.process_time() - cpu0
    if phase.errors:
        raise RuntimeError(f"{name}: {phase.errors[:3]}")
    return phase


def unused_challenges(db: Path, integration_id: str) -> int:
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM challenges WHERE integration_id = ? AND used_at IS NULL", (integration_id,)
        ).fetchone()
    return int(n)


def stored_scrypt(db: Path, integration_id: str) -> str:
    with sqlite3.connect(db) as conn:
        (value,) = conn.execute("SELECT password_scrypt FROM integrations WHERE id = ?", (integration_id,)).fetchone()
    return str(value)


def describe(phase: Phase) -> str:
    lat = sorted(phase.latencies)
    p50 = statistics.median(lat) * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    # The store keeps every unused challenge (max_unused is huge here): does the rate hold up?
    first = sum(1 for t in phase.done_at if t < 1.0)
    last = sum(1 for t in phase.done_at if t >= phase.elapsed - 1.0)
    return (
        f"{len(phase.pages) / phase.elapsed:8.1f} pages/s  ({len(phase.pages)} in {phase.elapsed:.1f}s, "
        f"first/last second {first}/{last}, latency p50 {p50:.1f} ms / p99 {p99:.1f} ms, "
        f"client CPU {phase.client_cpu / phase.elapsed:.0%})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each load phase")
    parser.add_argument("--concurrency", type=int, default=4, help="client connections")
    parser.add_argument("--ceiling-seconds", type=float, default=1.5, help="length of each ceiling measurement")
    parser.add_argument("--log-level", default="INFO", help="server log level (INFO logs one line a page)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (1: pinned to CPU 0)")
    args = parser.parse_args()
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2 and args.workers == 1

    with tempfile.TemporaryDirectory(prefix="scep-bench-challenge-") as tmp:
        data_dir = Path(tmp) / "data"
        config_path = Path(tmp) / "config.yaml"
        port = free_port()
        config_path.write_text(
            f"data_dir: {data_dir}\nserver: {{host: 127.0.0.1, port: {port}, workers: {args.workers}}}\n"
            "challenge: {max_unused: 100000000}\n"
            f"log: {{level: {args.log_level}}}\n"
            "console: {enabled: false}\n"
        )
        env = {k: v for k, v in clean_env().items() if not k.startswith("SCEP_CA_")}
        base = [*scep_ca_cmd(), "--config", str(config_path)]
        subprocess.run([*base, "init"], check=True, capture_output=True, env=env)
        created = subprocess.run(
            [*base, "integration", "create", "bench", "--subject", "CN=$USERID$,O=bench", "--json"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        info = json.loads(created.stdout)
        db = data_dir / "scep-ca.sqlite3"
        user, password = info["username"], info["password"]

        stored_hash = stored_scrypt(db, info["id"])

        def ceilings() -> tuple[float, float]:
            """On the server's core, with the server not running."""
            if pin:
                os.sched_setaffinity(0, {0})
            return (
                scrypt_rate(password, stored_hash, args.ceiling_seconds),
                ntlm_rate(user, password, args.ceiling_seconds),
            )

        scrypt_before, ntlm_before = ceilings()

        serve = [*base, "serve"]
        if pin:
            serve = ["taskset", "-c", "0", *serve]
            os.sched_setaffinity(0, {1})
        with (Path(tmp) / "server.log").open("wb") as log:
            server = subprocess.Popen(serve, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/crl/ca.crl", timeout=30, proc=server)
            path = f"/challenge/{info['id']}/certsrv/mscep_admin/"
            ntlm_phase = run_phase("NTLM", port, path, user, password, args.concurrency, args.seconds)
            basic_phase = run_phase("Basic", port, path, user, password, args.concurrency, args.seconds)
        finally:
            kill_process_group(server)
        # Measured again afterwards: on a shared machine one measurement can catch a busy
        # moment. The better of the two is the ceiling.
        scrypt_after, ntlm_after = ceilings()
        if pin:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        scrypt_per_s, ntlm_per_s = max(scrypt_before, scrypt_after), max(ntlm_before, ntlm_after)

        pages = ntlm_phase.pages + basic_phase.pages
        if len(set(pages)) != len(pages):
            raise RuntimeError(f"duplicate challenges: {len(pages) - len(set(pages))}")
        stored = unused_challenges(db, info["id"])
        if stored != len(pages):
            raise RuntimeError(f"the store holds {stored} unused challenges for {len(pages)} pages")

    ntlm_pages = len(ntlm_phase.pages) / ntlm_phase.elapsed
    basic_pages = len(basic_phase.pages) / basic_phase.elapsed
    cores = "server on CPU 0, clients on CPU 1" if pin else "unpinned"
    print(
        f"concurrency {args.concurrency}, {args.seconds:.0f}s a phase, {args.workers} worker(s), {cores}, "
        f"server log level {args.log_level}"
    )
    print(f"pages checked: {len(pages)}, all distinct, {stored} unused challenges in the store")
    print(f"NTLM  (3-leg handshake a page, keep-alive): {describe(ntlm_phase)}")
    print(f"Basic (one request a page, keep-alive):     {describe(basic_phase)}")
    print(
        f"ceiling NTLMv2 verify (ntlm.verify):        {ntlm_per_s:8.0f} verifications/s on one core "
        f"(before/after the load: {ntlm_before:.0f}/{ntlm_after:.0f})"
    )
    print(
        f"ceiling scrypt verify (N=2^15, r=8, p=1):   {scrypt_per_s:8.1f} verifications/s on one core "
        f"(before/after the load: {scrypt_before:.1f}/{scrypt_after:.1f})"
    )
    print(f"ratio NTLM pages / NTLMv2 verifications:    {ntlm_pages / ntlm_per_s:8.1%}")
    print(f"ratio Basic pages / scrypt verifications:   {basic_pages / scrypt_per_s:8.1%}")
    print(f"NTLM pages per Basic page:                  {ntlm_pages / basic_pages:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
