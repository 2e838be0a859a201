"""RA renewal from the command line: ``scep-ca ra renew`` and ``serve``'s renewal at start."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import TYPE_CHECKING

from audit.events import SYSTEM
from audit.service import os_actor
from config import Config
from config.clock import utc_now
from scep_ca.cli.audit_cmds import cli_audit_log
from scep_ca.cli.context import CliError, ca_passphrase, config_from_args, key_token, opened_store
from scep_ca.pki.ca import CAError, CAIdentity, load_ca
from scep_ca.pki.pkcs11_keys import Token, in_child
from scep_ca.pki.ra_renewal import Renewed, renew_ra
from scep_ca.services.ra_renewal import LoadIdentity, RaRenewer, RenewalEvents, RenewFiles

if TYPE_CHECKING:
    from scep_ca.services.notify import Notifier


def notifier_for(config: Config) -> Notifier | None:
    """The notifier of ``notify.webhook_url``, or None; its secret comes from ``notify.secret_env``."""
    settings = config.notify
    if settings.webhook_url is None:
        return None
    # With its HTTP client (aiohttp): loaded by the commands that notify, not by every command.
    from scep_ca.services.notify import Notifier, NotifySecretError, decode_secret

    assert settings.secret_env is not None  # config.validate: required with webhook_url
    value = os.environ.get(settings.secret_env)
    if not value:
        raise CliError(f"notify.secret_env names {settings.secret_env}, which is not set")
    try:
        return Notifier(settings, decode_secret(value))
    except NotifySecretError as exc:
        raise CliError(f"{settings.secret_env}: {exc}") from exc


def identity_loader(config: Config, token: Token | None = None) -> LoadIdentity:
    """Loads the CA identity again (RA reloads); ``token``: the process's one Token, else a new one."""
    passphrase, token = ca_passphrase(config), token or key_token(config)

    def load() -> CAIdentity:
        return load_ca(config.data_dir, passphrase, token, ra_validity_days=config.ra.validity_days)

    return load


def ra_files_renewer(config: Config, *, fork: bool, token: Token | None = None) -> RenewFiles:
    """``renew_ra`` with the configured keys; with ``fork`` and a token, in a forked child
    (the caller forks workers later and must hold no PKCS#11 state, see ``in_child``)."""
    passphrase, token = ca_passphrase(config), token or key_token(config)

    def renew(identity: CAIdentity, usages: tuple[str, ...]) -> None:
        def work() -> None:
            renew_ra(
                config.data_dir,
                identity,
                usages,
                passphrase=passphrase,
                token=token,
                validity_days=config.ra.validity_days,
                now=utc_now(),
            )

        if token is None or not fork:
            work()
            return
        problem = in_child(work)
        if problem is not None:
            raise CAError(f"RA renewal failed: {problem}")

    return renew


async def renew_ra_now(
    config: Config, *, force: bool = False, events: RenewalEvents | None = None, actor: str = SYSTEM
) -> tuple[Renewed, ...]:
    """Renew what is due (everything with ``force``) under the store lease; what this process
    renewed. ``actor``: whom the audit log names (``serve``'s start: ``system``; ``ra renew``:
    the operator)."""
    async with opened_store(config) as store:
        renewer = RaRenewer(
            store,
            identity_loader(config),
            ra_files_renewer(config, fork=True),
            config.ra.renew_before_days,
            events,
            audit=cli_audit_log(config, store),
            actor=actor,
        )
        return await renewer.renew_due(force=force)


async def _renew_and_notify(config: Config, force: bool) -> tuple[Renewed, ...]:
    notifier = notifier_for(config)
    if notifier is None:
        return await renew_ra_now(config, force=force, actor=os_actor())
    from scep_ca.services.notify import NotifyingRenewalEvents

    try:
        renewed = await renew_ra_now(config, force=force, events=NotifyingRenewalEvents(notifier), actor=os_actor())
        await notifier.drain()
    finally:
        await notifier.close()
    return renewed


def cmd_ra_renew(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    try:
        renewed = asyncio.run(_renew_and_notify(config, args.all))
    except CAError as exc:
        raise CliError(str(exc)) from exc
    if not renewed:
        print(
            f"nothing renewed: no RA certificate expires within ra.renew_before_days ({config.ra.renew_before_days}), "
            "or another process is renewing it (use --all to renew anyway)"
        )
        return 0
    for item in renewed:
        print(
            f"renewed the {item.usage} RA: serial {item.new.serial_number:x}, "
            f"valid until {item.new.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    print("running servers switch to it within a minute; requests encrypted to the old one are still decrypted")
    return 0
