"""``scep-ca integration ...`` and ``scep-ca challenge new``: what an MDM admin pastes."""

from __future__ import annotations

import argparse

from audit.events import Event
from audit.service import AuditSink, Draft, integration_target, os_actor
from challenge.issuer import issue_challenge
from challenge.secret_key import load_or_create_secret_key
from challenge.urls import challenge_url as web_challenge_url
from config import Config
from scep_ca.cli.audit_cmds import cli_audit_log
from scep_ca.cli.context import (
    CliError,
    NoLiveIntegration,
    colon_fingerprint,
    live_integration,
    load_identity,
    opened_store,
    print_fields,
    print_json,
    print_table,
    run_async,
)
from scep_ca.cli.validator_cmds import add_create_arguments, describe_validator, register_test, validator_input
from scep_ca.pki.records import Integration
from scep_ca.services.integrations import IntegrationInputError, IntegrationService, IntegrationSpec
from scep_ca.services.validators.settings import ValidatorKind
from store.base import IntegrationStore


def scep_url(config: Config, integration_id: str) -> str:
    return f"{config.base_url}/scep/{integration_id}"


def challenge_url(config: Config, integration_id: str) -> str:
    return web_challenge_url(config.base_url, integration_id)


def describe(config: Config, integration: Integration, ca_fingerprint: str) -> dict[str, object]:
    return {
        "id": integration.id,
        "name": integration.name,
        "scep_url": scep_url(config, integration.id),
        "subject": integration.subject_template,
        "challenge_url": challenge_url(config, integration.id),
        "username": integration.username,
        "ca_fingerprint_sha256": ca_fingerprint,
        "validity_days": integration.validity_days,
        "require_approval": integration.require_approval,
        "revoke_superseded": integration.revoke_superseded,
        "created_at": integration.created_at.isoformat(),
        "deleted_at": integration.deleted_at.isoformat() if integration.deleted_at else None,
        **describe_validator(integration),
    }


def _service(config: Config, store: IntegrationStore, audit: AuditSink) -> IntegrationService:
    key = load_or_create_secret_key(config.data_dir)
    return IntegrationService(store, key, config.certificate.validity_days, audit=audit)


async def _create(config: Config, args: argparse.Namespace) -> int:
    ca = load_identity(config)
    spec = IntegrationSpec(
        name=args.name,
        subject=args.subject,
        validity_days=args.validity_days,
        allow_basic=args.basic,
        require_approval=args.require_approval,
        revoke_superseded=args.revoke_superseded,
        include_ca_in_reply=args.include_ca,
        validator=validator_input(args),
    )
    async with opened_store(config) as store:
        try:
            created = await _service(config, store, cli_audit_log(config, store)).create(spec, actor=os_actor())
        except IntegrationInputError as exc:
            flag = f"--{exc.field.replace('_', '-')}: " if exc.field else ""
            raise CliError(flag + exc.problem) from exc
    integration, password = created.integration, created.password
    info = describe(config, integration, ca.fingerprint_sha256)
    info["password"] = password
    info.update(created.shown)
    if args.json:
        print_json(info)
        return 0
    print(f"Integration {integration.name!r} created (id {integration.id}).")
    print()
    print("MDM values (Certificate Enrollment > SCEP):")
    print(f"  SCEP URL:       {info['scep_url']}")
    print(f"  Subject:        {info['subject']}")
    print(f"  Challenge URL:  {info['challenge_url']}")
    print(f"  Username:       {info['username']}")
    print(f"  Password:       {password}")
    print()
    print("Challenge Type: Microsoft SCEP. The password is shown only now; `integration rotate-password`")
    print("replaces it.")
    print(f"CA fingerprint (SHA-256): {colon_fingerprint(ca.fingerprint_sha256)}")
    if integration.validator != ValidatorKind.NDES:
        print(f"Validator: {integration.validator} (see `integration show {integration.id}`)")
    for name, value in created.shown:
        print(f"{name} (shown only now): {value}")
    return 0


