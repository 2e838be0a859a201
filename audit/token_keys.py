"""The audit keys inside the PKCS#11 token, when ``keys.pkcs11`` is set (README "Audit log").

- The MAC key: a generic secret (CKK_GENERIC_SECRET, 256 bits, CKA_SENSITIVE, not
  CKA_EXTRACTABLE) labelled ``scep-ca audit MAC``, used with CKM_SHA256_HMAC: HMAC-SHA256 as
  with the file key, but the key never leaves the token. Created on first use. Worker
  processes starting at once may each create one; every process then uses the same one of
  them, the one whose HMAC of a fixed text is smallest, so all chains share one key.
- The checkpoint key: an RSA key pair generated in the token (``Token.generate``), referenced
  by ``audit-checkpoint.key.pkcs11`` (an RFC 7512 URI, like the CA's) with its public half in
  ``audit-checkpoint.pub``; checkpoints are signed RSASSA-PKCS1-v1_5 with SHA-256.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from audit.keys import CHECKPOINT_PUBLIC_FILE, AuditKeyError
from config.files import check_not_writable, create_private_once, make_private_dir, write_public
from scep_ca.pki.pkcs11_keys import URI_SUFFIX, KeyRef, Token, load_key

MAC_LABEL = "scep-ca audit MAC"
CHECKPOINT_LABEL = "scep-ca audit checkpoint"
CHECKPOINT_REF_FILE = "audit-checkpoint.key" + URI_SUFFIX
_KEY_CHECK = b"scep-ca audit key check"


class TokenMacKey:
    """HMAC-SHA256 (CKM_SHA256_HMAC) under the token's audit MAC key."""

    def __init__(self, token: Token, *, create: bool = True) -> None:
        self._token = token
        self._create = create
        self._session: Any = None
        self._key: Any = None

    def mac(self, data: bytes) -> bytes:
        return self._token.run(lambda session: bytes(self._secret(session).sign(data, mechanism=Mechanism.SHA256_HMAC)))

    def _secret(self, session: Any) -> Any:
        # Looked up once per session (a lost session is replaced by Token.run).
        if session is not self._session:
            self._key, self._session = _find_or_create(session, self._create), session
        return self._key


def _find_or_create(session: Any, create: bool) -> Any:
    keys = list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: MAC_LABEL}))
    if not keys and not create:
        raise AuditKeyError(f"no audit MAC key ({MAC_LABEL!r}) in the token")
    if not keys:
        session.generate_key(
            KeyType.GENERIC_SECRET,
            256,
            label=MAC_LABEL,
            store=True,
            template={
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.SIGN: True,
                Attribute.VERIFY: True,
                Attribute.PRIVATE: True,
            },
        )
        keys = list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: MAC_LABEL}))
    # The same choice in every process, whichever created which.
    return min(keys, key=lambda k: bytes(k.sign(_KEY_CHECK, mechanism=Mechanism.SHA256_HMAC)))


class TokenCheckpointKey:
    """Signs checkpoints with the RSA key the token holds (``audit.checkpoint``'s signer)."""

    def __init__(self, key: Any, public: rsa.RSAPublicKey) -> None:
        self._key = key
        self._public = public

    def sign(self, data: bytes) -> bytes:
        return bytes(self._key.sign(data, padding.PKCS1v15(), hashes.SHA256()))

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public


def load_token_checkpoint_key(data_dir: Path, token: Token) -> TokenCheckpointKey:
    """The checkpoint key of the token, generated there on first use."""
    ref_path = data_dir / CHECKPOINT_REF_FILE
    public_path = data_dir / CHECKPOINT_PUBLIC_FILE
    if not ref_path.exists():
        make_private_dir(data_dir)
        key, ref = token.generate(CHECKPOINT_LABEL, 2048)
        pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        # Of two processes generating at once, the first reference written is the key used
        # (the other pair stays unused in the token); its public half follows it.
        create_private_once(ref_path, (ref.uri() + "\n").encode("ascii"))
        with contextlib.suppress(FileExistsError):
            write_public(public_path, pem)
    check_not_writable(ref_path)
    try:
        ref = KeyRef.parse(ref_path.read_text(encoding="ascii"))
        public = serialization.load_pem_public_key(public_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise AuditKeyError(f"{ref_path}: unusable audit checkpoint key reference ({exc})") from exc
    if not isinstance(public, rsa.RSAPublicKey):
        raise AuditKeyError(f"{public_path}: not an RSA public key")
    return TokenCheckpointKey(load_key(token, ref, public), public)
