"""``scep-ca status``: one screen (or ``--json``) of what expires when; exit 1 when action is due.

Exit statuses: 0 nothing needs action within 30 days; 1 something does (a cron job or a
monitoring check alerts on it); 3 the store is unavailable (``scep_ca.cli.main``).
"""

from __future__ import annotations

import argparse
import asyncio

from cryptography import x509

from config import Config
from config.clock import utc_now
from scep_ca.cli.context import ca_passphrase, config_from_args, key_token, opened_store, print_json
from scep_ca.pki.ca_set import load_ca_set
from scep_ca.pki.cert_format import format_table
from scep_ca.services.status_report import CrlFacts, StatusReport, build_status, crl_facts

FETCH_SECONDS = 5.0


async def _fetch_crl(config: Config, ca: x509.Certificate) -> CrlFacts:
    """The CRL from the running server: its number and nextUpdate are what relying parties see.

    Its signature is checked against the CA, so the channel needs no TLS verification (a
    server with its own ``tls.cert`` is often not in the system's trust store)."""
    import aiohttp  # loaded by `status` alone, not by every command

    url = f"{config.base_url}/crl/ca.crl"
    try:
        timeout = aiohttp.ClientTimeout(total=FETCH_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, ssl=False) as resp:
            if resp.status != 200:
                return CrlFacts(error=f"{url} answered HTTP {resp.status}")
            der = await resp.read()
        return crl_facts(der, utc_now(), ca)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return CrlFacts(error=f"{url}: {type(exc).__name__}: {exc}".rstrip(": "))


async def _status(config: Config) -> StatusReport:
    cas = load_ca_set(config.data_dir, ca_passphrase(config), key_token(config))
    crl = await _fetch_crl(config, cas.current.cert)
    async with opened_store(config) as store:
        return await build_status(store, cas, crl, utc_now(), config.ra.renew_before_days)


def render(report: StatusReport) -> str:
    lines = [
        format_table(
            [
                (c.role, c.serial, c.not_after[:16].replace("T", " "), str(c.days_left), c.subject)
                for c in report.certificates
            ],
            ("CERTIFICATE", "SERIAL", "NOT AFTER (UTC)", "DAYS LEFT", "SUBJECT"),
        ),
        "",
    ]
    crl = report.crl
    if crl.error is not None:
        lines.append(f"CRL: not fetched ({crl.error})")
    else:
        when = (crl.next_update or "-")[:16].replace("T", " ")
        lines.append(f"CRL: number {crl.number}, next update {when} UTC ({crl.days_left} days)")
    lines.append("")
    lines.append(
        format_table(
            [
                (
                    i.id,
                    i.name + (" (deleted)" if i.deleted else ""),
                    str(i.valid),
                    str(i.revoked),
                    str(i.expiring_7d),
                    str(i.expiring_30d),
                )
                for i in report.integrations
            ],
            ("INTEGRATION", "NAME", "VALID", "REVOKED", "EXPIRING 7D", "EXPIRING 30D"),
        )
        if report.integrations
        else "no integrations"
    )
    lines.append("")
    if report.warnings:
        lines += [f"warning: {w}" for w in report.warnings]
    lines.append("action needed within 30 days" if report.action_needed else "nothing needs action within 30 days")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    report = asyncio.run(_status(config))
    if args.json:
        print_json(report.to_json())
    else:
        print(render(report))
    return 1 if report.action_needed else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "status",
        parents=[common],
        help="CA, RA and CRL expiry, certificates per integration; exit 1 when action is due within 30 days",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
