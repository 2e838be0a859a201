"""Which CRL shard a certificate belongs to (RFC 5280 section 5.2.5, partitioned CRLs).

A certificate's shard is fixed when it is issued: its CRL distribution point names
``/crl/<ca id>/<shard>.crl`` and the store keeps the number, so changing
``revocation.crl_shards`` later moves no existing certificate (their CDPs cannot change).
The shard is the serial modulo the number of shards: serials are 159 random bits
(``scep_ca.pki.issue.random_serial``), so every shard receives an equal share of every
integration's certificates, and a shard holds about (revoked certificates) / shards entries
however the certificates are spread over integrations (README "Revocation").
"""

from __future__ import annotations

from config.model import MAX_CRL_SHARDS

__all__ = ["MAX_CRL_SHARDS", "shard_of", "valid_shard"]


def shard_of(serial: int, shards: int) -> int | None:
    """The shard of a new certificate with this serial, None when sharding is off (``shards`` 0)."""
    if shards <= 0:
        return None
    return serial % shards


def valid_shard(shard: int) -> bool:
    """Whether a shard number can name a shard of some configuration (the URL accepts it)."""
    return 0 <= shard < MAX_CRL_SHARDS
