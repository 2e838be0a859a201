"""Instructions an enrollment costs besides its three RSA private-key operations, counted by callgrind.

    .venv/bin/python bench/enroll_instructions.py --n 200
    .venv/bin/python bench/enroll_instructions.py --n 200 --env SOME_FLAG=1   # an A/B of one change

``bench/enroll.py`` reads time, and on this project's 2-core virtual machine time moves by 10-20%
between runs whenever anything else runs (a test suite, a second benchmark). An instruction count
does not: ``valgrind --tool=callgrind`` counts the same instructions for the same requests however
busy the machine is, so a change to the hot path shows here as a number, not as noise.

What it does: a throwaway data directory, CA and integration (the real CLI), ``--n`` PKCSReq messages
pre-built as ``bench/enroll.py`` builds them, and ``scep-ca serve`` (one worker, SQLite, file keys,
console off) started under callgrind with collection off; 48 warm-up enrollments, then collection on
for ``--n`` enrollments at concurrency 8, off again; every reply is verified. Then it splits the
collected instructions into the RSA private-key operations (OpenSSL's ``rsa_ossl_private_encrypt``
and ``rsa_ossl_private_decrypt``, inclusive) and everything else: HTTP, SCEP parsing, the CSR
checks, the certificate and CertRep encoding, the store's transaction, the audit event.

Only the second number is comparable with time. Under valgrind OpenSSL takes its AVX2 RSA path (no
AVX-512), so the RSA share of *instructions* is not the RSA share of CPU time that the per-core
ceiling in ``bench/enroll.py`` is about; the non-RSA count is what a change to our code moves.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# bench/enroll.py: the key pool, the seeding and the load generator.
import enroll

WARM_UP = 48  # a multiple of the key pool's size: replies are checked against the key of their index
RSA_FUNCTIONS = ("rsa_ossl_private_encrypt", "rsa_ossl_private_decrypt")


def inclusive_counts(profile: Path) -> tuple[int, dict[str, int]]:
    """The collected total and the inclusive count of each of ``RSA_FUNCTIONS``."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", str(profile)], check=True, capture_output=True, text=True
    ).stdout
    total = re.search(r"^\s*([\d,]+) \S* *PROGRAM TOTALS", text, re.MULTILINE)
    assert total is not None, "callgrind_annotate printed no total"
    found = {}
    for name in RSA_FUNCTIONS:
        match = re.search(rf"^\s*([\d,]+) .*:{name} ", text, re.MULTILINE)
        found[name] = int(match.group(1).replace(",", "")) if match else 0
    return int(total.group(1).replace(",", "")), found


def run(args: argparse.Namespace, tmp: Path) -> tuple[int, int, int]:
    """(enrollments verified, total instructions, RSA private-key instructions)."""
    pool = enroll.KeyPool(8)
    data_dir, config_path, port = tmp / "data", tmp / "config.yaml", enroll.free_port()
    config_path.write_text(
        f"data_dir: {data_dir}\nserver: {{port: {port}, workers: 1}}\n"
        f"challenge: {{max_unused: {args.n + WARM_UP + 10}}}\nlog: {{level: WARNING}}\nconsole: {{enabled: false}}\n"
    )
    base = [*enroll.scep_ca_cmd(), "--config", str(config_path)]
    integration, bodies = enroll.prepare(base, config_path, data_dir, pool, args.n + WARM_UP)
    profile = tmp / "callgrind.out"
    env = {**os.environ, **dict(item.split("=", 1) for item in args.env)}
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={profile}"]
    server = subprocess.Popen(
        [*valgrind, *base, "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/scep/{integration}"
    try:
        enroll.wait_ready(url, server, timeout=600)
        asyncio.run(enroll.fire(url, bodies[:WARM_UP], 4))
        subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True, capture_output=True)
        replies, _, _ = asyncio.run(enroll.fire(url, bodies[WARM_UP:], 8))
        subprocess.run(["callgrind_control", "-i", "off", str(server.pid)], check=True, capture_output=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=600)
    ok, serials = pool.check(replies)
    assert ok == serials == args.n, f"{ok} successes, {serials} distinct serials of {args.n}"
    total, rsa = inclusive_counts(profile)
    assert all(rsa.values()), f"no RSA function found in the profile: {rsa}"
    if args.save_profile is not None:
        shutil.copyfile(profile, args.save_profile)
    return ok, total, sum(rsa.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="enrollments counted (after 48 warm-up ones)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="for the server")
    parser.add_argument("--save-profile", type=Path, metavar="PATH", help="keep the callgrind profile")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is missing (Debian package valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        n, total, rsa = run(args, Path(tmp))
    print(f"{n} enrollments verified; instructions per enrollment (callgrind):")
    print(f"  everything else  {(total - rsa) / n / 1e6:8.3f} M   <- our code, aiohttp, SQLite, Python")
    print(f"  RSA private ops  {rsa / n / 1e6:8.3f} M   (valgrind's AVX2 path: not comparable with time)")
    print(f"  total            {total / n / 1e6:8.3f} M")
    return 0


if __name__ == "__main__":
    sys.exit(main())
