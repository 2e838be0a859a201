"""The CA identity: creating it once (``scep-ca init``) and loading it once per process.

The layout Microsoft NDES ships (see README, "Why GetCACert returns the RAs and the CA"):

- the CA (self-signed; keyCertSign, cRLSign, digitalSignature for OCSP) signs
  certificates, CRLs and OCSP responses;
- a signing RA (issued by the CA; digitalSignature only) signs CertReps;
- an encryption RA (issued by the CA; keyEncipherment only) decrypts requests.

That pair is what ``init`` (and ``serve``'s first start) creates. A single combined RA
(digitalSignature and keyEncipherment) stays available (``scep-ca ra create`` without
``--pair``), and a data directory that already has one keeps it: nothing replaces an RA
on upgrade. pyscep 0.0.14 needs the pair: it encrypts to the first non-CA certificate
with keyEncipherment and without digitalSignature, else to the CA, and verifies the
CertRep with the first non-CA certificate with digitalSignature, so against a combined
RA it encrypts to the CA and checks the CA-signed answer with the RA's key.

GetCACert answers a certs-only PKCS#7 with the RA(s) and the CA. certmonger needs this
shape: given a single certificate it files it as the encryption (RA) certificate,
has no trust anchor, and rejects every CertRep ("certificate verify error").
Apple's client accepts either RA layout and rejects a PKCS#7 that holds only a
self-signed CA.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from config.clock import utc_now
from config.files import check_dir, check_key, check_not_writable, make_private_dir, write_private, write_public
from config.model import RA_KEYS_IN_TOKEN
from scep_ca.asn1 import der, oids
from scep_ca.pki.keys import KeyUnavailable
from scep_ca.pki.pkcs11_keys import URI_SUFFIX, KeyRef, Token, load_key
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.keys import PrivateKey

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
RA_CERT_FILE = "ra.pem"
RA_KEY_FILE = "ra.key"
# Present only for a separate encryption RA (``scep-ca ra create --pair``).
RA_ENC_CERT_FILE = "ra-enc.pem"
RA_ENC_KEY_FILE = "ra-enc.key"
# RA certificates that decrypted requests before a renewal, one sub-directory each
# (scep_ca.pki.ra_renewal): clients cache GetCACert, so they keep decrypting until they expire.
PREVIOUS_RA_DIR = "ra-previous"
# A key in a PKCS#11 token: its RFC 7512 URI in place of the key file (scep_ca.pki.pkcs11_keys).
TOKEN_REF_FILES = tuple(name + URI_SUFFIX for name in (CA_KEY_FILE, RA_KEY_FILE, RA_ENC_KEY_FILE))


class CAError(Exception):
    """The CA cannot be created or loaded (message is safe to show; never contains key material)."""


@dataclass(frozen=True)
class CAIdentity:
    """Keys and certificates loaded once; used by every request of the process."""

    cert: x509.Certificate
    key: PrivateKey
    cert_der: bytes
    ra_cert: x509.Certificate  # signs CertReps (and decrypts too unless a separate encryption RA exists)
    ra_key: PrivateKey
    ra_cert_der: bytes
    enc_cert: x509.Certificate | None = None
    enc_key: PrivateKey | None = None
    # Decryption RAs replaced by a renewal and not yet expired, newest first: requests built
    # from a cached GetCACert are still encrypted to them.
    previous_decryption: tuple[tuple[x509.Certificate, PrivateKey], ...] = ()

    @property
    def encryption_cert(self) -> x509.Certificate:
        return self.enc_cert or self.ra_cert

    @property
    def encryption_key(self) -> PrivateKey:
        return self.enc_key or self.ra_key

    @functools.cached_property
    def fingerprint_sha256(self) -> str:
        # Every issued certificate's record carries it: computed once per identity.
        return hashlib.sha256(self.cert_der).hexdigest()

    @property
    def fingerprint_md5(self) -> str:
        """NDES's thumbprint line shows MD5 of the CA certificate."""
        return hashlib.md5(self.cert_der, usedforsecurity=False).hexdigest()

    @property
    def keys(self) -> tuple[PrivateKey, ...]:
        """Every private key of this CA: the CA's, the RA's, the encryption RA's."""
        return (
            self.key,
            self.ra_key,
            *([self.enc_key] if self.enc_key is not None else []),
            *(key for _, key in self.previous_decryption),
        )

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.key.public_key()

    @functools.cached_property
    def ca_ra_certs_der(self) -> tuple[bytes, ...]:
        """What GetCACert presents, in its order: the RA(s) first, then the CA (as NDES sends them);
        ``scep_ca.services.scep`` wraps them in the certs-only PKCS#7."""
        ras = [self.ra_cert_der]
        if self.enc_cert is not None:
            ras.append(self.enc_cert.public_bytes(serialization.Encoding.DER))
        return (*ras, self.cert_der)


