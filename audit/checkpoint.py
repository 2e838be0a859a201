"""Signed checkpoints: the head of every chain at a moment, signed by the checkpoint key.

A checkpoint is one JSON object::

    {"type": "scep-ca-audit-checkpoint", "time": "...", "heads": {"<writer>": {"seq": N, "mac": "..."}},
     "key": "<sha256 of the signing public key>", "signature": "<base64 Ed25519 over the canonical JSON
     of the other fields>"}

Shipped off the host (a log line, a file in ``audit.checkpoint_dir``), it pins the log as it
was: whoever later rewrites the database, even with the audit key, cannot make the chains
reach the same heads with other content, nor delete a chain's tail, without ``audit verify
--checkpoint`` saying so.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.verify import Head

KIND = "scep-ca-audit-checkpoint"

CheckpointPublicKey = Ed25519PublicKey | rsa.RSAPublicKey


class CheckpointSigner(Protocol):
    """The checkpoint key: Ed25519 in a file (``Ed25519PrivateKey`` is one), or RSA in the
    token (``audit.token_keys``), signing RSASSA-PKCS1-v1_5 with SHA-256."""

    def sign(self, data: bytes) -> bytes: ...

    def public_key(self) -> CheckpointPublicKey: ...


class CheckpointError(Exception):
    """Not a checkpoint, or its signature does not verify (the message says which)."""


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def key_id(public: CheckpointPublicKey) -> str:
    """SHA-256 of the public key's SubjectPublicKeyInfo."""
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def make_checkpoint(heads: Mapping[str, Head], at: datetime, key: CheckpointSigner) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": KIND,
        "time": at.astimezone(UTC).isoformat(timespec="seconds"),
        "heads": {w: {"seq": h.seq, "mac": h.mac} for w, h in sorted(heads.items())},
        "key": key_id(key.public_key()),
    }
    body["signature"] = base64.b64encode(key.sign(_canonical(body))).decode("ascii")
    return body


def read_checkpoint(text: str, public: CheckpointPublicKey) -> dict[str, Head]:
    """The heads of a checkpoint whose signature verifies under ``public``."""
    try:
        body = json.loads(text)
        if not isinstance(body, dict) or body.get("type") != KIND:
            raise CheckpointError("not an audit checkpoint")
        signature = base64.b64decode(body.pop("signature"), validate=True)
        heads = {str(w): Head(int(h["seq"]), str(h["mac"])) for w, h in body["heads"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"not a readable audit checkpoint: {exc}") from exc
    try:
        if isinstance(public, Ed25519PublicKey):
            public.verify(signature, _canonical(body))
        else:
            public.verify(signature, _canonical(body), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as exc:
        raise CheckpointError("the checkpoint's signature does not verify under the checkpoint key") from exc
    return heads
