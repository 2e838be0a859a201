"""Unparseable HTTP is logged as one WARNING line without aiohttp's traceback or the request's bytes."""

from __future__ import annotations

import io
import logging

from aiohttp.http_exceptions import BadStatusLine, LineTooLong

from config.model import LogConfig
from scep_ca.server.logsetup import build_handler


def _emit(logger_name: str, exc: BaseException) -> str:
    stream = io.StringIO()
    handler = build_handler(LogConfig(), stream)
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        try:
            raise exc
        except BaseException:
            logger.exception("Error handling request from %s", "192.0.2.7")
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_a_line_too_long_is_one_warning_without_traceback_or_bytes() -> None:
    secret_bytes = "/scep/x?operation=PKIOperation&message=" + "A" * 100
    out = _emit("aiohttp.server", LineTooLong(secret_bytes, "32768"))
    assert out.count("\n") == 1, out
    assert "WARNING aiohttp.server" in out
    assert "unparseable HTTP request from 192.0.2.7 answered 400: LineTooLong" in out
    assert "Traceback" not in out and "AAAA" not in out


def test_other_parse_errors_likewise() -> None:
    out = _emit("aiohttp.server", BadStatusLine("GARBAGE\r\n"))
    assert out.count("\n") == 1 and "answered 400: BadStatusLine" in out and "GARBAGE" not in out


def test_other_exceptions_keep_their_traceback() -> None:
    # A bug in a handler is not the client's fault: its record is left as it is.
    out = _emit("aiohttp.server", RuntimeError("boom"))
    assert "ERROR aiohttp.server" in out and "Traceback" in out and "RuntimeError: boom" in out
    # ... and records of other loggers are never rewritten.
    out = _emit("scep_ca.elsewhere", LineTooLong("x", "1"))
    assert "ERROR scep_ca.elsewhere" in out and "Traceback" in out
