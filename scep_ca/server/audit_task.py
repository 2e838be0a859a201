"""The audit log's part in the server's life: start and stop events, periodic checkpoints.

Each checkpoint (``audit.checkpoint``) is logged as one line, ``audit checkpoint {json}``, so
that whatever ships the server's log off the host carries it, and is written to
``audit.checkpoint_dir`` when that is set. One every ``audit.checkpoint_interval_seconds``
and one at stop, after the stop event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from audit.events import Event
from audit.service import AuditLog, Draft
from config.clock import Clock, utc_now
from config.files import make_private_dir, write_public
from config.model import Config
from store.base import StoreError

log = logging.getLogger(__name__)


def config_digest(config: Config) -> str:
    """SHA-256 of the effective configuration: tells two runs' settings apart, reveals none."""
    return hashlib.sha256(repr(config).encode("utf-8")).hexdigest()


def version() -> str:
    try:
        return importlib.metadata.version("scep-ca")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


async def publish_checkpoint(audit: AuditLog, directory: Path | None, worker: int = 0) -> dict[str, Any]:
    """Make a checkpoint, log it as one line, write it into ``directory`` if given, and
    record that it was made."""
    checkpoint = await audit.checkpoint()
    text = json.dumps(checkpoint, sort_keys=True, separators=(",", ":"))
    log.info("audit checkpoint %s", text)
    details: dict[str, object] = {"chains": len(checkpoint["heads"])}
    if directory is not None:
        make_private_dir(directory)
        stamp = checkpoint["time"].replace(":", "").replace("+0000", "Z")
        path = directory / f"checkpoint-{stamp}-w{worker}.json"
        with contextlib.suppress(FileExistsError):  # the same second twice: the first stands
            write_public(path, (text + "\n").encode("utf-8"))
        details["file"] = str(path)
    await audit.append(Draft(Event.CHECKPOINT, "audit", details))
    return checkpoint


class LastCheckpoint:
    """When this worker last published a checkpoint, as a Unix time (the metric
    ``scep_ca_audit_last_checkpoint_timestamp_seconds``); None before its first."""

    def __init__(self, clock: Clock = utc_now) -> None:
        self._clock = clock
        self._at: float | None = None

    def published(self) -> None:
        self._at = self._clock().timestamp()

    def __call__(self) -> float | None:
        return self._at


def audit_context(
    audit: AuditLog, config: Config, worker: int, last: LastCheckpoint | None = None
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    """A cleanup context for the app, after the store's (so it stops before the store closes);
    ``last`` is told of every checkpoint it publishes."""

    @contextlib.asynccontextmanager
    async def context(app: web.Application) -> AsyncIterator[None]:
        if not audit.enabled:
            yield
            return
        # No start event, no server: a log that cannot be written must stop the CA from acting.
        await audit.start(version(), config_digest(config))
        task = asyncio.create_task(_every(audit, config, worker, last))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            try:
                await audit.append(Draft(Event.SERVER_STOP, "server", {"worker": worker}))
                await publish_checkpoint(audit, config.audit.checkpoint_dir, worker)
            except (StoreError, OSError) as exc:
                log.error("audit: could not record the stop or its checkpoint: %s", exc)

    return context


async def _every(audit: AuditLog, config: Config, worker: int, last: LastCheckpoint | None) -> None:
    while True:
        await asyncio.sleep(config.audit.checkpoint_interval_seconds)
        try:
            await publish_checkpoint(audit, config.audit.checkpoint_dir, worker)
        except (StoreError, OSError) as exc:
            log.error("audit: checkpoint failed, retrying at the next interval: %s", exc)
        else:
            if last is not None:
                last.published()
