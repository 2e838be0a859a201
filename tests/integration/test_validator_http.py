"""The validators' HTTP client reads an answer to its end, under its size cap (issue 17 item 7).

The stand-in writes its answer in several TCP segments with pauses between them, as a
slow or distant service does; one read call saw only the first segment.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from scep_ca.services.validators.http import MAX_ANSWER_BYTES, HttpClient, HttpFailure
from tests.validator_standins import SegmentedAnswer


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient(retry_delay=0.0)
    yield client
    await client.close()


async def _post(http: HttpClient, standin: SegmentedAnswer) -> bytes:
    server, url = await standin.start()
    try:
        answer = await http.request("POST", url, headers={}, body=b"{}", timeout=5)
    finally:
        server.close()
        await server.wait_closed()
    assert answer.status == 200
    return answer.body


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "close-delimited"])
async def test_an_answer_in_several_segments_is_read_whole(http: HttpClient, declare_length: bool) -> None:
    body = json.dumps({"allow": True, "data": {"pad": "x" * 3000}}).encode()
    standin = SegmentedAnswer(body, segments=5, pause=0.05, declare_length=declare_length)
    assert await _post(http, standin) == body
    assert standin.requests == 1


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "close-delimited"])
async def test_an_answer_over_the_cap_fails_even_in_small_segments(http: HttpClient, declare_length: bool) -> None:
    # Each segment is far below the cap; only their sum is over it.
    body = b"x" * (MAX_ANSWER_BYTES + 1000)
    standin = SegmentedAnswer(body, segments=8, pause=0.02, declare_length=declare_length)
    with pytest.raises(HttpFailure, match="answer too large"):
        await _post(http, standin)
    assert standin.requests == 1  # a too-large answer is not asked again


async def test_an_answer_exactly_at_the_cap_is_accepted(http: HttpClient) -> None:
    body = b"y" * MAX_ANSWER_BYTES
    assert await _post(http, SegmentedAnswer(body, segments=3, pause=0.02, declare_length=False)) == body
