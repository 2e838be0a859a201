"""The outbound HTTP client validators share: timeouts, a size cap, one retry.

One retry after ``retry_delay`` seconds on a connection error or on a status the caller
names (5xx, and 429 for Microsoft's services); a timeout is not retried, so a client
waits at most about one timeout per call. Errors carry the exception's class name only:
URLs may hold a tenant and bodies hold secrets, and none of it belongs in a log line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

# Answers of token, discovery, Intune and webhook endpoints are small JSON documents.
MAX_ANSWER_BYTES = 256 * 1024
RETRY_DELAY_SECONDS = 1.0


class HttpFailure(Exception):
    """The call did not produce an answer (network error, timeout, oversize answer)."""


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes


def server_error(status: int) -> bool:
    return status >= 500


class HttpClient:
    """One aiohttp session, opened on first use; ``close`` at shutdown."""

    def __init__(self, retry_delay: float = RETRY_DELAY_SECONDS) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._retry_delay = retry_delay

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No cookies, no environment proxies: every call is explicit.
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
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
    ) -> HttpAnswer:
        for attempt in (1, 2):
            try:
                answer = await self._once(method, url, headers, body, timeout)
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
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpAnswer:
        async with self._open().request(
            method,
            url,
            headers=dict(headers),
            data=body,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as resp:
            data = await resp.content.read(MAX_ANSWER_BYTES + 1)
            if len(data) > MAX_ANSWER_BYTES:
                raise HttpFailure("answer too large")
            return HttpAnswer(resp.status, data)
