"""Revocation by deletion is derived, not written per row: the one rule every certificate read applies.

``delete_integration`` sets ``integrations.deleted_at`` and writes nothing per certificate, so
deleting an integration is O(1) whatever it issued, and trivially one transaction. The rule:

* a certificate of a deleted integration whose own row is ``issued``, or on hold
  (``certificateHold``: recorded, its validator's confirmation pending, ``store.base.HOLD``),
  IS revoked: revocationDate the integration's ``deleted_at``, reason ``cessationOfOperation``
  (RFC 5280 section 5.3.1: the CA stopped serving the integration; RFC 6960 section 2.2
  "revoked" for OCSP). A hold is not left pending: nothing can confirm it any more;
* a certificate revoked on its own (keyCompromise, superseded, ...) keeps its own date and reason,
  before or after the deletion; rows revoked per row by an older scep-ca's delete are such rows.

Every query here aliases ``certificates`` as ``c`` and ``integrations`` as ``i``
(``FROM {JOINED}``); the fragments are plain SQL that both backends run as they are (each
store's ``deleted_at`` and ``revoked_at`` have the same type, integer microseconds in SQLite and
timestamptz in PostgreSQL). The full and shard CRLs read the two kinds of entries through two
indexes (``revoked_entries_sql``): the partial ``certificates_revoked*`` indexes for rows revoked
on their own, and ``certificates_integration_shard`` (integration_id, status, crl_shard) for the
issued rows of each deleted integration.
"""

from __future__ import annotations

from scep_ca.pki.reasons import Reason
from scep_ca.pki.records import CertStatus
from store.base import HOLD
from store.columns import CERTIFICATES

DELETION_REASON = Reason.CESSATION_OF_OPERATION.rfc_name

JOINED = "certificates c JOIN integrations i ON i.id = c.integration_id"

# The rows the deletion revokes: issued or on hold, of a deleted integration.
_DERIVED_ROW = f"(c.status = 'issued' OR (c.status = 'revoked' AND c.revocation_reason = '{HOLD}'))"
BY_DELETION = f"(i.deleted_at IS NOT NULL AND {_DERIVED_ROW})"

# Status predicates on the joined rows (``c.status`` alone is the row as written).
ISSUED = "(c.status = 'issued' AND i.deleted_at IS NULL)"
REVOKED = "(c.status = 'revoked' OR i.deleted_at IS NOT NULL)"
ON_HOLD = f"(c.status = 'revoked' AND c.revocation_reason = '{HOLD}' AND i.deleted_at IS NULL)"

# A write that acts on one certificate only while its integration is live (revoke, end a hold):
# for a deleted integration's certificate the answer is already "revoked".
_DELETED_IDS = "(SELECT id FROM integrations WHERE deleted_at IS NOT NULL)"
LIVE_INTEGRATION = f"integration_id NOT IN {_DELETED_IDS}"


# Every revoked certificate's keys (of one integration, with ``integration``, a placeholder), in
# two disjoint parts that each have an index: revoked rows of live integrations (the partial
# revoked index) and every row of a deleted integration (``certificates_integration_shard``, a
# range per deleted integration). The console's pages of revoked certificates sort these keys,
# not the joined rows with their DER.
def revoked_keys_sqlite(integration: str | None = None) -> str:
    # INDEXED BY: with statistics (ANALYZE), SQLite scanned the whole table for the second part
    # even when no integration is deleted (92 ms against 9 ms at 300,000 rows).
    one = f" AND integration_id = {integration}" if integration else ""
    return (
        "SELECT rowid, not_after, serial FROM certificates INDEXED BY certificates_revoked_shard "
        f"WHERE status = 'revoked' AND {LIVE_INTEGRATION}{one} UNION ALL "
        "SELECT rowid, not_after, serial FROM certificates INDEXED BY certificates_integration_shard "
        f"WHERE integration_id IN {_DELETED_IDS}{one}"
    )


def revoked_keys_pg(deleted: str, integration: str | None = None, *, any_deleted: bool) -> str:
    """As ``revoked_keys_sqlite``, with ``deleted`` the placeholder of the deleted integrations'
    ids (a text[] the caller read first): given as a value, the planner sees how many rows they
    hold; as a subquery it guessed 199 integrations and scanned the whole table (255 ms at a
    million certificates, with none deleted). ``any_deleted`` False leaves the second part out."""
    one = f" AND integration_id = {integration}" if integration else ""
    live = f"NOT integration_id = ANY ({deleted})"
    own = f"SELECT serial, not_after FROM certificates WHERE status = 'revoked' AND {live}{one}"
    if not any_deleted:
        return own
    return f"{own} UNION ALL SELECT serial, not_after FROM certificates WHERE integration_id = ANY ({deleted}){one}"


def revoked_estimate_pg(deleted: str, integration: str | None = None) -> str:
    """As ``revoked_estimate_sqlite``, ``deleted`` as in ``revoked_keys_pg``."""
    one = f" AND integration_id = {integration}" if integration else ""
    return (
        f"SELECT (SELECT count(*) FROM certificates WHERE status = 'revoked'{one}) + "
        f"(SELECT coalesce(sum(n), 0) FROM certificate_counts WHERE integration_id = ANY ({deleted}){one})"
    )


