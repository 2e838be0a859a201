"""Presenting certificate records: table rows for ``cert list`` and JSON for ``--json`` and the API.

No I/O and no store access: the CLI and the status API pass records in. Times are
ISO 8601 in JSON and ``YYYY-MM-DD HH:MM`` UTC in tables; serials are shown as the
store's lowercase hex (what ``cert show``/``cert revoke`` accept back) and, in JSON,
also in the colon form that ``openssl x509 -text`` prints.
"""

from __future__ import annotations

import base64
import datetime as dt
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

from scep_ca.pki.records import CertificateRecord, CertStatus
from scep_ca.pki.serials import colon_hex
from scep_ca.protocol.text import escape_text

TABLE_COLUMNS: tuple[str, ...] = ("SERIAL", "INTEGRATION", "SUBJECT", "STATUS", "NOT AFTER", "REVOKED")


def effective_status(record: CertificateRecord, now: dt.datetime) -> str:
    """``revoked``, ``expired`` or ``valid``: revocation first, as relying parties care most about it."""
    if record.status == CertStatus.REVOKED:
        return "revoked"
    if now > record.not_after:
        return "expired"
    return "valid"


def _short_time(when: dt.datetime | None) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M") if when else "-"


def _iso(when: dt.datetime | None) -> str | None:
    return when.isoformat() if when else None


def table_row(record: CertificateRecord, now: dt.datetime) -> tuple[str, ...]:
    """One row matching ``TABLE_COLUMNS``."""
    revoked = "-"
    if record.status == CertStatus.REVOKED:
        revoked = _short_time(record.revoked_at)
        if record.revocation_reason:
            revoked += f" ({record.revocation_reason})"
    return (
        record.serial,
        record.integration_id,
        record.subject,
        effective_status(record, now),
        _short_time(record.not_after),
        revoked,
    )


def format_table(rows: Iterable[Sequence[str]], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """Left-aligned columns separated by two spaces, header first, no trailing blanks; non-printable
    characters in a cell (a client's subject) are escaped (``scep_ca.protocol.text``)."""
    all_rows = [tuple(columns), *(tuple(escape_text(cell) for cell in r) for r in rows)]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in all_rows)


def record_to_dict(record: CertificateRecord, now: dt.datetime, *, include_pem: bool = False) -> dict[str, Any]:
    """JSON-ready description of one record (``cert show --json``, ``GET /api/v1/certificates/<serial>``)."""
    data: dict[str, Any] = {
        "serial": record.serial,
        "serial_colon": colon_hex(record.serial),
        "integration": record.integration_id,
        "subject": record.subject,
        "status": effective_status(record, now),
        "revoked": record.status == CertStatus.REVOKED,
        "not_before": _iso(record.not_before),
        "not_after": _iso(record.not_after),
        "revoked_at": _iso(record.revoked_at),
        "revocation_reason": record.revocation_reason,
        "issuer_fingerprint": record.issuer_fingerprint,
        "transaction_id": record.transaction_id,
        "message_type": record.message_type,
        "requester_address": record.requester_address,
        # Tells an MDM server's "Issue Test Certificate" run (its own HTTP client) from devices.
        "user_agent": record.user_agent,
        "created_at": _iso(record.created_at),
    }
    if include_pem:
        data["pem"] = der_to_pem(record.der)
    return data


def der_to_pem(der: bytes) -> str:
    """RFC 7468 §5 textual encoding (64-character lines)."""
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode("ascii"), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


def colon_fingerprint(hex_digest: str) -> str:
    """A hex digest as upper-case byte pairs joined by colons, as MDM forms and browsers show fingerprints."""
    upper = hex_digest.upper()
    return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))
