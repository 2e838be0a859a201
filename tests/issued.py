"""A certificate issued by the server's own issuer, as a cryptography object, for the tests.

The server issues through ``scep_ca.pki.issue.Issuer`` (DER); tests that need a certificate
with the production profile but no SCEP round trip use this.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.issue import Issuer, Profile


def issue_certificate(
    ca: CAIdentity,
    *,
    subject: x509.Name,
    public_key: rsa.RSAPublicKey,
    sans: Sequence[x509.GeneralName],
    profile: Profile,
    serial: int,
    now: dt.datetime,
) -> x509.Certificate:
    issued = Issuer(ca, profile).issue(subject=subject, public_key=public_key, sans=sans, serial=serial, now=now)
    return x509.load_der_x509_certificate(issued.der)
