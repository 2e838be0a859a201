"""Control characters (refused in subjects) and the escaping of non-printable text (logs, CLI)."""

from __future__ import annotations

import pytest

from scep_ca.protocol.text import escape_text, has_control_characters


@pytest.mark.parametrize("code", [*range(0x20), *range(0x7F, 0xA0)])
def test_c0_del_and_c1_are_control_characters(code: int) -> None:
    assert has_control_characters(f"a{chr(code)}b")


@pytest.mark.parametrize("text", ["alice", "José 山田", "a\u00a0b", "a\u202eb", "emoji 🙂", ""])
def test_other_text_has_no_control_characters(text: str) -> None:
    # Not controls in the C0/C1 sense: refused nowhere, escaped when shown (see below).
    assert not has_control_characters(text)


def test_non_printables_are_escaped_to_one_printable_line() -> None:
    assert escape_text("a\nb\x1b[2J\x00") == "a\\nb\\x1b[2J\\x00"
    # Bidi override, line separator, a private-use character beyond the BMP.
    assert escape_text("\u202eabc\u2028\U000f0000") == "\\u202eabc\\u2028\\U000f0000"
    assert escape_text("DOMAIN\\user José 山田") == "DOMAIN\\user José 山田"
    for code in [*range(0x20), *range(0x7F, 0xA1), 0x2028, 0x2029, 0x202E, 0x200B]:
        escaped = escape_text(chr(code))
        assert escaped.startswith("\\") and escaped.isprintable(), hex(code)


def test_kept_characters_pass_unescaped() -> None:
    assert escape_text("one\ntwo\x1b", keep="\n") == "one\ntwo\\x1b"
