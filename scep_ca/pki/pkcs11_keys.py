"""RSA keys inside a PKCS#11 token (README "Keys in an HSM"), through python-pkcs11.

A ``Pkcs11Key`` implements ``scep_ca.protocol.keys.PrivateKey`` with signatures by
CKM_SHA1/SHA256/SHA384/SHA512_RSA_PKCS (PKCS#1 v1.5, RFC 8017 section 8.2), and
``RawRsaKey`` with CKM_RSA_X_509 (RSADP): the key transport's padding, PKCS#1 v1.5 or
OAEP with any hash, is checked outside the token by ``scep_ca.protocol.key_transport``.
The token's own CKM_RSA_PKCS decryption would answer bad padding with an error, which
takes another path and time than good padding (SoftHSM: CKR_GENERAL_ERROR, about 0.13 ms
slower): a Bleichenbacher oracle. With raw RSA every ciphertext takes one C_Decrypt that
succeeds. The private key never leaves the token: it is generated there (or imported
once) with CKA_SENSITIVE and without CKA_EXTRACTABLE.

Sessions and fork: a PKCS#11 library's state does not survive ``fork()``, so a
``Token`` opens the library and its session lazily, in the process that first uses a
key; the supervisor of ``scep-ca serve`` never does (it checks the token in a forked
child that exits, ``check_in_child``). A session that is lost at run time (token
removed, HSM restarted, C_Finalize underneath) is dropped; the operation is retried once
on a fresh session, and if that fails too the caller gets ``KeyUnavailable`` (HTTP 503)
and the next operation tries again. A token that is missing when a session is opened may
come back (reinserted, HSM rebooted, token directory restored), but SoftHSM and most modules
enumerate slots only in C_Initialize: so the library is re-initialised then, at most once
every ``reinit_interval`` seconds (every re-initialisation invalidates the process's other
sessions on that library, and a busy server must not do it per request).

The data directory holds, next to each certificate, a ``*.key.pkcs11`` file with an
RFC 7512 PKCS#11 URI naming the token and the key (CKA_ID = SHA-1 of the public key,
the certificate's subjectKeyIdentifier; CKA_LABEL); never the PIN.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pkcs11
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.util.rsa import decode_rsa_private_key

from config.model import Pkcs11Config
from scep_ca.pki.keys import KeyUnavailable
from scep_ca.protocol.keys import PrivateKey

T = TypeVar("T")

# Raw RSA refuses only a ciphertext of the wrong length or not below the modulus: public facts,
# checked before the call (scep_ca.protocol.key_transport), so these mean a token stricter than that.
_OUT_OF_RANGE: tuple[type[Exception], ...] = (
    p11e.EncryptedDataInvalid,
    p11e.EncryptedDataLenRange,
    p11e.DataInvalid,
    p11e.DataLenRange,
)
_SIGN_MECHANISMS = {
    "sha1": Mechanism.SHA1_RSA_PKCS,
    "sha256": Mechanism.SHA256_RSA_PKCS,
    "sha384": Mechanism.SHA384_RSA_PKCS,
    "sha512": Mechanism.SHA512_RSA_PKCS,
}
URI_SUFFIX = ".pkcs11"
_TRY_AGAIN = "the key token is unavailable"


@dataclass(frozen=True)
class TokenSettings:
    """``keys.pkcs11`` with the PIN resolved (from ``pin_env`` or ``pin_file``)."""

    module: str
    token_label: str
    pin: str = field(repr=False)
    reinit_interval: float = Pkcs11Config.reinit_interval_seconds
    # Where new RA keys go (config.model.RA_KEY_PLACES); ``scep_ca.pki.ca.ra_key_token`` reads it.
    ra_keys: str = Pkcs11Config.ra_keys


@dataclass(frozen=True)
class KeyRef:
    """Which token object a certificate's key is: RFC 7512 ``pkcs11:token=..;id=..;object=..;type=private``."""

    token_label: str
    key_id: bytes
    label: str

    def uri(self) -> str:
        quote = _quote
        key_id = "".join(f"%{b:02x}" for b in self.key_id)
        return f"pkcs11:token={quote(self.token_label)};id={key_id};object={quote(self.label)};type=private"

    @classmethod
    def parse(cls, text: str) -> KeyRef:
        text = text.strip()
        if not text.startswith("pkcs11:"):
            raise ValueError("not a pkcs11: URI")
        attrs = dict(part.split("=", 1) for part in text[len("pkcs11:") :].split(";") if "=" in part)
        try:
            return cls(
                urllib.parse.unquote(attrs["token"]),
                urllib.parse.unquote_to_bytes(attrs["id"]),
                urllib.parse.unquote(attrs["object"]),
            )
        except KeyError as exc:
            raise ValueError(f"the pkcs11: URI has no {exc.args[0]}") from None


def _quote(value: str) -> str:
    """Percent-encode a URI path attribute value (RFC 7512 section 2.3: ';' and '%' and non-ASCII)."""
    return urllib.parse.quote(value, safe="")


