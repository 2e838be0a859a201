"""What each console role may do. The server checks these on every request (403 otherwise);
the pages use the same table to hide what the role cannot do."""

from __future__ import annotations

import enum

from store.base import AdminRole


class Permission(enum.StrEnum):
    READ = "read"  # every page but the admins page, PEM downloads
    OPERATE = "operate"  # approve, reject, revoke, issue test challenges
    MANAGE = "manage"  # create, rotate, delete integrations; the admins page and its actions


_GRANTS: dict[AdminRole, frozenset[Permission]] = {
    AdminRole.AUDITOR: frozenset({Permission.READ}),
    AdminRole.OPERATOR: frozenset({Permission.READ, Permission.OPERATE}),
    AdminRole.ADMIN: frozenset(Permission),
}


def allows(role: AdminRole, permission: Permission) -> bool:
    return permission in _GRANTS[role]


class Forbidden(Exception):
    """The signed-in admin's role does not allow this action (HTTP 403)."""
