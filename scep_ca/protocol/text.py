"""Text a client chose, on its way into a certificate, a log line or an operator's terminal.

Two facts live here. Which characters are control characters (C0, DEL and C1, ECMA-48
section 5): in a certificate's subject they are refused, since every terminal, pager and
relying party that prints the subject would act on them (ESC starts an escape sequence, NUL
cuts a C string short, CR overwrites the line). And how non-printable text is shown: every
character ``str.isprintable`` refuses (controls, the Unicode line and paragraph separators,
format characters such as the bidi overrides, unassigned code points) written as a Python
escape, so that what is printed is exactly what is stored and no line can be forged.
"""

from __future__ import annotations

import re
from types import MappingProxyType

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_SHORT_ESCAPES = MappingProxyType({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


def has_control_characters(text: str) -> bool:
    """True when ``text`` holds a C0 control, DEL or a C1 control."""
    return _CONTROL.search(text) is not None


def _escape(char: str) -> str:
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _without(text: str, chars: str) -> str:
    for char in chars:
        text = text.replace(char, "")
    return text


def escape_text(text: str, keep: str = "") -> str:
    """``text`` with every non-printable character but those in ``keep`` written as an escape
    (``\\n``, ``\\x1b``, ``\\u202e``).

    Backslashes are left as they are (``DOMAIN\\user`` stays readable), so a literal
    backslash-n in the input and an escaped newline print alike; neither starts a line.
    """
    # The common cases without a Python loop: a log line is printable but for its final newline.
    if text.isprintable() or (keep and _without(text, keep).isprintable()):
        return text
    return "".join(char if char.isprintable() or char in keep else _escape(char) for char in text)