class Token:
    """One token of one PKCS#11 module, and this process's session on it.

    Used from the event loop and from worker threads (the CRL is signed in a thread), so
    one lock serialises the session, as PKCS#11 requires for a single session.
    """

    def __init__(self, settings: TokenSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._session: Any = None
        self._pid = 0
        self._keys: dict[bytes, Any] = {}
        self._clock = clock
        self._reinitialised_at = -math.inf

    def _open(self) -> Any:
        if self._session is not None and self._pid == os.getpid():
            return self._session
        try:
            lib = pkcs11.lib(self.settings.module)
        except (OSError, RuntimeError) as exc:
            # python-pkcs11 raises RuntimeError for a file that is not a PKCS#11 module.
            raise KeyUnavailable(f"cannot load the PKCS#11 module {self.settings.module}") from exc
        try:
            token = self._find_token(lib)
            try:
                session = token.open(user_pin=self.settings.pin, rw=True)
            except p11e.UserAlreadyLoggedIn:
                # Login state belongs to the process (PKCS#11 section 5.6), not to the session.
                session = token.open(rw=True)
        except p11e.NoSuchToken as exc:
            raise KeyUnavailable(f"no PKCS#11 token labelled {self.settings.token_label!r}") from exc
        except (p11e.PinIncorrect, p11e.PinInvalid, p11e.PinLenRange) as exc:
            raise KeyUnavailable(f"the PIN for PKCS#11 token {self.settings.token_label!r} is wrong") from exc
        except p11e.PinLocked as exc:
            raise KeyUnavailable(f"the PIN of PKCS#11 token {self.settings.token_label!r} is locked") from exc
        except p11e.PKCS11Error as exc:
            raise KeyUnavailable(f"{_TRY_AGAIN}: {type(exc).__name__}") from exc
        self._session, self._pid, self._keys = session, os.getpid(), {}
        return session

    def _find_token(self, lib: Any) -> Any:
        """The token by label; when it is missing, once more after re-initialising the library (rate-limited)."""
        try:
            return lib.get_token(token_label=self.settings.token_label)
        except p11e.NoSuchToken:
            now = self._clock()
            if now - self._reinitialised_at < self.settings.reinit_interval:
                raise
            self._reinitialised_at = now
            lib.reinitialize()
            return lib.get_token(token_label=self.settings.token_label)

    def _drop(self) -> None:
        # Never close a session inherited across fork or already invalid: just forget it.
        self._session, self._keys = None, {}
        if self._pid == os.getpid():
            with contextlib.suppress(Exception):
                pkcs11.lib(self.settings.module).reinitialize()

    def run(self, operation: Callable[[Any], T]) -> T:
        """``operation(session)``, on a fresh session once more if the first one was lost."""
        with self._lock:
            for attempt in (1, 2):
                session = self._open()
                try:
                    return operation(session)
                except p11e.PKCS11Error as exc:
                    # Session or library state lost (SessionHandleInvalid, DeviceRemoved,
                    # TokenNotPresent, CKR_CRYPTOKI_NOT_INITIALIZED, ...): none of these is the
                    # client's doing (bad ciphertexts are ValueError by now), so reopen once.
                    self._drop()
                    if attempt == 2:
                        raise KeyUnavailable(f"{_TRY_AGAIN}: {type(exc).__name__}") from exc
            raise AssertionError("unreachable")

    def private_key(self, session: Any, key_id: bytes) -> Any:
        """The private key object with CKA_ID ``key_id`` in ``session`` (looked up once per session)."""
        key = self._keys.get(key_id)
        if key is None:
            try:
                key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
            except p11e.NoSuchKey as exc:
                raise KeyUnavailable(f"no private key with id {key_id.hex()} in the token") from exc
            self._keys[key_id] = key
        return key

    def generate(self, label: str, key_size: int) -> tuple[Pkcs11Key, KeyRef]:
        """A new RSA key pair inside the token: CKA_TOKEN, CKA_SENSITIVE, not CKA_EXTRACTABLE."""

        def generate(session: Any) -> tuple[Any, Any]:
            temp_id = os.urandom(20)
            public, private = session.generate_keypair(
                KeyType.RSA,
                key_size,
                id=temp_id,
                label=label,
                store=True,
                public_template={Attribute.VERIFY: True, Attribute.ENCRYPT: True},
                private_template={
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.SIGN: True,
                    Attribute.DECRYPT: True,
                    Attribute.PRIVATE: True,
                },
            )
            return public, private

        public_obj, private_obj = self.run(generate)
        public = _public_key(private_obj)
        key_id = subject_key_id(public)

        def set_id(session: Any) -> None:
            public_obj[Attribute.ID] = key_id
            private_obj[Attribute.ID] = key_id

        self.run(set_id)
        ref = KeyRef(self.settings.token_label, key_id, label)
        return Pkcs11Key(self, ref, public), ref

    def import_key(self, key: rsa.RSAPrivateKey, label: str) -> tuple[Pkcs11Key, KeyRef]:
        """Copy a file key into the token (sensitive, not extractable from then on)."""
        pkcs1 = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        public = key.public_key()
        key_id = subject_key_id(public)
        attrs = decode_rsa_private_key(pkcs1)
        attrs.update(
            {
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.SIGN: True,
                Attribute.DECRYPT: True,
                Attribute.ID: key_id,
                Attribute.LABEL: label,
            }
        )
        self.run(lambda session: session.create_object(attrs))
        ref = KeyRef(self.settings.token_label, key_id, label)
        return Pkcs11Key(self, ref, public), ref


def subject_key_id(public: rsa.RSAPublicKey) -> bytes:
    """SHA-1 of the subjectPublicKey bits (RFC 5280 section 4.2.1.2 method 1): the certificate's SKI."""
    pkcs1 = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return hashlib.sha1(pkcs1).digest()


def _public_key(private_obj: Any) -> rsa.RSAPublicKey:
    modulus = int.from_bytes(private_obj[Attribute.MODULUS], "big")
    exponent = int.from_bytes(private_obj[Attribute.PUBLIC_EXPONENT], "big")
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


class Pkcs11Key:
    """A private key in a token, usable where cryptography's ``rsa.RSAPrivateKey`` is (``PrivateKey``)."""

    def __init__(self, token: Token, ref: KeyRef, public: rsa.RSAPublicKey) -> None:
        self.token = token
        self.ref = ref
        self._public = public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def sign(self, data: bytes, padding: padding.AsymmetricPadding, algorithm: hashes.HashAlgorithm) -> bytes:
        if padding.name != "EMSA-PKCS1-v1_5" or algorithm.name not in _SIGN_MECHANISMS:
            raise ValueError(f"unsupported signature scheme {padding.name} with {algorithm.name}")
        mechanism = _SIGN_MECHANISMS[algorithm.name]
        key_id = self.ref.key_id
        return self.token.run(lambda s: bytes(self.token.private_key(s, key_id).sign(data, mechanism=mechanism)))

    def raw_decrypt(self, ciphertext: bytes) -> bytes:
        """RSADP in the token (CKM_RSA_X_509, RFC 8017 section 5.1.2): the same single call for every
        ciphertext in range, whatever padding it hides; k octets."""
        key_id = self.ref.key_id

        def decrypt(session: Any) -> bytes:
            try:
                return bytes(self.token.private_key(session, key_id).decrypt(ciphertext, mechanism=Mechanism.RSA_X_509))
            except _OUT_OF_RANGE as exc:
                raise ValueError("ciphertext out of range") from exc

        return self.token.run(decrypt).rjust((self.key_size + 7) // 8, b"\0")

    def check(self) -> None:
        """Raise ``KeyUnavailable`` unless this key can be used now; ``CAError``-worthy mismatch as ``KeyUnavailable``.

        Reads CKA_MODULUS from the token (a call that fails on a lost session), and
        compares it with the certificate's key.
        """
        in_token = self.token.run(lambda s: _public_key(self.token.private_key(s, self.ref.key_id)))
        if in_token.public_numbers() != self._public.public_numbers():
            raise KeyUnavailable(f"the token key {self.ref.label!r} does not match its certificate")

    def describe(self) -> str:
        return f"token {self.ref.token_label} ({self.ref.uri()})"


def load_key(token: Token, ref: KeyRef, public: rsa.RSAPublicKey) -> PrivateKey:
    """The token key ``ref`` for a certificate's ``public`` key; opens nothing (see the module docstring)."""
    if ref.token_label != token.settings.token_label:
        raise KeyUnavailable(
            f"the key is in token {ref.token_label!r}, but keys.pkcs11.token_label is {token.settings.token_label!r}"
        )
    return Pkcs11Key(token, ref, public)


def check_in_child(keys: Iterable[PrivateKey | None]) -> str | None:
    """Check every token key in a forked child (the caller stays free of PKCS#11 state): None or the problem."""
    token_keys = [k for k in keys if isinstance(k, Pkcs11Key)]
    if not token_keys:
        return None

    def check() -> None:
        for key in token_keys:
            key.check()

    return in_child(check)


def in_child(operation: Callable[[], object]) -> str | None:
    """Run ``operation`` in a forked child that exits; None, or its error as one line.

    The supervisor of ``scep-ca serve`` forks workers, so it must not hold PKCS#11 state
    itself: checking the token and creating keys at first start happen in a child.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        problem = ""
        try:
            operation()
        except KeyUnavailable as exc:
            problem = str(exc)
        except BaseException as exc:
            problem = f"cannot use the PKCS#11 token: {type(exc).__name__}: {exc}"
        os.write(write_fd, problem.encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        message = reader.read().decode()
    os.waitpid(pid, 0)
    return message or None
