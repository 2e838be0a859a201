"""The outbound HTTP client validators share: timeouts, a size cap, one retry, TLS policy.

One retry after ``retry_delay`` seconds on a connection error or on a status the caller
names (5xx, and 429 for Microsoft's services); a timeout is not retried, so a client
waits at most about one timeout per call. Errors carry the exception's class name only:
URLs may hold a tenant and bodies hold secrets, and none of it belongs in a log line.

Answers are read to their end under ``MAX_ANSWER_BYTES``: one read returns what one TCP
segment brought, so a single read both cut answers short and let the cap pass unnoticed.
The session has no pool-wide connection cap: each integration bounds its own outbound
calls (``scep_ca.services.validators.gate``), so one flooded integration cannot take the
connections another one needs.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

# Answers of token, discovery, Intune and webhook endpoints are small JSON documents.
MAX_ANSWER_BYTES = 256 * 1024
RETRY_DELAY_SECONDS = 1.0

# How the server's certificate is checked: None for the system's trust store, a context
# (e.g. trusting ``intune.ca_file``), or a pinned SHA-256 of the server's certificate.
TlsCheck = ssl.SSLContext | aiohttp.Fingerprint | None


class HttpFailure(Exception):
    """The call did not produce an answer (network error, timeout, oversize answer)."""


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes


def pinned(sha256_hex: str) -> TlsCheck:
    """Trust exactly the server certificate whose DER has this SHA-256, whoever issued it."""
    return aiohttp.Fingerprint(bytes.fromhex(sha256_hex))


def trusting(ca_file: Path | None) -> TlsCheck:
    """Trust the CA certificates in ``ca_file`` instead of the system's store; None: the system's."""
    return None if ca_file is None else ssl.create_default_context(cafile=str(ca_file))


def server_error(status: int) -> bool:
    return status >= 500


async def read_capped(content: aiohttp.StreamReader, cap: int) -> bytes:
    """The whole body, however many segments it came in; HttpFailure past ``cap`` bytes."""
    data = bytearray()
    while True:
        chunk = await content.read(cap + 1 - len(data))
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > cap:
            raise HttpFailure("answer too large")


class HttpClient:
    """One aiohttp session, opened on first use; ``close`` at shutdown."""

    def __init__(self, retry_delay: float = RETRY_DELAY_SECONDS, max_answer_bytes: int = MAX_ANSWER_BYTES) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._retry_delay = retry_delay
        self._max_answer = max_answer_bytes

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No cookies, no environment proxies: every call is explicit. limit=0: the bound
            # is per integration (gate.py), not one pool all integrations compete for.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
        retry_status: frozenset[int] = frozenset(),
        tls: TlsCheck = None,
    ) -> HttpAnswer:
        for attempt in (1, 2):
            try:
                answer = await self._once(method, url, headers, body, timeout, tls)
            except TimeoutError as exc:
                raise HttpFailure("timed out") from exc
            except aiohttp.ClientError as exc:
                if attempt == 2:
                    raise HttpFailure(type(exc).__name__) from exc
            else:
                if attempt == 2 or not (server_error(answer.status) or answer.status in retry_status):
                    return answer
            await asyncio.sleep(self._retry_delay)
        raise AssertionError("unreachable")  # the loop returns or raises on its second pass

    async def _once(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float, tls: TlsCheck
    ) -> HttpAnswer:
        async with self._open().request(
            method,
            url,
            headers=dict(headers),
            data=body,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
            ssl=True if tls is None else tls,
        ) as resp:
            if resp.content_length is not None and resp.content_length > self._max_answer:
                raise HttpFailure("answer too large")
            return HttpAnswer(resp.status, await read_capped(resp.content, self._max_answer))
