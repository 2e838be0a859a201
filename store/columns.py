"""One column list per table, shared by the SQLite and PostgreSQL backends.

Each table is a tuple of ``Column`` entries in the order the backends insert and select
them; each backend supplies a ``Converters`` (how a kind of value is stored: SQLite keeps
times as microsecond integers, booleans as 0/1 and string tuples as JSON text, PostgreSQL
as timestamptz, boolean and text[]). ``RowMapper`` turns a record into insert parameters and
a selected row back into a record, so adding a column is one ``Column`` entry here (plus the
migration that creates it, and, for certificates, one that redefines the PostgreSQL
issuance functions: see ``store.schema_postgres``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Generic, Protocol, TypeVar

from scep_ca.pki.records import CertificateRecord, CertStatus, Integration, Transaction, TransactionStatus


class Kind(enum.Enum):
    """How a record's value is stored."""

    TEXT = enum.auto()
    INTEGER = enum.auto()
    BYTES = enum.auto()
    BOOL = enum.auto()
    TIME = enum.auto()  # timezone-aware datetime
    TEXT_TUPLE = enum.auto()  # tuple[str, ...]
    STATUS = enum.auto()  # a StrEnum (Column.status names which)

    @property
    def pg_type(self) -> str:
        return _PG_TYPES[self]


_PG_TYPES = {
    Kind.TEXT: "text",
    Kind.INTEGER: "integer",
    Kind.BYTES: "bytea",
    Kind.BOOL: "boolean",
    Kind.TIME: "timestamptz",
    Kind.TEXT_TUPLE: "text[]",
    Kind.STATUS: "text",
}


Convert = Callable[[Any], Any]


@dataclass(frozen=True)
class Column:
    """One column. ``attr`` is the record's field (the column's name unless given); ``value``
    derives a written-only column from the record (e.g. a lookup key); ``read_only`` columns
    are selected but never inserted (set by later statements)."""

    name: str
    kind: Kind
    attr: str | None = None
    status: type[enum.StrEnum] | None = None
    value: Callable[[Any], object] | None = None
    read_only: bool = False

    @property
    def field(self) -> str:
        return self.attr or self.name

    @property
    def written(self) -> bool:
        return not self.read_only

    @property
    def read(self) -> bool:
        return self.value is None


def username_key(username: str) -> str:
    """The case-insensitive lookup key of a username (both backends fold the same way)."""
    return username.casefold()


R = TypeVar("R")


@dataclass(frozen=True)
class Table(Generic[R]):
    name: str
    record: type[R]
    columns: tuple[Column, ...]

    @property
    def insert_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.written)

    @property
    def select_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.read)

    def insert_names(self) -> str:
        return ", ".join(c.name for c in self.insert_columns)

    def select_names(self, prefix: str = "") -> str:
        return ", ".join(f"{prefix}{c.name}" for c in self.select_columns)

    def index(self, name: str) -> int:
        """Position of a column among the inserted ones."""
        return [c.name for c in self.insert_columns].index(name)


INTEGRATIONS: Table[Integration] = Table(
    "integrations",
    Integration,
    (
        Column("id", Kind.TEXT),
        Column("name", Kind.TEXT),
        Column("subject_template", Kind.TEXT),
        Column("created_at", Kind.TIME),
        Column("validity_days", Kind.INTEGER),
        Column("username", Kind.TEXT),
        Column("password_scrypt", Kind.TEXT),
        Column("nt_hash_encrypted", Kind.BYTES),
        Column("allow_basic", Kind.BOOL),
        Column("allowed_san_types", Kind.TEXT_TUPLE),
        Column("include_ca_in_reply", Kind.BOOL),
        Column("deleted_at", Kind.TIME),
        Column("require_approval", Kind.BOOL),
        Column("revoke_superseded", Kind.BOOL),
        Column("validator", Kind.TEXT),
        Column("validator_settings", Kind.TEXT),
        Column("validator_secret_encrypted", Kind.BYTES),
        Column("username_key", Kind.TEXT, value=lambda item: username_key(item.username)),
    ),
)