def ca_exists(data_dir: Path) -> bool:
    return (data_dir / CA_CERT_FILE).exists() or _key_exists(data_dir / CA_KEY_FILE)


def _key_exists(path: Path) -> bool:
    """A key file, or the reference to a token key that stands in its place (``<key file>.pkcs11``)."""
    return path.exists() or _token_ref_path(path).exists()


def _token_ref_path(path: Path) -> Path:
    return path.with_name(path.name + URI_SUFFIX)


def _new_key(path: Path, key_size: int, passphrase: bytes | None, token: Token | None, label: str) -> PrivateKey:
    """A new key: in the token when one is configured (only its URI is written), else a 0600 file."""
    if token is not None:
        key, ref = token.generate(label, key_size)
        write_private(_token_ref_path(path), (ref.uri() + "\n").encode("ascii"))
        return key
    file_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    _write_key(path, file_key, passphrase)
    return file_key


def ra_key_token(token: Token | None) -> Token | None:
    """The token a new RA key is generated in: ``token``, unless its settings keep RA keys in
    files (``keys.pkcs11.ra_keys: files``); None: a 0600 file, as without a token.

    The one place the choice is made: every RA key (init, ``serve``'s first start, ``ra create``,
    renewal, rollover, an RA missing at load) is made by ``create_ra``, which asks this. The CA
    key, which alone issues certificates and CRLs, stays in ``token`` either way.
    """
    return token if token is not None and token.settings.ra_keys == RA_KEYS_IN_TOKEN else None


