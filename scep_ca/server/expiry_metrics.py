"""Expiry metrics at ``/metrics`` (issue 21, item 3); the names are fixed for dashboards and alerts.

- ``scep_ca_ca_not_after_timestamp_seconds``: the current CA certificate's notAfter;
- ``scep_ca_ra_not_after_timestamp_seconds{usage}``: each RA certificate GetCACert serves
  (``signing`` and ``encryption``, or ``combined``), following renewals without a restart;
- ``scep_ca_certificates{integration,status}`` (``valid``, ``revoked``) and
  ``scep_ca_certificates_expiring{integration,within}`` (``7d``, ``30d``): from
  ``services.expiry.CountsCache``, at most ``metrics.counts_max_age_seconds`` old;
- ``scep_ca_store_up``: whether the last of those counts reached the store (1) or not (0);
- ``scep_ca_audit_last_checkpoint_timestamp_seconds``: when an audit checkpoint source is wired.

Every value is the same whichever worker answers the scrape, so none carries a ``worker`` label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.ra_renewal import ra_certificates
from scep_ca.services.expiry import EXPIRING_WITHIN, CountsCache
from store.base import CertificateCounts

# The Unix time of the last audit checkpoint, None before the first (issue 18's audit log).
CheckpointSource = Callable[[], float | None]


class ExpiryCollector:
    def __init__(self, ca: CAIdentity, counts: CountsCache, checkpoint: CheckpointSource | None = None) -> None:
        self._ca = ca
        self._counts = counts
        self._checkpoint = checkpoint
        self._rows: Iterable[CertificateCounts] = ()

    def use_ca(self, ca: CAIdentity) -> None:
        self._ca = ca

    async def refresh(self) -> None:
        rows = await self._counts.current()
        if rows is not None:
            self._rows = rows

    def describe(self) -> Iterable[Metric]:
        return list(self._families(with_samples=False))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(with_samples=True))

    def _families(self, *, with_samples: bool) -> Iterable[Metric]:
        ca = GaugeMetricFamily("scep_ca_ca_not_after_timestamp_seconds", "notAfter of the current CA certificate")
        ra = GaugeMetricFamily(
            "scep_ca_ra_not_after_timestamp_seconds",
            "notAfter of each RA certificate GetCACert serves",
            labels=["usage"],
        )
        certs = GaugeMetricFamily(
            "scep_ca_certificates",
            "Issued certificates by integration: valid (unrevoked, unexpired) and revoked",
            labels=["integration", "status"],
        )
        expiring = GaugeMetricFamily(
            "scep_ca_certificates_expiring",
            "Valid certificates by integration whose notAfter is within 7 or 30 days",
            labels=["integration", "within"],
        )
        store_up = GaugeMetricFamily(
            "scep_ca_store_up", "1 when the last certificate count reached the store, 0 when it could not"
        )
        families = [ca, ra, certs, expiring, store_up]
        if self._checkpoint is not None:
            checkpoint = GaugeMetricFamily(
                "scep_ca_audit_last_checkpoint_timestamp_seconds", "Time of the last signed audit checkpoint"
            )
            families.append(checkpoint)
            when = self._checkpoint() if with_samples else None
            if when is not None:
                checkpoint.add_metric([], when)
        if with_samples:
            if self._counts.store_up is not None:
                store_up.add_metric([], 1.0 if self._counts.store_up else 0.0)
            ca.add_metric([], self._ca.cert.not_valid_after_utc.timestamp())
            for item in ra_certificates(self._ca):
                ra.add_metric([item.usage], item.not_after.timestamp())
            for row in self._rows:
                certs.add_metric([row.integration_id, "valid"], row.valid)
                certs.add_metric([row.integration_id, "revoked"], row.revoked)
                for within, count in zip(EXPIRING_WITHIN, row.expiring, strict=True):
                    expiring.add_metric([row.integration_id, within], count)
        return families
