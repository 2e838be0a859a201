"""``integration create --validator ...`` options and ``integration test-validator``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from challenge.secret_key import load_or_create_secret_key
from config import Config
from scep_ca.cli.context import CliError, live_integration, load_identity, opened_store, print_json, run_async
from scep_ca.pki.records import Integration
from scep_ca.services.integrations import ValidatorInput
from scep_ca.services.validators.settings import (
    KINDS,
    SettingsError,
    ValidatorKind,
    intune_settings,
    webhook_settings,
)

INTUNE_SECRET_ENV = "SCEP_CA_INTUNE_CLIENT_SECRET"
_MAX_SECRET_CHARS = 1024


def add_create_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--validator", choices=KINDS, default="ndes", help="how requests are judged (default ndes)")
    c.add_argument("--intune-tenant", help="Entra tenant id or domain (intune)")
    c.add_argument("--intune-client-id", help="application (client) id of the Entra app registration (intune)")
    c.add_argument(
        "--intune-client-secret-stdin",
        action="store_true",
        help=f"read the client secret from standard input (else from {INTUNE_SECRET_ENV})",
    )
    c.add_argument("--webhook-url", help="validation webhook, https:// (webhook)")
    c.add_argument("--webhook-notify-url", help="optional webhook told about each issued certificate (webhook)")
    c.add_argument(
        "--webhook-pin-sha256",
        help="SHA-256 (hex) of the receiver's TLS certificate, trusted instead of the system's CAs (webhook)",
    )


def _intune_secret(args: argparse.Namespace) -> str:
    if args.intune_client_secret_stdin:
        secret = sys.stdin.readline().strip()
    else:
        secret = os.environ.get(INTUNE_SECRET_ENV, "").strip()
    if not secret:
        raise CliError(f"the Intune client secret comes from {INTUNE_SECRET_ENV} or --intune-client-secret-stdin")
    if len(secret) > _MAX_SECRET_CHARS:
        raise CliError("the Intune client secret is too long")
    return secret


# The ``integration create`` options that belong to each kind (argparse attribute names).
_OPTIONS = {
    ValidatorKind.INTUNE: ("intune_tenant", "intune_client_id", "intune_client_secret_stdin"),
    ValidatorKind.WEBHOOK: ("webhook_url", "webhook_notify_url", "webhook_pin_sha256"),
}


def validator_input(args: argparse.Namespace) -> ValidatorInput:
    """The validator options as the integration service takes them; the option combinations
    are checked here, in the flags' own words, the values by the service."""
    kind = ValidatorKind(args.validator)
    for other, options in _OPTIONS.items():
        if other is not kind and any(getattr(args, option) for option in options):
            raise CliError(f"--{other.value}-* options need --validator {other.value}")
    if kind is not ValidatorKind.NDES and args.require_approval:
        # Approval issues from the CLI, hours later: Intune's transaction would have expired.
        raise CliError("--require-approval works with --validator ndes only")
    if kind is ValidatorKind.INTUNE and not (args.intune_tenant and args.intune_client_id):
        raise CliError("--validator intune needs --intune-tenant and --intune-client-id")
    if kind is ValidatorKind.WEBHOOK and not args.webhook_url:
        raise CliError("--validator webhook needs --webhook-url")
    return ValidatorInput(
        kind=kind.value,
        intune_tenant=args.intune_tenant,
        intune_client_id=args.intune_client_id,
        intune_client_secret=_intune_secret(args) if kind is ValidatorKind.INTUNE else None,
        webhook_url=args.webhook_url,
        webhook_notify_url=args.webhook_notify_url,
        webhook_pin_sha256=args.webhook_pin_sha256,
    )


def _describe_intune(settings: str) -> dict[str, object]:
    s = intune_settings(settings)
    return {"intune_tenant": s.tenant, "intune_client_id": s.client_id}


def _describe_webhook(settings: str) -> dict[str, object]:
    w = webhook_settings(settings)
    return {"webhook_url": w.url, "webhook_notify_url": w.notify_url, "webhook_pin_sha256": w.tls_pin_sha256}


# Each kind's non-secret settings as ``integration show`` lists them (ndes has none).
_DESCRIBE: dict[ValidatorKind, Callable[[str], dict[str, object]]] = {
    ValidatorKind.NDES: lambda settings: {},
    ValidatorKind.INTUNE: _describe_intune,
    ValidatorKind.WEBHOOK: _describe_webhook,
}


def describe_validator(integration: Integration) -> dict[str, object]:
    """The validator's non-secret settings, for ``integration show``."""
    info: dict[str, object] = {"validator": integration.validator}
    try:
        info.update(_DESCRIBE[ValidatorKind(integration.validator)](integration.validator_settings))
    except ValueError:
        info["validator_problem"] = f"unknown validator kind {integration.validator!r}"
    except SettingsError as exc:
        info["validator_problem"] = str(exc)
    if integration.allowed_san_types:
        info["allowed_san_types"] = list(integration.allowed_san_types)
    return info


async def _test_validator(config: Config, args: argparse.Namespace) -> int:
    # The validators' HTTP client (aiohttp) loads for the commands that call out, not for every command.
    from scep_ca.services.validators.http import HttpFailure
    from scep_ca.services.validators.intune import IntuneError, IntuneValidator
    from scep_ca.services.validators.registry import Misconfigured, Validators
    from scep_ca.services.validators.webhook import WebhookValidator

    ca = load_identity(config)
    async with opened_store(config) as store:
        integration = await live_integration(store, args.id)
    if integration.validator == ValidatorKind.NDES:
        raise CliError("this integration uses one-time challenges (ndes): nothing to call")
    validators = Validators(
        config.intune, config.webhook, load_or_create_secret_key(config.data_dir), ca.cert.subject.rfc4514_string()
    )
    try:
        validator = validators.unbounded(integration)
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
