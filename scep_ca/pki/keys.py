"""Where a private key lives is known only here and in ``scep_ca.pki.pkcs11_keys``.

A key loaded from a file is a ``scep_ca.protocol.keys.PrivateKey`` as it is; a key inside
a PKCS#11 token is one too and is also a ``HeldKey``: it can be out of reach, which
``check_keys`` turns into ``KeyUnavailable`` (HTTP 503) before a request uses it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from scep_ca.protocol.keys import PrivateKey


@runtime_checkable
class HeldKey(Protocol):
    """A key held by a device that can be out of reach (a token): ``check`` raises ``KeyUnavailable`` then."""

    def check(self) -> None: ...

    def describe(self) -> str: ...


class KeyUnavailable(Exception):
    """The key exists but cannot be used right now (token removed, HSM restarted, session lost).

    Deliberately not a ``ValueError``: a decryption failure (``ValueError``) is the
    client's fault (BadMessageCheck), this one is ours and temporary (HTTP 503). The
    message never holds a PIN or key material.
    """


def check_keys(keys: tuple[PrivateKey | None, ...]) -> None:
    """Raise ``KeyUnavailable`` for the first held key that cannot be used now (file keys always can)."""
    for key in keys:
        if isinstance(key, HeldKey):
            key.check()


def describe_key(key: PrivateKey, path: str) -> str:
    """Where a key lives, for ``scep-ca keys list``: a token reference, or the file ``path``."""
    return key.describe() if isinstance(key, HeldKey) else f"file {path}"
