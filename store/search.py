"""What both backends make of the console's reads: the search's text and status filter, and the
dashboard's counts.

Pure functions; each backend turns them into its own SQL (placeholders, index hints).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from store import revocation_rule as rule
from store.base import CertificateSearch, CertSearchStatus, IntegrationCounts

# Longer search texts are cut: a subject is an RFC 4514 string of a few hundred characters at most.
MAX_TEXT = 200
_HEX = frozenset(string.hexdigits)
# "CN=", "O=", "2.5.4.3=": the text starts with an attribute, so it is the start of a subject.
_NAMES_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]*=|[0-9]+(\.[0-9]+)+=")

# The status filter with ``{now}`` where the backend puts its placeholder for the search's time,
# on certificates joined with their integrations (store/revocation_rule.py).
_STATUS_SQL = {
    CertSearchStatus.VALID: f"{rule.ISSUED} AND c.not_after > {{now}}",
    CertSearchStatus.REVOKED: rule.REVOKED,
    CertSearchStatus.EXPIRED: f"{rule.ISSUED} AND c.not_after <= {{now}}",
}


@dataclass(frozen=True)
class SearchTerms:
    """``text`` matches a subject that starts with it (``CN=alice``, ``O=Example``: it starts with
    an attribute name and ``=``) or whose first RDN is a CN starting with it (``alice``), ASCII letters in any case:
    subjects are RFC 4514 strings, most specific RDN first, so the CN a device or user is known
    by leads. A range on one index (``subject_low`` <= folded subject < ``subject_high``), cheap
    at a million rows and for every enrollment, unlike a substring index."""

    text: str  # the search text ("" for none)
    # The serial prefix the text also names: lowercase hex without colons or leading zeros
    # (how serials are stored), or "" when the text is not hex.
    serial_prefix: str
    status: CertSearchStatus | None

    @property
    def subject_low(self) -> str:
        prefix = self.text if _NAMES_ATTRIBUTE.match(self.text) else f"CN={_escaped_value_start(self.text)}"
        return ascii_lower(prefix)

    @property
    def subject_high(self) -> str:
        """The smallest string above every string that starts with ``subject_low``."""
        low = self.subject_low
        if low[-1] == "\U0010ffff":  # no character above it: append the largest one instead
            return low + "\U0010ffff"
        return low[:-1] + chr(ord(low[-1]) + 1)

    def status_sql(self, placeholder: str) -> str | None:
        """The status clause with ``placeholder`` standing for the search's time (None: no filter)."""
        if self.status is None:
            return None
        return _STATUS_SQL[self.status].format(now=placeholder)

    @property
    def status_needs_now(self) -> bool:
        return self.status is not None and "{now}" in _STATUS_SQL[self.status]


def only_revoked(terms: SearchTerms, search: CertificateSearch) -> bool:
    """A page of revoked certificates (of every integration, or of one), nothing else asked: no
    index holds them in expiry order, since a certificate of a deleted integration is revoked
    whatever its own status says (``store/revocation_rule.py``), so each backend shapes this
    query apart."""
    return (
        terms.status is CertSearchStatus.REVOKED
        and not terms.text
        and search.expiring_before is None
        and search.after is None  # a cursor's page is one range of the expiry index from the cursor
    )


def revoked_page_walks_expiry(*, offset: int, limit: int, certificates: int, revoked: int) -> bool:
    """For a page of revoked certificates by expiry (no text, no integration): True when walking
    the expiry index and skipping the other rows is cheaper than reading every revoked row.

    The walk visits about ``(offset + limit) * certificates / revoked`` rows (revoked ones spread
    over the expiry range); the other way sorts all ``revoked`` rows, each a table read, since no
    index holds them in expiry order. Both answer the same rows: the counts only pick the speed.
    """
    return (offset + limit) * certificates < revoked * max(revoked, 1)


def search_terms(search: CertificateSearch) -> SearchTerms:
    text = (search.text or "").strip()[:MAX_TEXT]
    compact = text.replace(":", "").replace(" ", "").lower()
    serial = compact.lstrip("0") if compact and all(c in _HEX for c in compact) else ""
    return SearchTerms(text=text, serial_prefix=serial, status=search.status)


def dashboard_counts(
    whole: Iterable[Sequence[object]],
    edges: Mapping[str, tuple[int, int]],
    pending: Mapping[str, int],
    *,
    horizon_after_today: bool,
) -> list[IntegrationCounts]:
    """The dashboard's counts from the maintained per-day counters: ``whole`` rows of
    ``(integration_id, valid after today, revoked, expiring strictly between today and the
    horizon's day)``, ``edges`` the exact ``(valid, expiring)`` counts of the two boundary days."""
    rows = []
    for integration_id, valid, revoked, expiring in whole:
        valid_edge, expiring_edge = edges.get(str(integration_id), (0, 0))
        # A horizon inside today: the whole-day sum counts nothing, the edge count everything.
        inner = _int(expiring) if horizon_after_today else 0
        rows.append((integration_id, _int(valid) + valid_edge, revoked, inner + expiring_edge))
    return merge_counts(rows, pending)


def merge_counts(rows: Iterable[Sequence[object]], pending: Mapping[str, int]) -> list[IntegrationCounts]:
    """``(integration_id, valid, revoked, expiring)`` rows plus the pending requests per integration,
    one ``IntegrationCounts`` per integration that has either, sorted by id."""
    counts = {str(r[0]): (_int(r[1]), _int(r[2]), _int(r[3])) for r in rows}
    ids = sorted(set(counts) | set(pending))
    return [IntegrationCounts(i, *counts.get(i, (0, 0, 0)), pending=pending.get(i, 0)) for i in ids]


def _int(value: object) -> int:
    # SQLite's sum() is NULL over no rows; PostgreSQL's sum() of bigint is numeric (Decimal).
    if value is None:
        return 0
    assert isinstance(value, int | Decimal), value
    return int(value)


def ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only, as SQLite's NOCASE folds (other letters compare as they are)."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

# The same fold in SQL for PostgreSQL, whose lower() would also fold other letters.
PG_ASCII_FOLD = f"translate(subject, '{string.ascii_uppercase}', '{string.ascii_lowercase}') COLLATE \"C\""


def _escaped_value_start(text: str) -> str:
    """The start of an attribute value as stored: RFC 4514 section 2.4 escaping, as cryptography's
    ``rfc4514_string()`` writes it (a device named ``a,b`` is stored ``CN=a\\,b``)."""
    escaped = "".join("\\" + c if c in _ESCAPED else c for c in text).replace("\0", "\\00")
    return "\\" + escaped if escaped[:1] in ("#", " ") else escaped


_ESCAPED = frozenset('\\"+,;<>')