# The written columns' order is also scep_record_issuance's parameter order (PostgreSQL).
CERTIFICATES: Table[CertificateRecord] = Table(
    "certificates",
    CertificateRecord,
    (
        Column("serial", Kind.TEXT),
        Column("integration_id", Kind.TEXT),
        Column("issuer_fingerprint", Kind.TEXT),
        Column("subject", Kind.TEXT),
        Column("not_before", Kind.TIME),
        Column("not_after", Kind.TIME),
        Column("der", Kind.BYTES),
        Column("transaction_id", Kind.TEXT),
        Column("pubkey_sha256", Kind.TEXT),
        Column("message_type", Kind.INTEGER),
        Column("requester_address", Kind.TEXT),
        Column("user_agent", Kind.TEXT),
        Column("status", Kind.STATUS, status=CertStatus),
        Column("revoked_at", Kind.TIME),
        Column("revocation_reason", Kind.TEXT),
        Column("created_at", Kind.TIME),
        Column("crl_shard", Kind.INTEGER),
        # Set by a renewal, after the insert.
        Column("superseded_by", Kind.TEXT, read_only=True),
    ),
)

TRANSACTIONS: Table[Transaction] = Table(
    "transactions",
    Transaction,
    (
        Column("integration_id", Kind.TEXT),
        Column("transaction_id", Kind.TEXT),
        Column("pubkey_sha256", Kind.TEXT),
        Column("status", Kind.STATUS, status=TransactionStatus),
        Column("serial", Kind.TEXT),
        Column("message_type", Kind.INTEGER),
        Column("csr_der", Kind.BYTES),
        Column("created_at", Kind.TIME),
        Column("renews", Kind.TEXT),
    ),
)


class Converters(Protocol):
    """A backend's storage of each kind: ``encode`` and ``decode`` return None for identity.
    Both must pass None (SQL NULL) through unchanged."""

    def encode(self, column: Column) -> Convert | None: ...

    def decode(self, column: Column) -> Convert | None: ...


def _status_value(value: enum.StrEnum) -> str:
    return value.value


def _nullable(convert: Convert) -> Convert:
    def run(value: Any) -> Any:
        return None if value is None else convert(value)

    return run


class RowMapper(Generic[R]):
    """Record <-> row for one table and one backend. The per-column converters are looked up
    once here, so a call is a loop over prepared functions."""

    def __init__(self, table: Table[R], converters: Converters) -> None:
        self.table = table
        self._record = table.record
        self._out: list[tuple[str, Callable[[Any], Any], Convert | None]] = []
        for column in table.insert_columns:
            get = column.value or attrgetter(column.field)
            encode = _status_value if column.kind is Kind.STATUS else converters.encode(column)
            self._out.append((column.field, get, None if encode is None else _nullable(encode)))
        self._in: list[tuple[int, str, Convert | None]] = []
        for i, column in enumerate(table.select_columns):
            decode = column.status if column.kind is Kind.STATUS else converters.decode(column)
            self._in.append((i, column.field, None if decode is None else _nullable(decode)))

    def params(self, record: R, **defaults: object) -> tuple[Any, ...]:
        """Insert parameters in ``table.insert_columns`` order; ``defaults`` gives a field's
        value where the record's is None (e.g. a certificate's creation time)."""
        out = []
        for field, get, encode in self._out:
            value = get(record)
            if value is None and defaults:
                value = defaults.get(field)
            out.append(value if encode is None else encode(value))
        return tuple(out)

    def record(self, row: Sequence[Any]) -> R:
        """A row selected as ``table.select_names()`` (extra trailing values are ignored)."""
        fields = {}
        for i, name, decode in self._in:
            value = row[i]
            fields[name] = value if decode is None else decode(value)
        return self._record(**fields)


def insert_sql(table: Table[Any], placeholder: str) -> str:
    """``INSERT INTO table (columns) VALUES (...)``: ``placeholder`` is ``?`` (SQLite) or ``$``
    (PostgreSQL, numbered from 1)."""
    count = len(table.insert_columns)
    marks = "?" * count if placeholder == "?" else [f"${n}" for n in range(1, count + 1)]
    return f"INSERT INTO {table.name} ({table.insert_names()}) VALUES ({', '.join(marks)})"


# The console's accounts and sessions (migration 9), read whole by both backends.
ADMIN_COLUMNS = "name, role, password_scrypt, created_at, disabled_at"
SESSION_COLUMNS = "token_hash, admin, csrf_token, created_at, last_seen, address"
