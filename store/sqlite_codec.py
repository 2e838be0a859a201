"""Conversions between store records and SQLite row values.

Times are INTEGER microseconds since the Unix epoch (UTC); booleans that may be
unset are NULL/0/1; tuples of strings are JSON arrays. Every conversion is exact,
so a record read back compares equal to the one written.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from scep_ca.pki.records import CertificateRecord, CertStatus, Integration, RevokedEntry, Transaction, TransactionStatus

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Row = tuple[object, ...]

INTEGRATION_COLUMNS = (
    "id, name, subject_template, created_at, validity_days, username, password_scrypt, "
    "nt_hash_encrypted, allow_basic, allowed_san_types, include_ca_in_reply, deleted_at, "
    "require_approval, revoke_superseded, validator, validator_settings, validator_secret_encrypted"
)
CERTIFICATE_COLUMNS = (
    "serial, integration_id, issuer_fingerprint, subject, not_before, not_after, der, "
    "transaction_id, pubkey_sha256, message_type, requester_address, user_agent, status, "
    "revoked_at, revocation_reason, created_at"
)
# What a certificate row is read as: the inserted columns, then the mark a renewal sets.
CERTIFICATE_READ_COLUMNS = f"{CERTIFICATE_COLUMNS}, superseded_by"
TRANSACTION_COLUMNS = (
    "integration_id, transaction_id, pubkey_sha256, status, serial, message_type, csr_der, created_at, renews"
)


def to_us(value: datetime) -> int:
    """Microseconds since the epoch. Naive datetimes are refused: their zone is a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("store times must be timezone-aware")
    return (value - _EPOCH) // _MICROSECOND


def from_us(value: object) -> datetime:
    assert isinstance(value, int)
    return _EPOCH + value * _MICROSECOND


def opt_to_us(value: datetime | None) -> int | None:
    return None if value is None else to_us(value)


def opt_from_us(value: object) -> datetime | None:
    return None if value is None else from_us(value)


def _opt_bool(value: object) -> bool | None:
    return None if value is None else bool(value)


def _opt_str(value: object) -> str | None:
    assert value is None or isinstance(value, str)
    return value


def _str(value: object) -> str:
    assert isinstance(value, str)
    return value


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


def _opt_bytes(value: object) -> bytes | None:
    assert value is None or isinstance(value, bytes)
    return value


def integration_params(item: Integration) -> tuple[object, ...]:
    """Values for INTEGRATION_COLUMNS followed by username_key."""
    return (
        item.id,
        item.name,
        item.subject_template,
        to_us(item.created_at),
        item.validity_days,
        item.username,
        item.password_scrypt,
        item.nt_hash_encrypted,
        None if item.allow_basic is None else int(item.allow_basic),
        json.dumps(list(item.allowed_san_types)),
        None if item.include_ca_in_reply is None else int(item.include_ca_in_reply),
        opt_to_us(item.deleted_at),
        int(item.require_approval),
        int(item.revoke_superseded),
        item.validator,
        item.validator_settings,
        item.validator_secret_encrypted,
        username_key(item.username),
    )


def username_key(username: str) -> str:
    """The case-insensitive lookup key of a username."""
    return username.casefold()


def integration_from_row(row: Row) -> Integration:
    san_types = json.loads(_str(row[9]))
    return Integration(
        id=_str(row[0]),
        name=_str(row[1]),
        subject_template=_str(row[2]),
        created_at=from_us(row[3]),
        validity_days=_int(row[4]),
        username=_str(row[5]),
        password_scrypt=_opt_str(row[6]),
        nt_hash_encrypted=_opt_bytes(row[7]),
        allow_basic=_opt_bool(row[8]),
        allowed_san_types=tuple(str(s) for s in san_types),
        include_ca_in_reply=_opt_bool(row[10]),
        deleted_at=opt_from_us(row[11]),
        require_approval=bool(row[12]),
        revoke_superseded=bool(row[13]),
        validator=_str(row[14]),
        validator_settings=_str(row[15]),
        validator_secret_encrypted=_opt_bytes(row[16]),
    )


def certificate_params(cert: CertificateRecord, created_at: datetime) -> tuple[object, ...]:
    """Values for CERTIFICATE_COLUMNS; ``created_at`` is used when the record has none."""
    return (
        cert.serial,
        cert.integration_id,
        cert.issuer_fingerprint,
        cert.subject,
        to_us(cert.not_before),
        to_us(cert.not_after),
        cert.der,
        cert.transaction_id,
        cert.pubkey_sha256,
        cert.message_type,
        cert.requester_address,
        cert.user_agent,
        cert.status.value,
        opt_to_us(cert.revoked_at),
        cert.revocation_reason,
        to_us(cert.created_at or created_at),
    )


def certificate_from_row(row: Row) -> CertificateRecord:
    """A row selected as CERTIFICATE_READ_COLUMNS."""
    der = row[6]
    assert isinstance(der, bytes)
    return CertificateRecord(
        serial=_str(row[0]),
        integration_id=_str(row[1]),
        issuer_fingerprint=_str(row[2]),
        subject=_str(row[3]),
        not_before=from_us(row[4]),
        not_after=from_us(row[5]),
        der=der,
        transaction_id=_str(row[7]),
        pubkey_sha256=_str(row[8]),
        message_type=_int(row[9]),
        requester_address=_opt_str(row[10]),
        user_agent=_opt_str(row[11]),
        status=CertStatus(_str(row[12])),
        revoked_at=opt_from_us(row[13]),
        revocation_reason=_opt_str(row[14]),
        created_at=from_us(row[15]),
        superseded_by=_opt_str(row[16]),
    )


def transaction_params(txn: Transaction) -> tuple[object, ...]:
    return (
        txn.integration_id,
        txn.transaction_id,
        txn.pubkey_sha256,
        txn.status.value,
        txn.serial,
        txn.message_type,
        txn.csr_der,
        to_us(txn.created_at),
        txn.renews,
    )


def transaction_from_row(row: Row) -> Transaction:
    return Transaction(
        integration_id=_str(row[0]),
        transaction_id=_str(row[1]),
        pubkey_sha256=_str(row[2]),
        status=TransactionStatus(_str(row[3])),
        serial=_opt_str(row[4]),
        message_type=_int(row[5]),
        csr_der=_opt_bytes(row[6]),
        created_at=from_us(row[7]),
        renews=_opt_str(row[8]),
    )


def revoked_from_row(row: Row) -> RevokedEntry:
    return RevokedEntry(serial=_str(row[0]), revoked_at=from_us(row[1]), reason=_opt_str(row[2]))
