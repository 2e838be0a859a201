"""``integration create --validator ...`` options and ``integration test-validator``."""

from __future__ import annotations

import argparse
import os
import sys

from challenge.secret_key import load_or_create_secret_key
from config import Config
from scep_ca.cli.context import CliError, load_identity, opened_store, print_json, run_async
from scep_ca.pki.records import Integration
from scep_ca.services.integrations import ValidatorInput
from scep_ca.services.validators.http import HttpFailure
from scep_ca.services.validators.intune import IntuneError, IntuneValidator
from scep_ca.services.validators.registry import Misconfigured, Validators
from scep_ca.services.validators.settings import KINDS, SettingsError, intune_settings, webhook_settings
from scep_ca.services.validators.webhook import WebhookValidator

INTUNE_SECRET_ENV = "SCEP_CA_INTUNE_CLIENT_SECRET"


def add_create_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--validator", choices=KINDS, default="ndes", help="how requests are judged (default ndes)")
    c.add_argument("--intune-tenant", help="Entra tenant id or domain (intune)")
    c.add_argument("--intune-client-id", help="application (client) id of the Entra app registration (intune)")
    c.add_argument(
        "--intune-client-secret-stdin",
        action="store_true",
        help=f"read the client secret from standard input (else from {INTUNE_SECRET_ENV})",
    )
    c.add_argument("--webhook-url", help="validation webhook: https://, or http:// to loopback (webhook)")
    c.add_argument("--webhook-notify-url", help="optional webhook told about each issued certificate (webhook)")


def _intune_secret(args: argparse.Namespace) -> str:
    if args.intune_client_secret_stdin:
        secret = sys.stdin.readline().strip()
    else:
        secret = os.environ.get(INTUNE_SECRET_ENV, "").strip()
    if not secret:
        raise CliError(f"the Intune client secret comes from {INTUNE_SECRET_ENV} or --intune-client-secret-stdin")
    return secret


def validator_input(args: argparse.Namespace) -> ValidatorInput:
    """The validator options as the integration service takes them (its checks name what is wrong)."""
    if args.validator != "intune" and (args.intune_tenant or args.intune_client_id or args.intune_client_secret_stdin):
        raise CliError("--intune-* options need --validator intune")
    if args.validator != "webhook" and (args.webhook_url or args.webhook_notify_url):
        raise CliError("--webhook-* options need --validator webhook")
    if args.validator != "ndes" and args.require_approval:
        raise CliError("--require-approval works with --validator ndes only")
    return ValidatorInput(
        kind=args.validator,
        intune_tenant=args.intune_tenant,
        intune_client_id=args.intune_client_id,
        intune_client_secret=_intune_secret(args) if args.validator == "intune" else None,
        webhook_url=args.webhook_url,
        webhook_notify_url=args.webhook_notify_url,
    )


def describe_validator(integration: Integration) -> dict[str, object]:
    """The validator's non-secret settings, for ``integration show``."""
    info: dict[str, object] = {"validator": integration.validator}
    try:
        if integration.validator == "intune":
            s = intune_settings(integration.validator_settings)
            info.update(intune_tenant=s.tenant, intune_client_id=s.client_id)
        elif integration.validator == "webhook":
            w = webhook_settings(integration.validator_settings)
            info.update(webhook_url=w.url, webhook_notify_url=w.notify_url)
    except SettingsError as exc:
        info["validator_problem"] = str(exc)
    if integration.allowed_san_types:
        info["allowed_san_types"] = list(integration.allowed_san_types)
    return info


async def _test_validator(config: Config, args: argparse.Namespace) -> int:
    ca = load_identity(config)
    async with opened_store(config) as store:
        integration = await store.get_integration(args.id)
    if integration is None:
        raise CliError(f"no live integration {args.id!r}")
    if integration.validator == "ndes":
        raise CliError("this integration uses one-time challenges (ndes): nothing to call")
    validators = Validators(
        config.intune, config.webhook, load_or_create_secret_key(config.data_dir), ca.cert.subject.rfc4514_string()
    )
    try:
        validator = validators.for_integration(integration)
        if isinstance(validator, Misconfigured):
            raise CliError(f"validator unusable: {validator.problem}")
        assert isinstance(validator, IntuneValidator | WebhookValidator)
        try:
            steps = await validator.check()
            ok = True
        except (IntuneError, HttpFailure) as exc:
            steps, ok = [f"failed: {exc}"], False
    finally:
        await validators.close()
    if args.json:
        print_json({"id": integration.id, "validator": integration.validator, "ok": ok, "steps": steps})
    else:
        for step in steps:
            print(step)
        print("OK" if ok else "FAILED")
    return 0 if ok else 1


def register_test(isub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    c = isub.add_parser(
        "test-validator", parents=[common], help="token and discovery (intune) or a signed test call (webhook)"
    )
    c.add_argument("id")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_async(_test_validator))
