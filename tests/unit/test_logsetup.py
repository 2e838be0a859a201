"""The text log format: one record is one line, whatever a client put in a field (log injection)."""

from __future__ import annotations

import io
import logging

from config.model import LogConfig
from scep_ca.protocol.text import escape_text
from scep_ca.server.logsetup import TextFormatter, build_handler

FORGED_TID = "ABC\n2026-12-01 00:00:00,000 INFO scep_ca.services.enrollment: issued serial=1 tid=forged"


def _logger(stream: io.StringIO, fmt: str = "text") -> logging.Logger:
    logger = logging.getLogger(f"test.logsetup.{fmt}.{id(stream)}")
    logger.handlers[:] = [build_handler(LogConfig(format=fmt), stream)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def test_a_transaction_id_with_a_newline_stays_on_one_line() -> None:
    stream = io.StringIO()
    _logger(stream).warning("scep failure tid=%s failInfo=%s", FORGED_TID, "badRequest")
    out = stream.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n")
    assert "tid=ABC\\n2026-12-01 00:00:00,000 INFO scep_ca.services.enrollment: issued serial=1 tid=forged" in out
    assert out.rstrip("\n").endswith(" failInfo=badRequest")


def test_every_control_character_is_escaped() -> None:
    assert escape_text("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert escape_text("\x00\x1b[31m\x7f") == "\\x00\\x1b[31m\\x7f"
    assert escape_text("\x85\x9b") == "\\x85\\x9b"  # C1: NEL and CSI
    assert escape_text("a\u2028b\u2029c") == "a\\u2028b\\u2029c"
    assert escape_text("DOMAIN\\user é ü 日本") == "DOMAIN\\user é ü 日本"
    for code in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]:
        escaped = escape_text(chr(code))
        assert escaped.startswith("\\") and escaped.isprintable(), hex(code)
        assert len(escaped.splitlines()) == 1


def test_fields_a_text_format_names_are_escaped_too() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter("%(levelname)s tid=%(transaction_id)s: %(message)s"))
    logger = logging.getLogger("test.logsetup.fields")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.warning("user %s", "bob\u2028x", extra={"transaction_id": FORGED_TID})
    out = stream.getvalue()
    assert out.count("\n") == 1
    assert out == f"WARNING tid={escape_text(FORGED_TID)}: user bob\\u2028x\n"


def test_a_traceback_keeps_its_lines_indented() -> None:
    stream = io.StringIO()
    logger = _logger(stream)
    try:
        raise ValueError("bad value\n2026-12-01 00:00:00,000 INFO forged")
    except ValueError:
        logger.exception("failed tid=%s", "T1")
    first, *rest = stream.getvalue().rstrip("\n").split("\n")
    assert first.endswith("failed tid=T1")
    # Every traceback line is indented: the newline in the exception text cannot start a record.
    assert rest[0] == "    Traceback (most recent call last):"
    assert all(line.startswith("    ") for line in rest)
    assert rest[-2:] == ["    ValueError: bad value", "    2026-12-01 00:00:00,000 INFO forged"]


def test_json_lines_were_already_one_line() -> None:
    stream = io.StringIO()
    _logger(stream, "json").warning("tid=%s", FORGED_TID)
    assert stream.getvalue().count("\n") == 1
