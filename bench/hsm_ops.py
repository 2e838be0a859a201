"""One RSA-2048 private-key operation in SoftHSM against the same key as a file key, in CPU time.

    .venv/bin/python bench/hsm_ops.py [--n 400] [--enroll-cpu-ms 1.7]

The same key (generated here, imported into a temporary SoftHSM2 token through ``Token.import_key``)
signs ``--n`` times as a file key (cryptography, as ``scep_ca.pki.keys`` uses it) and as a token key
(``Pkcs11Key.sign``, the server's own path: one persistent session, the key handle cached), and
decrypts raw (CKM_RSA_X_509, the key transport's path) ``--n`` times; CPU time of this process,
which includes SoftHSM's (a library in it).

Why it matters (issue 23: "SoftHSM at least 0.8x of file keys"): an enrollment makes three
private-key operations, all in the token when the CA and RA keys are there. With ``C`` the CPU
time of a file-key enrollment and ``d`` the extra CPU of one token operation, the best ratio is
``C / (C + 3 d)``; it reaches 0.8 only when ``C >= 12 d``. The script prints ``d`` and that bound
for ``--enroll-cpu-ms`` (the "cpu ms/enroll" of ``bench/enroll.py``'s scep-ca:1 line).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scep_ca.pki.pkcs11_keys import Token, TokenSettings  # noqa: E402
from tests.hsm import softhsm_in_process  # noqa: E402


def cpu_ms_per_call(call: Callable[[], object], n: int, rounds: int = 3) -> float:
    """Median over ``rounds`` of the CPU time of ``n`` calls, per call, in ms."""
    for _ in range(10):
        call()
    runs = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(n):
            call()
        runs.append((time.process_time() - start) / n * 1000)
    return statistics.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--enroll-cpu-ms", type=float, help="a file-key enrollment's CPU time (bench/enroll.py)")
    args = parser.parse_args()
    data = b"a certificate's TBS bytes" * 20
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ciphertext = key.public_key().encrypt(b"k" * 16, padding.PKCS1v15())
    with tempfile.TemporaryDirectory() as tmp, softhsm_in_process(Path(tmp)) as hsm:
        token = Token(TokenSettings(module=str(hsm.module), token_label=hsm.label, pin=hsm.pin))
        in_token, _ = token.import_key(key, "bench")
        file_sign = cpu_ms_per_call(lambda: key.sign(data, padding.PKCS1v15(), hashes.SHA256()), args.n)
        token_sign = cpu_ms_per_call(lambda: in_token.sign(data, padding.PKCS1v15(), hashes.SHA256()), args.n)
        token_decrypt = cpu_ms_per_call(lambda: in_token.raw_decrypt(ciphertext), args.n)
    extra = (token_sign + token_decrypt + token_sign) / 3 - file_sign
    print(f"RSA-2048, {args.n} operations x 3 rounds, CPU ms per operation (medians):")
    print(f"  file key sign (cryptography)        {file_sign:6.3f}")
    print(
        f"  SoftHSM sign (Pkcs11Key.sign)       {token_sign:6.3f}   {file_sign / token_sign:.2f}x the file key's speed"
    )
    print(f"  SoftHSM raw decrypt (RSA_X_509)     {token_decrypt:6.3f}")
    print(f"  extra CPU of one token operation d  {extra:6.3f} (an enrollment: 2 signatures and 1 decryption)")
    if args.enroll_cpu_ms:
        c = args.enroll_cpu_ms
        print(
            f"  with a file-key enrollment at {c:.2f} ms: SoftHSM at best {c / (c + 3 * extra):.2f}x of file keys; "
            f"0.8x needs an enrollment of at least {12 * extra:.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
