"""GET quirks of real clients, each a named regression test."""

from __future__ import annotations

import base64
import os

import pytest

from scep_ca.protocol.errors import MalformedRequest
from scep_ca.server.query import raw_query_param
from scep_ca.server.scep_web import decode_message_param

# Bytes whose base64 holds '+', '/' and needs padding.
PAYLOAD = bytes(range(256)) + os.urandom(33)
B64 = base64.b64encode(PAYLOAD).decode()
assert "+" in B64 and "/" in B64 and B64.endswith("=")


def test_macos_raw_plus_and_slash() -> None:
    query = f"operation=PKIOperation&message={B64}"
    assert decode_message_param(raw_query_param(query, "message") or "") == PAYLOAD


def test_plus_turned_into_space_by_a_form_decoder() -> None:
    assert decode_message_param(B64.replace("+", " ")) == PAYLOAD


def test_percent_encoded() -> None:
    from urllib.parse import quote

    query = f"operation=PKIOperation&message={quote(B64, safe='')}"
    assert decode_message_param(raw_query_param(query, "message") or "") == PAYLOAD


def test_sscep_percent_0a_line_breaks() -> None:
    wrapped = "%0A".join(B64[i : i + 64] for i in range(0, len(B64), 64))
    assert decode_message_param(raw_query_param(f"message={wrapped}", "message") or "") == PAYLOAD


def test_missing_padding() -> None:
    assert decode_message_param(B64.rstrip("=")) == PAYLOAD


def test_url_safe_alphabet() -> None:
    assert decode_message_param(base64.urlsafe_b64encode(PAYLOAD).decode().rstrip("=")) == PAYLOAD


def test_parameter_names_case_insensitive_and_first_wins() -> None:
    assert raw_query_param("OPERATION=GetCACert&operation=x", "operation") == "GetCACert"
    assert raw_query_param("a=1&b=2", "message") is None


@pytest.mark.parametrize("bad", ["!!!!", "abc$def", "A"])
def test_not_base64(bad: str) -> None:
    with pytest.raises(MalformedRequest):
        decode_message_param(bad)
