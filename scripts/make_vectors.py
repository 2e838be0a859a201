#!/usr/bin/env python3
"""Build the PKIOperation test vectors that no real client here sends, and write the folder's README.

    python scripts/make_vectors.py [FOLDER]     # default: the newest tests/vectors/scep-ca-*

For every content cipher (AES-128/192/256-CBC, DES-EDE3-CBC, DES-CBC) x signer digest
(SHA-1/256/512) combination that no captured request in FOLDER already covers, this writes a
PKCSReq built with ``scep_ca.protocol.client.build_request``, encrypted to FOLDER/ra.pem (the RA of the
server the real clients were captured against, see ``scripts/capture_vectors.py``) and signed
by a transient self-signed certificate of FOLDER/built-device.key (kept when it exists, so a
re-run only changes the messages). Each message must round-trip through our decoder and be
accepted by ``openssl cms -inform DER -cmsout -print``; the script stops otherwise.

FOLDER/manifest.json lists every vector (captured ones are entered by capture_vectors.py);
README.md is generated from it, so the two never disagree.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from scep_ca.protocol.client import build_csr, build_request, self_signed_signer  # noqa: E402
from scep_ca.protocol.dn import parse_dn  # noqa: E402
from scep_ca.protocol.enums import ContentCipher, DigestAlg  # noqa: E402
from scep_ca.protocol.envelope import RecipientKey, decrypt_envelope  # noqa: E402
from scep_ca.protocol.message import decode_pki_message, verify_pki_message  # noqa: E402

VECTORS = ROOT / "tests" / "vectors"
MANIFEST = "manifest.json"
BUILT_KEY = "built-device.key"
BUILT_CHALLENGE = "built-vector-challenge"
SUBJECT_TEMPLATE = "CN=$USERID$,OU=MDM,O=scep-client,C=US"

CIPHER_NAMES = {
    ContentCipher.AES128: "AES-128-CBC",
    ContentCipher.AES192: "AES-192-CBC",
    ContentCipher.AES256: "AES-256-CBC",
    ContentCipher.DES3: "DES-EDE3-CBC",
    ContentCipher.DES: "DES-CBC",
}
DIGEST_NAMES = {DigestAlg.SHA1: "SHA-1", DigestAlg.SHA256: "SHA-256", DigestAlg.SHA512: "SHA-512"}
# Short, file-name-friendly labels.
CIPHER_LABELS = {
    ContentCipher.AES128: "aes128",
    ContentCipher.AES192: "aes192",
    ContentCipher.AES256: "aes256",
    ContentCipher.DES3: "des3",
    ContentCipher.DES: "des",
}


def load_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if path.exists():
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    return {"vectors": []}


def save_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def openssl_cmsout(path: Path) -> None:
    """Fail unless ``openssl cms -inform DER -cmsout -print`` parses the message."""
    result = subprocess.run(
        ["openssl", "cms", "-inform", "DER", "-cmsout", "-print", "-in", str(path), "-out", "/dev/null"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"openssl cms -cmsout -print rejects {path}:\n{result.stderr}")


def check_request(path: Path, recipient: RecipientKey) -> tuple[ContentCipher, DigestAlg, str]:
    """Decode, verify and decrypt a request with the folder's RA key: (cipher, digest, transactionID)."""
    msg = decode_pki_message(path.read_bytes())
    verify_pki_message(msg)
    assert msg.content is not None and msg.digest_alg is not None, path
    decrypted = decrypt_envelope(msg.content, recipient, allow_des=True, stand_in_secret=bytes(32))
    x509.load_der_x509_csr(decrypted.plaintext)
    return decrypted.cipher, msg.digest_alg, msg.transaction_id


