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
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.verify import Head

KIND = "scep-ca-audit-checkpoint"


class CheckpointError(Exception):
    """Not a checkpoint, or its signature does not verify (the message says which)."""


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def make_checkpoint(heads: Mapping[str, Head], at: datetime, key: Ed25519PrivateKey) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": KIND,
        "time": at.astimezone(UTC).isoformat(timespec="seconds"),
        "heads": {w: {"seq": h.seq, "mac": h.mac} for w, h in sorted(heads.items())},
        "key": key_id(key.public_key()),
    }
    body["signature"] = base64.b64encode(key.sign(_canonical(body))).decode("ascii")
    return body


def read_checkpoint(text: str, public: Ed25519PublicKey) -> dict[str, Head]:
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
        public.verify(signature, _canonical(body))
    except InvalidSignature as exc:
        raise CheckpointError("the checkpoint's signature does not verify under the checkpoint key") from exc
    return heads
