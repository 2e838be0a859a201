"""Building the services from the settings: shared by the server and the operator CLI.

Here rather than in ``scep_ca.server.app`` so that the CLI, which approves queued requests
offline, builds the same ``Enroller`` without importing the web server (aiohttp).
"""

from __future__ import annotations

import datetime as dt

from audit.service import AuditSink
from config.clock import Clock, utc_now
from config.model import Config
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.ca_set import CASet
from scep_ca.pki.certificate_factory import CertificateFactory
from scep_ca.services.enrollment import Enroller, EnrollmentStore, ValidatorSource
from scep_ca.services.revocation import RevocationService, RevocationServiceStore


def enroller_for(
    config: Config,
    store: EnrollmentStore,
    ca: CAIdentity,
    validators: ValidatorSource,
    clock: Clock = utc_now,
    audit: AuditSink | None = None,
) -> Enroller:
    """The enrollment decisions of ``ca``, wired from the settings they use (``audit``: where
    its decisions are recorded, in the transaction of each)."""
    return Enroller(
        store,
        CertificateFactory(ca, config.base_url, clock, config.revocation.crl_shards),
        validators,
        config.scep,
        config.certificate.key_sizes,
        clock,
        audit,
    )


def revocation_for(config: Config, store: RevocationServiceStore, cas: CASet, audit: AuditSink) -> RevocationService:
    """CRLs (full and sharded), OCSP and revocations of ``cas`` as a running server serves them
    (the SCEP server's and the console's)."""
    return RevocationService(
        store,
        cas,
        crl_next_update_hours=config.revocation.crl_next_update_hours,
        ocsp_validity=dt.timedelta(minutes=config.revocation.ocsp_validity_minutes),
        audit=audit,
        public_url=config.base_url,
    )