async def _rotate_password(config: Config, args: argparse.Namespace) -> int:
    async with opened_store(config) as store:
        integration = await live_integration(store, args.id)
        service = _service(config, store, cli_audit_log(config, store))
        creds = await service.rotate_password(integration.id, actor=os_actor())
    if creds is None:
        raise NoLiveIntegration(args.id)
    if args.json:
        print_json({"id": args.id, "username": creds.username, "password": creds.password})
        return 0
    print(f"New credentials for {args.id} (the old password no longer works):")
    print(f"  Username:       {creds.username}")
    print(f"  Password:       {creds.password}")
    return 0


async def _list(config: Config, args: argparse.Namespace) -> int:
    ca = load_identity(config)
    async with opened_store(config) as store:
        integrations = await store.list_integrations(include_deleted=args.all)
    if args.json:
        print_json([describe(config, i, ca.fingerprint_sha256) for i in integrations])
        return 0
    print_table(
        ["ID", "NAME", "SUBJECT", "CREATED", "STATUS"],
        [
            [
                i.id,
                i.name,
                i.subject_template,
                i.created_at.strftime("%Y-%m-%d %H:%M"),
                "deleted" if i.deleted else "active",
            ]
            for i in integrations
        ],
    )
    return 0


async def _show(config: Config, args: argparse.Namespace) -> int:
    ca = load_identity(config)
    async with opened_store(config) as store:
        integration = await store.get_integration(args.id, include_deleted=True)
        if integration is None:
            raise CliError(f"no integration {args.id!r}")
        issued = await store.count_certificates(integration.id)
    info = describe(config, integration, ca.fingerprint_sha256)
    info["certificates"] = issued
    if args.json:
        print_json(info)
        return 0
    print_fields(info, 24)
    return 0


async def _challenge_new(config: Config, args: argparse.Namespace) -> int:
    async with opened_store(config) as store:
        integration = await live_integration(store, args.id)
        issued = Draft(
            Event.CHALLENGE_ISSUED,
            integration_target(integration.id),
            {"integration": integration.id},
            actor=os_actor(),
        )
        with cli_audit_log(config, store).recording(issued) as seal:
            password = await issue_challenge(store, config.challenge, integration.id, audit=seal)
    if password is None:
        raise CliError(
            f"the challenge cache of {args.id} is full ({config.challenge.max_unused} unused); "
            "use or let them expire, or raise challenge.max_unused"
        )
    print(password)
    return 0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Adds the ``integration`` and ``challenge`` groups; returns the integration sub-parsers."""
    p = sub.add_parser("integration", help="MDM integrations")
    isub = p.add_subparsers(dest="integration_cmd", required=True)
    c = isub.add_parser("create", parents=[common], help="create an integration and print the MDM values")
    c.add_argument("name")
    c.add_argument("--subject", help="subject template, e.g. 'CN=$USERID$,O=Example' (default CN=$USERID$)")
    c.add_argument("--validity-days", type=int)
    c.add_argument(
        "--basic",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="allow Basic on the challenge URL (default: only over TLS or from loopback); NTLM always works",
    )
    c.add_argument("--require-approval", action="store_true", help="answer PENDING until `scep-ca request approve`")
    c.add_argument("--revoke-superseded", action="store_true", help="a renewal revokes the certificate it replaces")
    c.add_argument(
        "--include-ca",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="put the CA certificate in the certs-only reply (default: scep.include_ca_in_reply)",
    )
    add_create_arguments(c)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_async(_create))
    c = isub.add_parser("rotate-password", parents=[common], help="issue a new challenge-URL password")
    c.add_argument("id")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_async(_rotate_password))
    c = isub.add_parser("list", parents=[common], help="list integrations")
    c.add_argument("--all", action="store_true", help="include deleted ones")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_async(_list))
    c = isub.add_parser("show", parents=[common], help="show one integration")
    c.add_argument("id")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_async(_show))
    register_test(isub, common)
    p = sub.add_parser("challenge", help="one-time enrollment challenges")
    csub = p.add_subparsers(dest="challenge_cmd", required=True)
    c = csub.add_parser("new", parents=[common], help="print a fresh one-time challenge")
    c.add_argument("id")
    c.set_defaults(func=run_async(_challenge_new))
    return isub