def load_recipient(folder: Path) -> tuple[x509.Certificate, RecipientKey]:
    cert = x509.load_pem_x509_certificate((folder / "ra.pem").read_bytes())
    key = serialization.load_pem_private_key((folder / "ra.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return cert, RecipientKey.from_cert(cert, key)


def _device_key(folder: Path) -> rsa.RSAPrivateKey:
    path = folder / BUILT_KEY
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return key


def build_missing(folder: Path, today: str | None = None) -> list[dict[str, Any]]:
    """Write a built PKCSReq for every cipher x digest pair the captured requests leave out."""
    today = today or dt.date.today().isoformat()
    manifest = load_manifest(folder)
    captured = [v for v in manifest["vectors"] if v["client"] != "scep_ca.protocol.client.build_request"]
    for old in folder.glob("built-*-pkcsreq.der"):
        old.unlink()
    covered = {(v["cipher_id"], v["digest_id"]) for v in captured}
    ra_cert, recipient = load_recipient(folder)
    key = _device_key(folder)
    signer = self_signed_signer(key, cn="scep-ca vector signer")
    built: list[dict[str, Any]] = []
    for cipher in CIPHER_NAMES:
        for digest in DIGEST_NAMES:
            if (cipher.value, digest.value) in covered:
                continue
            label = f"{CIPHER_LABELS[cipher]}-{digest.value}"
            subject = f"CN=built-{label},OU=MDM,O=scep-client,C=US"
            csr = build_csr(key, parse_dn(subject), BUILT_CHALLENGE, hashes.SHA256())
            request = build_request(
                csr,
                signer_cert=signer,
                signer_key=key,
                recipient=ra_cert,
                transaction_id=f"built-{label}",
                cipher=cipher,
                digest=digest,
            )
            name = f"built-{label}-pkcsreq.der"
            path = folder / name
            path.write_bytes(request.der)
            openssl_cmsout(path)
            got = check_request(path, recipient)
            assert got == (cipher, digest, request.transaction_id), (name, got)
            built.append(
                {
                    "file": name,
                    "client": "scep_ca.protocol.client.build_request",
                    "version": "this repository",
                    "date": today,
                    "command": (
                        f"python scripts/make_vectors.py: build_request(csr, cipher=ContentCipher.{cipher.name}, "
                        f"digest=DigestAlg.{digest.name})"
                    ),
                    "transport": "(none: built offline)",
                    "cipher": CIPHER_NAMES[cipher],
                    "digest": DIGEST_NAMES[digest],
                    "cipher_id": cipher.value,
                    "digest_id": digest.value,
                    "transaction_id": request.transaction_id,
                    "challenge": BUILT_CHALLENGE,
                    "subject": subject,
                    "device_key": BUILT_KEY,
                    "notes": "DER; signer CN=scep-ca vector signer (self-signed, SHA-256)",
                }
            )
    manifest["vectors"] = captured + built
    save_manifest(folder, manifest)
    return built


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_readme(folder: Path) -> None:
    manifest = load_manifest(folder)
    lines = [
        f"# PKIOperation requests against scep-ca ({folder.name})",
        "",
        "Requests sent to OUR server (`scep-ca serve` on loopback, a throwaway data dir), each encrypted to the RA",
        "certificate `ra.pem` whose key `ra.key` is here (unencrypted on purpose: throwaway test keys, never used",
        "anywhere else). `ca.pem` is the CA that issued the RA. `*-device.key` is the key that signed a request (the",
        "CSR key and the transient signer's key), so a test can decrypt a reply encrypted to that signer.",
        "`manifest.json` holds the same facts as the table below, for tests.",
        "",
        "Re-create everything (new server, new keys): `python scripts/capture_vectors.py`; rebuild only the built",
        "messages against the RA here: `python scripts/make_vectors.py`. Every message is accepted by",
        "`openssl cms -inform DER -cmsout -print` and by our decoder (checked by the scripts).",
        "",
        "Captured requests carry a real one-time challenge that the capture run already consumed; built ones carry",
        f"`{BUILT_CHALLENGE}`. CSR subjects fit the integration template `{SUBJECT_TEMPLATE}`.",
        "",
        "| file | client | version | date | command | transport | cipher | digest | transactionID | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in manifest["vectors"]:
        lines.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    f"`{v['file']}`",
                    v["client"],
                    v["version"],
                    v["date"],
                    f"`{v['command']}`",
                    v["transport"],
                    v["cipher"],
                    v["digest"],
                    f"`{v['transaction_id']}`",
                    v.get("notes", ""),
                )
            )
            + " |"
        )
    keys = sorted({v["device_key"] for v in manifest["vectors"] if v.get("device_key")})
    lines += [
        "",
        "Other files:",
        "",
        "| file | what |",
        "|---|---|",
        "| `ra.pem`, `ra.key` | the RA every request here is encrypted to (and that signs our CertReps) |",
        "| `ca.pem` | the CA that issued `ra.pem` |",
    ]
    lines += [f"| `{k}` | the device key of the requests whose manifest entry names it |" for k in keys]
    lines += ["| `manifest.json` | machine-readable form of the table above |", ""]
    (folder / "README.md").write_text("\n".join(lines))


def newest_folder() -> Path:
    folders = sorted(VECTORS.glob("scep-ca-*"))
    if not folders:
        raise SystemExit("no tests/vectors/scep-ca-* folder: run scripts/capture_vectors.py first")
    return folders[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, help="vector folder holding ra.pem/ra.key")
    args = parser.parse_args(argv)
    folder: Path = args.folder or newest_folder()
    built = build_missing(folder)
    write_readme(folder)
    for entry in built:
        print(f"wrote {folder / entry['file']} ({entry['cipher']}, {entry['digest']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