def sign_certificate(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    """``builder`` signed with sha256WithRSAEncryption by ``key`` (RFC 5280 section 4.1).

    cryptography's builder only signs with a key it holds. For any other key (a token's)
    the TBSCertificate comes from the builder signed with a throwaway RSA key (same
    signature algorithm, so the same TBS octets), and the Certificate around the
    token's signature is written with the DER helpers. Only init, rollover and RA
    creation get here.
    """
    if isinstance(key, rsa.RSAPrivateKey):
        return builder.sign(key, hashes.SHA256())
    scratch = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tbs = builder.sign(scratch, hashes.SHA256()).tbs_certificate_bytes
    signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    return x509.load_der_x509_certificate(der.signed(tbs, oids.SHA256_WITH_RSA, signature))


def key_usage(*, signing: bool, encipherment: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=False,
        key_encipherment=encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _write_key(path: Path, key: rsa.RSAPrivateKey, passphrase: bytes | None) -> None:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    # Created with 0600 from the start: chmod after write would leave a window.
    write_private(path, pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    write_public(path, cert.public_bytes(serialization.Encoding.PEM))


def _ra_subject(ca_subject: x509.Name, suffix: str) -> x509.Name:
    cns = ca_subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    base = str(cns[0].value) if cns else "scep-ca"
    others = [a for a in ca_subject if a.oid != NameOID.COMMON_NAME]
    return x509.Name([*others, x509.NameAttribute(NameOID.COMMON_NAME, f"{base} {suffix}")])


RA_USAGES = {
    # usage -> (subject suffix, digitalSignature, keyEncipherment, cert file, key file)
    "combined": ("SCEP RA", True, True, RA_CERT_FILE, RA_KEY_FILE),
    "signing": ("SCEP RA signing", True, False, RA_CERT_FILE, RA_KEY_FILE),
    "encryption": ("SCEP RA encryption", False, True, RA_ENC_CERT_FILE, RA_ENC_KEY_FILE),
}


def create_ra(
    data_dir: Path,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    *,
    key_size: int,
    passphrase: bytes | None,
    now: dt.datetime | None = None,
    usage: str = "combined",
    token: Token | None = None,
    validity_days: int | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """An RA certificate issued by the CA: combined (decrypts requests and signs CertReps), or one
    half of a signing-only / encryption-only pair, which Apple's client also accepts.

    Valid for ``validity_days`` (``ra.validity_days``), never past the CA's own notAfter
    (RFC 5280 section 6.1.3 would reject it); None: until the CA expires."""
    suffix, signing, encipherment, cert_file, key_file = RA_USAGES[usage]
    now = now or utc_now()
    not_after = ca_cert.not_valid_after_utc
    if validity_days is not None:
        not_after = min(not_after, now + dt.timedelta(days=validity_days))
    subject = _ra_subject(ca_cert.subject, suffix)
    # CKA_LABEL: the subject as RFC 4514 text, like the CA's ("<subject> CA"); pkcs11-tool shows it.
    key = _new_key(data_dir / key_file, key_size, passphrase, ra_key_token(token), subject.rfc4514_string())
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = sign_certificate(
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(signing=signing, encipherment=encipherment, ca=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False),
        ca_key,
    )
    _write_cert(data_dir / cert_file, cert)
    return cert, key


def replace_ra(
    data_dir: Path,
    passphrase: bytes | None,
    *,
    pair: bool,
    token: Token | None = None,
    validity_days: int | None = None,
) -> CAIdentity:
    """``scep-ca ra create``: retire the current RA files and issue a new combined RA or a pair.

    Retired files move to ``retired/<UTC time>/`` (kept for audit; never deleted) and no longer
    decrypt (unlike a renewal, ``scep_ca.pki.ra_renewal``). Running servers switch to the new
    RA at their next check of the RA files (``scep_ca.server.ra_reload``).
    """
    identity = load_ca(data_dir, passphrase, token)
    retired = data_dir / "retired" / utc_now().strftime("%Y%m%dT%H%M%S%fZ")
    make_private_dir(retired)
    ra_files = (RA_CERT_FILE, RA_ENC_CERT_FILE, RA_KEY_FILE, RA_ENC_KEY_FILE)
    # Only the RA's token references: the CA's (ca.key.pkcs11) stays, or the CA is lost.
    for name in (*ra_files, *(_token_ref_path(Path(key)).name for key in (RA_KEY_FILE, RA_ENC_KEY_FILE))):
        if (data_dir / name).exists():
            (data_dir / name).rename(retired / name)
    return _identity_with_new_ra(
        data_dir,
        identity.cert,
        identity.key,
        passphrase=passphrase,
        now=None,
        pair=pair,
        token=token,
        validity_days=validity_days,
    )


def create_ca(
    data_dir: Path,
    *,
    subject: str,
    key_size: int,
    validity_days: int,
    passphrase: bytes | None,
    now: dt.datetime | None = None,
    ra_pair: bool = True,
    token: Token | None = None,
    ra_validity_days: int | None = None,
) -> CAIdentity:
    """Create the CA key and self-signed certificate, and the RA pair (or one combined RA); refuse to overwrite.

    With ``token`` the keys are generated inside it and only certificates (and the keys'
    PKCS#11 URIs) are written to ``data_dir``.
    """
    if ca_exists(data_dir):
        raise CAError(f"a CA already exists in {data_dir}; refusing to overwrite it")
    make_private_dir(data_dir)
    now = now or utc_now()
    name = parse_dn(subject)
    key = _new_key(data_dir / CA_KEY_FILE, key_size, passphrase, token, f"{name.rfc4514_string()} CA")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = sign_certificate(
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # digitalSignature: the CA signs OCSP responses itself.
        .add_extension(key_usage(signing=True, encipherment=False, ca=True), critical=True)
        .add_extension(ski, critical=False),
        key,
    )
    _write_cert(data_dir / CA_CERT_FILE, cert)
    return _identity_with_new_ra(
        data_dir, cert, key, passphrase=passphrase, now=now, pair=ra_pair, token=token, validity_days=ra_validity_days
    )


def _identity_with_new_ra(
    data_dir: Path,
    cert: x509.Certificate,
    key: PrivateKey,
    *,
    passphrase: bytes | None,
    now: dt.datetime | None,
    pair: bool,
    token: Token | None,
    validity_days: int | None = None,
) -> CAIdentity:
    """Issue the RA(s) under a CA: the NDES pair, or one combined RA."""
    make = functools.partial(
        create_ra,
        data_dir,
        cert,
        key,
        key_size=key.key_size,
        passphrase=passphrase,
        now=now,
        token=token,
        validity_days=validity_days,
    )
    if not pair:
        ra_cert, ra_key = make()
        return _identity(cert, key, ra_cert, ra_key)
    ra_cert, ra_key = make(usage="signing")
    enc_cert, enc_key = make(usage="encryption")
    return dataclasses.replace(_identity(cert, key, ra_cert, ra_key), enc_cert=enc_cert, enc_key=enc_key)


def _identity(cert: x509.Certificate, key: PrivateKey, ra_cert: x509.Certificate, ra_key: PrivateKey) -> CAIdentity:
    der = serialization.Encoding.DER
    return CAIdentity(cert, key, cert.public_bytes(der), ra_cert, ra_key, ra_cert.public_bytes(der))


def _load_cert(path: Path) -> x509.Certificate:
    check_not_writable(path)
    return x509.load_pem_x509_certificate(path.read_bytes())


def _load_key(
    path: Path, passphrase: bytes | None, cert: x509.Certificate, what: str, token: Token | None = None
) -> PrivateKey:
    ref_path = _token_ref_path(path)
    if ref_path.exists():
        # Whoever could rewrite the reference would choose which token key signs.
        check_key(ref_path)
        return _load_token_key(ref_path, cert, what, token)
    check_key(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=passphrase)
    except TypeError as exc:
        raise CAError(f"the {what} key is encrypted: set the passphrase environment variable") from exc
    except ValueError as exc:
        raise CAError(f"the {what} key cannot be loaded (wrong passphrase or corrupt file)") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CAError(f"the {what} key is not an RSA key")
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey) or key.public_key().public_numbers() != public.public_numbers():
        raise CAError(f"the {what} key does not match the {what} certificate")
    return key


def _load_token_key(ref_path: Path, cert: x509.Certificate, what: str, token: Token | None) -> PrivateKey:
    """The token key named in ``ref_path``; the token is not opened here (that happens after fork)."""
    if token is None:
        raise CAError(f"the {what} key is in a PKCS#11 token ({ref_path}): set keys.pkcs11 in the configuration")
    try:
        ref = KeyRef.parse(ref_path.read_text())
    except ValueError as exc:
        raise CAError(f"{ref_path} is not a PKCS#11 key reference: {exc}") from None
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise CAError(f"the {what} certificate does not hold an RSA key")
    try:
        return load_key(token, ref, public)
    except KeyUnavailable as exc:
        raise CAError(f"the {what} key: {exc}") from None


def load_ca(
    data_dir: Path, passphrase: bytes | None, token: Token | None = None, *, ra_validity_days: int | None = None
) -> CAIdentity:
    """Load the CA and RA once per process (cryptography validates an RSA key in ~27 ms per load).

    A data directory without an RA (made before RAs existed, or after ``ra.*`` were removed
    to replace it) gets the default pair issued by the CA (only the signing half when an
    encryption RA is there), valid for ``ra_validity_days``. An existing RA, combined or not,
    is loaded as it is, with the unexpired decryption RAs that renewals replaced.
    """
    cert_path, key_path = data_dir / CA_CERT_FILE, data_dir / CA_KEY_FILE
    if not cert_path.exists() or not _key_exists(key_path):
        raise CAError(f"no CA in {data_dir}: run `scep-ca init` first")
    # Before anything is read: whoever can write here can swap in their own RA or CA.
    check_dir(data_dir)
    cert = _load_cert(cert_path)
    key = _load_key(key_path, passphrase, cert, "CA", token)
    ra_cert_path, ra_key_path = data_dir / RA_CERT_FILE, data_dir / RA_KEY_FILE
    enc_cert_path = data_dir / RA_ENC_CERT_FILE
    if not ra_cert_path.exists() and not _key_exists(ra_key_path):
        if not enc_cert_path.exists():
            return _identity_with_new_ra(
                data_dir,
                cert,
                key,
                passphrase=passphrase,
                now=None,
                pair=True,
                token=token,
                validity_days=ra_validity_days,
            )
        ra_cert, ra_key = create_ra(
            data_dir,
            cert,
            key,
            key_size=key.key_size,
            passphrase=passphrase,
            usage="signing",
            token=token,
            validity_days=ra_validity_days,
        )
    else:
        ra_cert = _load_cert(ra_cert_path)
        ra_key = _load_key(ra_key_path, passphrase, ra_cert, "RA", token)
    identity = dataclasses.replace(
        _identity(cert, key, ra_cert, ra_key),
        previous_decryption=_load_previous_decryption(data_dir / PREVIOUS_RA_DIR, passphrase, token),
    )
    if not enc_cert_path.exists():
        return identity
    enc_cert = _load_cert(enc_cert_path)
    enc_key = _load_key(data_dir / RA_ENC_KEY_FILE, passphrase, enc_cert, "encryption RA", token)
    return dataclasses.replace(identity, enc_cert=enc_cert, enc_key=enc_key)


def _load_previous_decryption(
    root: Path, passphrase: bytes | None, token: Token | None
) -> tuple[tuple[x509.Certificate, PrivateKey], ...]:
    """The unexpired RAs in ``ra-previous/<UTC time>/`` (an encryption or a combined RA each), newest first."""
    if not root.is_dir():
        return ()
    check_dir(root)
    now = utc_now()
    found = []
    for sub in sorted(root.iterdir(), reverse=True):
        for cert_file, key_file in ((RA_ENC_CERT_FILE, RA_ENC_KEY_FILE), (RA_CERT_FILE, RA_KEY_FILE)):
            if (sub / cert_file).exists():
                cert = _load_cert(sub / cert_file)
                if cert.not_valid_after_utc > now:
                    found.append((cert, _load_key(sub / key_file, passphrase, cert, "previous RA", token)))
                break
    return tuple(found)
