"""The audit event types (CA/Browser Forum Baseline Requirements section 5.4.1 lists what a CA logs).

One place for the names: services pass these, ``scep-ca audit list --event`` filters by them.
"""

from __future__ import annotations

import enum


class Event(enum.StrEnum):
    # The log itself.
    LOG_STARTED = "audit.log_started"
    CHECKPOINT = "audit.checkpoint"
    VERIFIED = "audit.verify"
    # SCEP (RFC 8894 section 3.3).
    CERT_ISSUED = "scep.issued"
    CERT_RENEWED = "scep.renewed"
    CERT_CONFIRMED = "scep.confirmed"  # a certificate held until its validator confirmed it, released
    REQUEST_REFUSED = "scep.refused"
    REQUEST_PENDING = "scep.pending"
    REQUEST_APPROVED = "scep.approved"
    REQUEST_REJECTED = "scep.rejected"
    # Revocation.
    CERT_REVOKED = "cert.revoked"
    INTEGRATION_DELETED = "integration.deleted"
    # Integrations.
    INTEGRATION_CREATED = "integration.created"
    PASSWORD_ROTATED = "integration.password_rotated"
    # Challenge URL.
    CHALLENGE_ISSUED = "challenge.issued"
    LOGIN_FAILED = "challenge.login_failed"
    LOCKOUT_STARTED = "challenge.lockout_started"
    # Keys and CA (file operations: recorded right after they succeed).
    CA_INIT = "ca.init"
    CA_ROLLOVER = "ca.rollover"
    CA_ACTIVATE_NEXT = "ca.activate_next"
    RA_CREATED = "ra.created"
    RA_RENEWED = "ra.renewed"  # by itself (serve) or on demand (ra renew)
    KEY_IMPORTED = "key.imported"
    # The operator console (scep_ca/console) and its accounts (`scep-ca admin`): who, from where.
    LOGIN = "console.login"
    CONSOLE_LOGIN_FAILED = "console.login_failed"
    LOGOUT = "console.logout"
    INTEGRATION_CREATE = "integration.create"
    INTEGRATION_ROTATE = "integration.rotate_password"
    INTEGRATION_DELETE = "integration.delete"
    CHALLENGE_ISSUE = "challenge.issue"
    CERTIFICATE_REVOKE = "certificate.revoke"
    REQUEST_APPROVE = "request.approve"
    REQUEST_REJECT = "request.reject"
    ADMIN_CREATE = "admin.create"
    ADMIN_DISABLE = "admin.disable"
    ADMIN_RESET_PASSWORD = "admin.reset_password"
    # Operations.
    SERVER_START = "server.start"
    SERVER_STOP = "server.stop"
    CRL_ISSUED = "crl.issued"
    # Backups (scep_ca.services.backup).
    BACKUP_CREATED = "backup.created"
    BACKUP_RESTORED = "backup.restored"  # the first record of a restored log's new chains
    AUDIT_REPLAYED = "audit.replayed"  # an old host's exported events put back after a restore


SYSTEM = "system"  # the actor of the server's own actions
