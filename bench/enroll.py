"""Enrollment throughput of a real `scep-ca serve` process against the RSA ceiling.

    .venv/bin/python bench/enroll.py --n 3000 --concurrency 16

What it does, in order:
1. Creates a throwaway data directory, CA and integration with the real CLI, and seeds N
   one-time challenges through the store (the same code path `scep-ca challenge new` uses).
2. Pre-builds N PKCSReq messages (RSA-2048 device keys from a pre-generated pool, SHA-256,
   AES-128) so that client-side RSA work is not timed: on a 2-core machine the load generator
   would otherwise compete with the server for the CPU it is measuring.
3. Starts `scep-ca serve` pinned to CPU 0 (the load generator runs on CPU 1), POSTs every
   request at the given concurrency over loopback and records latencies.
4. Afterwards (untimed) verifies every reply: signature, SUCCESS, decrypts the certificate,
   and checks that all serial numbers are distinct.
5. Runs `openssl speed rsa2048` on CPU 0 in the same run: private-key operations per second / 3
   (decrypt, sign certificate, sign CertRep) is the RSA-bound ceiling of one core.
Prints enrollments/s, p50/p99 latency, the ceiling and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from challenge.issuer import issue_challenge  # noqa: E402
from config import load_config  # noqa: E402
from scep_ca.client import build_csr, build_request, open_reply, self_signed_signer  # noqa: E402
from scep_ca.dn import parse_dn  # noqa: E402
from scep_ca.enums import ContentCipher, DigestAlg, PKIStatus  # noqa: E402
from store.factory import open_store  # noqa: E402


def scep_ca_cmd() -> list[str]:
    exe = shutil.which("scep-ca", path=str(Path(sys.executable).parent)) or shutil.which("scep-ca")
    return [exe] if exe else [sys.executable, "-m", "scep_ca.cli.main"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def openssl_rsa2048_signs_per_second(cpu: int | None, seconds: int) -> float:
    cmd = ["openssl", "speed", "-seconds", str(seconds), "rsa2048"]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    # "rsa 2048 bits 0.000214s 0.000006s   4672.0 161205.6"
    match = re.search(r"rsa\s+2048 bits\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"cannot read openssl speed output:\n{out}")
    return float(match.group(1))


async def seed(data_dir: Path, config_path: Path, integration_id: str, n: int) -> list[str]:
    config = load_config(config_path, {}, {"data_dir": str(data_dir)})
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


@dataclass
class Prepared:
    bodies: list[bytes]
    key_index: list[int]
    keys: list[rsa.RSAPrivateKey]
    signers: list[x509.Certificate]


def build_requests(ca_cert: x509.Certificate, challenges: list[str], pool: int) -> Prepared:
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(pool)]
    signers = [self_signed_signer(k) for k in keys]
    prepared = Prepared([], [], keys, signers)
    for i, challenge in enumerate(challenges):
        k = i % pool
        csr = build_csr(keys[k], parse_dn(f"CN=device-{i},O=bench"), challenge)
        req = build_request(
            csr,
            signer_cert=signers[k],
            signer_key=keys[k],
            recipient=ca_cert,
            transaction_id=f"bench-{i}",
            cipher=ContentCipher.AES128,
            digest=DigestAlg.SHA256,
        )
        prepared.bodies.append(req.der)
        prepared.key_index.append(k)
    return prepared


async def fire(url: str, bodies: list[bytes], concurrency: int) -> tuple[list[bytes], list[float], float]:
    replies: list[bytes] = [b""] * len(bodies)
    latencies: list[float] = [0.0] * len(bodies)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(bodies)):
        queue.put_nowait(i)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(url, params={"operation": "GetCACaps"}) as resp:
            await resp.read()

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                t0 = time.perf_counter()
                async with session.post(
                    url + "?operation=PKIOperation",
                    data=bodies[i],
                    headers={"Content-Type": "application/x-pki-message"},
                ) as resp:
                    replies[i] = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}: {replies[i][:200]!r}")
                latencies[i] = time.perf_counter() - t0

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return replies, latencies, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="enrollments")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--key-pool", type=int, default=16, help="pre-generated device keys")
    parser.add_argument("--speed-seconds", type=int, default=3)
    parser.add_argument("--py-spy", metavar="FILE", help="record the server with py-spy (collapsed stacks) to FILE")
    args = parser.parse_args()
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2 and args.workers == 1

    with tempfile.TemporaryDirectory(prefix="scep-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        config_path = Path(tmp) / "config.yaml"
        port = free_port()
        config_path.write_text(
            f"data_dir: {data_dir}\nserver: {{port: {port}, workers: {args.workers}}}\n"
            f"challenge: {{max_unused: {args.n + 10}}}\nlog: {{level: WARNING}}\n"
        )
        base = [*scep_ca_cmd(), "--config", str(config_path)]
        subprocess.run([*base, "init"], check=True, capture_output=True)
        created = subprocess.run(
            [*base, "integration", "create", "bench", "--subject", "CN=$USERID$,O=bench", "--json"],
            check=True,
            capture_output=True,
            text=True,
        )
        info = json.loads(created.stdout)
        challenges = asyncio.run(seed(data_dir, config_path, info["id"], args.n))
        ca_cert = x509.load_pem_x509_certificate((data_dir / "ca.pem").read_bytes())
        t0 = time.perf_counter()
        prepared = build_requests(ca_cert, challenges, args.key_pool)
        print(f"built {args.n} requests in {time.perf_counter() - t0:.1f}s (untimed)", file=sys.stderr)

        serve = [*base, "serve"]
        if args.workers > 1:
            serve += ["--workers", str(args.workers)]
        if args.py_spy:
            serve = ["py-spy", "record", "--format", "raw", "--rate", "250", "-o", args.py_spy, "--", *serve]
        if pin:
            serve = ["taskset", "-c", "0", *serve]
            os.sched_setaffinity(0, {1})
        server = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            url = f"http://127.0.0.1:{port}/scep/{info['id']}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(url + "?operation=GetCACaps", timeout=1).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("server did not start") from None
                    time.sleep(0.1)
            replies, latencies, elapsed = asyncio.run(fire(url, prepared.bodies, args.concurrency))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
        if pin:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))

        serials = set()
        for k, reply in zip(prepared.key_index, replies, strict=True):
            opened = open_reply(reply, prepared.signers[k], prepared.keys[k])
            if opened.status is not PKIStatus.SUCCESS:
                raise RuntimeError(f"enrollment failed: {opened.fail_info} {opened.fail_text}")
            serials.add(opened.certificates[0].serial_number)
        if len(serials) != args.n:
            raise RuntimeError(f"duplicate serials: {args.n - len(serials)}")

    signs = openssl_rsa2048_signs_per_second(0 if pin else None, args.speed_seconds)
    ceiling = signs / 3 * args.workers
    rate = args.n / elapsed
    lat = sorted(latencies)
    p50 = statistics.median(lat) * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    print(f"enrollments:            {args.n} at concurrency {args.concurrency}, {args.workers} worker(s)")
    print(f"all SUCCESS, distinct serials: {len(serials)}")
    print(f"enrollments/s:          {rate:.0f}")
    print(f"latency p50 / p99:      {p50:.1f} ms / {p99:.1f} ms")
    print(f"openssl speed rsa2048:  {signs:.0f} signs/s per core")
    print(f"RSA ceiling:            {ceiling:.0f} enrollments/s ({args.workers} core(s), 3 private-key ops each)")
    print(f"ratio to ceiling:       {rate / ceiling:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
