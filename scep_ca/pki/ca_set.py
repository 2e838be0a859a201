"""Every CA this server answers for: the current one, the next one (rollover), the previous ones.

Layout of the data directory:
- ``ca.pem``, ``ca.key``, ``ra*.pem``, ``ra*.key``: the current CA and its RA(s);
- ``next/``: the same files for the CA that ``scep-ca ca rollover`` created and
  ``GetNextCACert`` (RFC 8894 section 4.7) announces until ``scep-ca ca activate-next``;
- ``previous/<ca id>/``: CAs that were current before; their certificates stay valid until
  they expire, so their CRLs and OCSP answers are still signed and served.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from config.clock import utc_now
from config.files import make_private_dir
from scep_ca.pki.ca import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    RA_CERT_FILE,
    RA_ENC_CERT_FILE,
    RA_ENC_KEY_FILE,
    RA_KEY_FILE,
    TOKEN_REF_FILES,
    CAError,
    CAIdentity,
    create_ca,
    load_ca,
)
from scep_ca.pki.pkcs11_keys import Token

NEXT_DIR = "next"
PREVIOUS_DIR = "previous"
CA_ID_HEX = 16
# What moves on activation: the CA and its RAs, never secret.key or the database.
CA_FILES = (CA_CERT_FILE, CA_KEY_FILE, RA_CERT_FILE, RA_KEY_FILE, RA_ENC_CERT_FILE, RA_ENC_KEY_FILE, *TOKEN_REF_FILES)


def ca_id(ca: CAIdentity) -> str:
    """A short, stable name of a CA for URLs (``/crl/<ca id>.crl``): its SHA-256 fingerprint, shortened."""
    return ca.fingerprint_sha256[:CA_ID_HEX]


def crl_path(ca: CAIdentity, shard: int | None = None) -> str:
    """The path of a CA's full CRL (``/crl/<ca id>.crl``) or of one of its shards
    (``/crl/<ca id>/<shard>.crl``): the certificates' CDP and the shard's
    issuingDistributionPoint both name ``<public URL><this>``, so they are built here only."""
    if shard is None:
        return f"/crl/{ca_id(ca)}.crl"
    return f"/crl/{ca_id(ca)}/{shard}.crl"


@dataclass(frozen=True)
class CASet:
    current: CAIdentity
    next: CAIdentity | None = None
    previous: tuple[CAIdentity, ...] = ()

    @property
    def issuers(self) -> tuple[CAIdentity, ...]:
        """CAs whose certificates may still be in use: current first."""
        return (self.current, *self.previous)

    def by_id(self, name: str) -> CAIdentity | None:
        for ca in self.issuers:
            if ca_id(ca) == name:
                return ca
        return None


def load_ca_set(data_dir: Path, passphrase: bytes | None, token: Token | None = None) -> CASet:
    current = load_ca(data_dir, passphrase, token)
    next_dir = data_dir / NEXT_DIR
    nxt = load_ca(next_dir, passphrase, token) if (next_dir / CA_CERT_FILE).exists() else None
    previous = []
    prev_root = data_dir / PREVIOUS_DIR
    if prev_root.is_dir():
        for sub in sorted(prev_root.iterdir()):
            if (sub / CA_CERT_FILE).exists():
                ca = load_ca(sub, passphrase, token)
                if ca.cert.not_valid_after_utc > utc_now():
                    previous.append(ca)
    return CASet(current, nxt, tuple(previous))


def rollover(
    data_dir: Path,
    *,
    subject: str | None,
    key_size: int,
    validity_days: int,
    passphrase: bytes | None,
    token: Token | None = None,
    ra_validity_days: int | None = None,
) -> CAIdentity:
    """``scep-ca ca rollover``: create the next CA (and its RA) in ``next/``; issuance is unchanged."""
    current = load_ca(data_dir, passphrase, token)
    next_dir = data_dir / NEXT_DIR
    if (next_dir / CA_CERT_FILE).exists():
        raise CAError(f"a next CA already exists in {next_dir}; activate it first")
    return create_ca(
        next_dir,
        subject=subject or current.cert.subject.rfc4514_string(),
        key_size=key_size,
        validity_days=validity_days,
        passphrase=passphrase,
        token=token,
        ra_validity_days=ra_validity_days,
    )


def activate_next(
    data_dir: Path, passphrase: bytes | None, token: Token | None = None
) -> tuple[CAIdentity, CAIdentity]:
    """``scep-ca ca activate-next``: the current CA moves to ``previous/``, the next one becomes current.

    Returns (old, new). Running servers switch when restarted.
    """
    next_dir = data_dir / NEXT_DIR
    if not (next_dir / CA_CERT_FILE).exists():
        raise CAError("there is no next CA: run `scep-ca ca rollover` first")
    old = load_ca(data_dir, passphrase, token)
    new = load_ca(next_dir, passphrase, token)
    target = data_dir / PREVIOUS_DIR / ca_id(old)
    if target.exists():
        raise CAError(f"{target} exists already; refusing to overwrite it")
    make_private_dir(target)
    for name in CA_FILES:
        if (data_dir / name).exists():
            (data_dir / name).rename(target / name)
    for path in sorted(next_dir.iterdir()):
        path.rename(data_dir / path.name)
    shutil.rmtree(next_dir)
    return old, new
