"""How the SQLite store keeps each kind of value (``store.columns`` lists the columns).

Times are INTEGER microseconds since the Unix epoch (UTC); booleans that may be
unset are NULL/0/1; tuples of strings are JSON arrays. Every conversion is exact,
so a record read back compares equal to the one written.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from scep_ca.pki.records import CertificateRecord, RevokedEntry
from store.columns import CERTIFICATES, INTEGRATIONS, TRANSACTIONS, Column, Convert, Kind, RowMapper
from store.columns import username_key as username_key

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Row = tuple[object, ...]


def to_us(value: datetime) -> int:
    """Microseconds since the epoch. Naive datetimes are refused: their zone is a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("store times must be timezone-aware")
    return (value - _EPOCH) // _MICROSECOND


def from_us(value: object) -> datetime:
    assert isinstance(value, int)
    return _EPOCH + value * _MICROSECOND


def opt_from_us(value: object) -> datetime | None:
    return None if value is None else from_us(value)


def opt_to_us(value: datetime | None) -> int | None:
    return None if value is None else to_us(value)


def _text_tuple_out(value: tuple[str, ...]) -> str:
    return json.dumps(list(value))


def _text_tuple_in(value: str) -> tuple[str, ...]:
    return tuple(str(s) for s in json.loads(value))


_ENCODE: dict[Kind, Convert] = {Kind.TIME: to_us, Kind.BOOL: int, Kind.TEXT_TUPLE: _text_tuple_out}
_DECODE: dict[Kind, Convert] = {Kind.TIME: from_us, Kind.BOOL: bool, Kind.TEXT_TUPLE: _text_tuple_in}


class SQLiteConverters:
    def encode(self, column: Column) -> Convert | None:
        return _ENCODE.get(column.kind)

    def decode(self, column: Column) -> Convert | None:
        return _DECODE.get(column.kind)


INTEGRATION_ROWS = RowMapper(INTEGRATIONS, SQLiteConverters())
CERTIFICATE_ROWS = RowMapper(CERTIFICATES, SQLiteConverters())
TRANSACTION_ROWS = RowMapper(TRANSACTIONS, SQLiteConverters())

# The inserted certificate columns (bench/ and the store tests load rows with them).
CERTIFICATE_COLUMNS = CERTIFICATES.insert_names()


def certificate_params(cert: CertificateRecord, created_at: datetime) -> tuple[Any, ...]:
    """Values for CERTIFICATE_COLUMNS; ``created_at`` is used when the record has none."""
    return CERTIFICATE_ROWS.params(cert, created_at=created_at)


def revoked_from_row(row: Row) -> RevokedEntry:
    assert isinstance(row[0], str) and (row[2] is None or isinstance(row[2], str))
    return RevokedEntry(serial=row[0], revoked_at=from_us(row[1]), reason=row[2])
