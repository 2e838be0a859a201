"""Handing out one challenge: generate, hash, store under NDES's PasswordMax rule."""

from __future__ import annotations

import datetime as dt

from challenge.codes import generate_challenge, hash_challenge
from config.clock import utc_now
from config.model import ChallengeConfig
from store.base import AuditSeal, ChallengeAdd, ChallengeStore


async def issue_challenge(
    store: ChallengeStore,
    cfg: ChallengeConfig,
    integration_id: str,
    now: dt.datetime | None = None,
    *,
    audit: AuditSeal | None = None,
) -> str | None:
    """A fresh one-time challenge for the integration, or None when its cache is full.
    ``audit``: the "challenge issued" event, committed with the challenge (never its value)."""
    now = now or utc_now()
    password = generate_challenge(cfg.length_bytes)
    added = await store.add_challenge(
        ChallengeAdd(
            integration_id=integration_id,
            challenge_hash=hash_challenge(password),
            now=now,
            expires_at=now + dt.timedelta(minutes=cfg.validity_minutes),
            max_unused=cfg.max_unused,
        ),
        audit=audit,
    )
    return password if added else None
