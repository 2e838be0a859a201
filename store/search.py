"""What both backends make of the console's reads: the search's text and status filter, and the
dashboard's counts.

Pure functions; each backend turns them into its own SQL (placeholders, index hints).
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from store.base import CertificateSearch, CertSearchStatus, IntegrationCounts

# Longer search texts are cut: a subject is an RFC 4514 string of a few hundred characters at most.
MAX_TEXT = 200
_HEX = frozenset(string.hexdigits)

# The status filter with ``{now}`` where the backend puts its placeholder for the search's time.
_STATUS_SQL = {
    CertSearchStatus.VALID: "status = 'issued' AND not_after > {now}",
    CertSearchStatus.REVOKED: "status = 'revoked'",
    CertSearchStatus.EXPIRED: "status = 'issued' AND not_after <= {now}",
}


@dataclass(frozen=True)
class SearchTerms:
    text: str  # the subject substring ("" for none)
    # The serial prefix the text also names: lowercase hex without colons or leading zeros
    # (how serials are stored), or "" when the text is not hex.
    serial_prefix: str
    status: CertSearchStatus | None

    @property
    def like_text(self) -> str:
        """``text`` for ``LIKE '%...%' ESCAPE '\\'``: the wildcards taken literally."""
        return self.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

    def status_sql(self, placeholder: str) -> str | None:
        """The status clause with ``placeholder`` standing for the search's time (None: no filter)."""
        if self.status is None:
            return None
        return _STATUS_SQL[self.status].format(now=placeholder)

    @property
    def status_needs_now(self) -> bool:
        return self.status is not None and "{now}" in _STATUS_SQL[self.status]


def search_terms(search: CertificateSearch) -> SearchTerms:
    text = (search.text or "").strip()[:MAX_TEXT]
    compact = text.replace(":", "").replace(" ", "").lower()
    serial = compact.lstrip("0") if compact and all(c in _HEX for c in compact) else ""
    return SearchTerms(text=text, serial_prefix=serial, status=search.status)


def merge_counts(rows: Iterable[Sequence[object]], pending: Mapping[str, int]) -> list[IntegrationCounts]:
    """``(integration_id, valid, revoked, expiring)`` rows plus the pending requests per integration,
    one ``IntegrationCounts`` per integration that has either, sorted by id."""
    counts = {str(r[0]): (_int(r[1]), _int(r[2]), _int(r[3])) for r in rows}
    ids = sorted(set(counts) | set(pending))
    return [IntegrationCounts(i, *counts.get(i, (0, 0, 0)), pending=pending.get(i, 0)) for i in ids]


def _int(value: object) -> int:
    # SQLite's sum() is NULL over no rows.
    return int(value) if isinstance(value, int) else 0
