"""RA certificates that renew themselves: which are due, and the file moves of one renewal.

NDES's most common outage is an expired RA certificate. Here an RA within
``ra.renew_before_days`` of its notAfter gets a new key pair (in the token when
``keys.pkcs11`` is set, unless ``keys.pkcs11.ra_keys: files``; ``create_ra`` decides) certified
by the CA, and the new files take the RA's place:

- the old signing RA moves to ``retired/<UTC time>/`` (kept for audit, never used again:
  CertReps are signed by the certificate GetCACert serves, RFC 8894 section 3.3.2);
- the old encryption (or combined) RA moves to ``ra-previous/<UTC time>/``: clients cache
  GetCACert and keep encrypting to it, so ``load_ca`` keeps it as a decryption key until
  it expires (RFC 8894 section 3.2.2, "the CA or RA certificate" the client holds).

Synchronous and store-free: exactly-once across processes and hosts is the caller's
business (``scep_ca.services.ra_renewal`` holds a store lease around ``renew_ra``).
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from config.files import make_private_dir
from scep_ca.pki.ca import (
    PREVIOUS_RA_DIR,
    RA_USAGES,
    CAIdentity,
    create_ra,
)
from scep_ca.pki.pkcs11_keys import URI_SUFFIX, Token

RETIRED_DIR = "retired"
# An RA ending this close to the CA ends with it (create_ra caps it at the CA's notAfter).
_SAME_END = dt.timedelta(minutes=10)
# New files are made here first, then renamed into place one by one.
_STAGING_DIR = ".ra-renewal"


@dataclass(frozen=True)
class RaCertificate:
    """One RA certificate of the current CA and what it is for (``signing``, ``encryption``, ``combined``)."""

    usage: str
    cert: x509.Certificate

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc


@dataclass(frozen=True)
class Renewed:
    usage: str
    old: x509.Certificate
    new: x509.Certificate


def ra_certificates(identity: CAIdentity) -> tuple[RaCertificate, ...]:
    """The RA certificates GetCACert serves: the pair, or the one combined RA."""
    if identity.enc_cert is None:
        return (RaCertificate("combined", identity.ra_cert),)
    return (RaCertificate("signing", identity.ra_cert), RaCertificate("encryption", identity.enc_cert))


def due(identity: CAIdentity, now: dt.datetime, renew_before_days: int) -> tuple[RaCertificate, ...]:
    """The RA certificates within ``renew_before_days`` of their notAfter (or past it).

    An RA that already ends with the CA is left alone: a new one could not outlive the CA
    either (``create_ra`` caps it), so only a CA rollover helps (the CA warning says so)."""
    limit = now + dt.timedelta(days=renew_before_days)
    return tuple(ra for ra in ra_certificates(identity) if ra.not_after <= limit and not ends_with_ca(identity, ra))


def ends_with_ca(identity: CAIdentity, ra: RaCertificate) -> bool:
    return ra.not_after >= identity.cert.not_valid_after_utc - _SAME_END


def renew_ra(
    data_dir: Path,
    identity: CAIdentity,
    usages: tuple[str, ...],
    *,
    passphrase: bytes | None,
    token: Token | None,
    validity_days: int,
    now: dt.datetime,
) -> tuple[Renewed, ...]:
    """Issue a new RA for each usage in ``usages`` and put it in the place of the old one.

    Running processes see the new files at their next reload (``load_ca``); a reload that
    lands between two renames finds a key that does not match its certificate, fails and
    is retried, so no process ever serves a half-renewed RA.
    """
    current = {ra.usage: ra.cert for ra in ra_certificates(identity)}
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    staging = data_dir / _STAGING_DIR
    if staging.exists():
        shutil.rmtree(staging)  # left over from a renewal that died half-way
    make_private_dir(staging)
    renewed = []
    try:
        for usage in usages:
            cert, _ = create_ra(
                staging,
                identity.cert,
                identity.key,
                key_size=identity.key.key_size,
                passphrase=passphrase,
                now=now,
                usage=usage,
                token=token,
                validity_days=validity_days,
            )
            # The signing half is never used again; a decrypting one still serves cached GetCACerts.
            keep = RETIRED_DIR if usage == "signing" else PREVIOUS_RA_DIR
            _swap(data_dir, staging, data_dir / keep / stamp, usage)
            renewed.append(Renewed(usage, current[usage], cert))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tuple(renewed)


def _swap(data_dir: Path, staging: Path, keep: Path, usage: str) -> None:
    _, _, _, cert_file, key_file = RA_USAGES[usage]
    make_private_dir(keep.parent)
    make_private_dir(keep)
    names = (key_file, key_file + URI_SUFFIX, cert_file)
    for name in names:
        if (data_dir / name).exists():
            (data_dir / name).rename(keep / name)
    # Key first, certificate last: the certificate's arrival completes the new RA.
    for name in names:
        if (staging / name).exists():
            (staging / name).rename(data_dir / name)


def ra_files_state(data_dir: Path) -> tuple[object, ...]:
    """Changes whenever a renewal (by any process) changed the RA files: a few stat calls."""
    state: list[object] = []
    for name in (RA_USAGES["signing"][3], RA_USAGES["encryption"][3]):
        try:
            info = (data_dir / name).stat()
        except FileNotFoundError:
            state.append(None)
        else:
            state.append((info.st_ino, info.st_mtime_ns, info.st_size))
    previous = data_dir / PREVIOUS_RA_DIR
    state.append(tuple(sorted(p.name for p in previous.iterdir())) if previous.is_dir() else ())
    return tuple(state)