def revoked_estimate_sqlite(integration: str | None = None) -> str:
    """About how many certificates (of one integration) are revoked, for choosing a query plan:
    the rows revoked on their own, plus the deleted integrations' rows from the maintained counts
    (a few rows a day each); the two overlap by the rows revoked before a deletion."""
    one = f" AND integration_id = {integration}" if integration else ""
    return (
        f"SELECT (SELECT count(*) FROM certificates WHERE status = 'revoked'{one}) + "
        f"(SELECT coalesce(sum(n), 0) FROM certificate_counts WHERE integration_id IN {_DELETED_IDS}{one})"
    )


_EFFECTIVE = {
    "status": f"CASE WHEN i.deleted_at IS NULL THEN c.status ELSE '{CertStatus.REVOKED.value}' END",
    "revoked_at": f"CASE WHEN {BY_DELETION} THEN i.deleted_at ELSE c.revoked_at END",
    "revocation_reason": f"CASE WHEN {BY_DELETION} THEN '{DELETION_REASON}' ELSE c.revocation_reason END",
}
# The certificate's columns as ``store.columns.CERTIFICATES`` selects them, with the rule applied.
COLUMNS = ", ".join(_EFFECTIVE.get(column.name, f"c.{column.name}") for column in CERTIFICATES.select_columns)


def status_is(status: CertStatus) -> str:
    return ISSUED if status is CertStatus.ISSUED else REVOKED


def count_by_deletion_sql(integration_id: str) -> str:
    """How many certificates of the integration the deletion revokes (run after ``deleted_at`` is set).

    ``integration_id`` is the placeholder. Two index ranges of (integration_id, status, ...):
    the issued rows counted from the index alone, the revoked ones checked for a hold."""
    return (
        f"SELECT count(*) FROM {JOINED} WHERE c.integration_id = {integration_id} "
        f"AND c.status = 'issued' AND i.deleted_at IS NOT NULL"
        f" UNION ALL SELECT count(*) FROM {JOINED} WHERE c.integration_id = {integration_id} "
        f"AND c.status = 'revoked' AND {BY_DELETION}"
    )


def revoked_entries_sql(
    issuer: str,
    shard: str | None = None,
    not_after_from: str | None = None,
    *,
    join_certificates: str = "JOIN certificates c",
    deleted_ids_array: bool = False,
) -> str:
    """``(serial, revocationDate, reason)`` of every revoked certificate of ``issuer`` (a CRL's
    entries, RFC 5280 section 5.1.2.6), oldest first; with ``shard``, of that CRL shard only, and
    with ``not_after_from``, only certificates whose notAfter is at or after it.

    The arguments are placeholders. Rows revoked on their own come from the partial revoked
    indexes (holds of deleted integrations excepted: the second part gives them their derived
    entry); the deleted integrations' rows from ``certificates_integration_shard``, one range
    per deleted integration (and status, and shard). ``join_certificates`` joins the certificates
    to the deleted integrations in that second part: SQLite's planner, without statistics, is told
    the order and the index (``CROSS JOIN certificates c INDEXED BY ...``). ``deleted_ids_array``
    (PostgreSQL) also names the deleted integrations as an array computed once, so that the
    index scan gets (integration_id = ANY, status = ANY, crl_shard =) as its conditions whatever
    the planner guesses of the integrations table (never analysed while it has a few rows, it
    guessed 199 deleted ones and merge-joined over a scan of every shard: 197 ms a shard at
    1,000,000 rows, against 9 ms at 200,000 with the array, where the merge join took 28 ms).
    """
    own = [f"c.issuer_fingerprint = {issuer}", "c.status = 'revoked'"]
    derived = [f"c.issuer_fingerprint = {issuer}", "c.status IN ('issued', 'revoked')", BY_DELETION]
    if deleted_ids_array:
        derived.insert(0, f"c.integration_id = ANY (ARRAY{_DELETED_IDS})")
    if shard is not None:
        own.append(f"c.crl_shard = {shard}")
        derived.append(f"c.crl_shard = {shard}")
    if not_after_from is not None:
        own.append(f"c.not_after >= {not_after_from}")
        derived.append(f"c.not_after >= {not_after_from}")
    # Uncorrelated: evaluated once, and only for holds.
    own.append(f"NOT (c.revocation_reason = '{HOLD}' AND c.integration_id IN {_DELETED_IDS})")
    return (
        f"SELECT c.serial AS serial, c.revoked_at AS revoked_at, c.revocation_reason AS reason "
        f"FROM certificates c WHERE {' AND '.join(own)} "
        "UNION ALL "
        f"SELECT c.serial, i.deleted_at, '{DELETION_REASON}' "
        f"FROM integrations i {join_certificates} ON c.integration_id = i.id "
        f"WHERE {' AND '.join(derived)} "
        "ORDER BY revoked_at, serial"
    )
