"""``scep-ca cert ...``, ``scep-ca integration delete`` and ``scep-ca crl``: revocation for operators."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from audit.service import os_actor
from config import Config
from config.clock import utc_now
from config.files import replace_public
from scep_ca.cli.audit_cmds import cli_audit_log
from scep_ca.cli.context import (
    CliError,
    NoLiveIntegration,
    ca_passphrase,
    key_token,
    live_integration,
    load_identity,
    opened_store,
    print_fields,
    print_json,
    run_async,
)
from scep_ca.pki.ca_set import load_ca_set
from scep_ca.pki.cert_format import TABLE_COLUMNS, der_to_pem, format_table, record_to_dict, table_row
from scep_ca.pki.reasons import ReasonError, operator_reason_names
from scep_ca.pki.records import CertificateRecord
from scep_ca.pki.serials import Base, SerialError
from scep_ca.services.revocation import AmbiguousSerial, RevocationService
from store.base import CertificateSearch, CertSearchStatus, IntegrationNotFound

_STATUSES = ("issued", "revoked", "expired")


# A page of ``cert list``: one index range in the store however deep the page (keyset paging).
PAGE_DEFAULT = 100
PAGE_MAX = 10_000
_STATUS_FILTERS = {
    "issued": CertSearchStatus.VALID,
    "revoked": CertSearchStatus.REVOKED,
    "expired": CertSearchStatus.EXPIRED,
}


def _search(
    args: argparse.Namespace, now: dt.datetime, limit: int, after: tuple[dt.datetime, str] | None
) -> CertificateSearch:
    expiring_before = None
    if args.expiring is not None:
        if args.status not in (None, "issued"):
            raise CliError("--expiring lists valid (issued, unexpired) certificates: leave out --status")
        expiring_before = now + args.expiring
    return CertificateSearch(
        now=now,
        text=args.search,
        integration_id=args.integration,
        status=None if expiring_before else _STATUS_FILTERS.get(args.status),
        expiring_before=expiring_before,
        limit=limit,
        after=after,
    )


def _page_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= PAGE_MAX:
        raise argparse.ArgumentTypeError(f"a page holds 1 to {PAGE_MAX} certificates")
    return value


def cursor_of(record: CertificateRecord) -> str:
    """Where the next page starts: the last row's notAfter (UTC, microseconds) and serial."""
    return f"{record.not_after.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')},{record.serial}"


def parse_cursor(text: str) -> tuple[dt.datetime, str]:
    when, sep, serial = text.partition(",")
    try:
        parsed = dt.datetime.fromisoformat(when)
    except ValueError:
        parsed = None
    if not sep or parsed is None or parsed.tzinfo is None or not serial or not all(c in _HEX for c in serial):
        raise CliError(f"--after takes the value a previous page printed (NOTAFTER,SERIAL), not {text!r}")
    return parsed, serial


_HEX = frozenset("0123456789abcdef")


async def _list(config: Config, args: argparse.Namespace) -> int:
    """Certificates sorted by notAfter (soonest first), a page at a time; ``--all`` walks every page."""
    now = utc_now()
    limit = PAGE_MAX if args.all else args.limit
    after = parse_cursor(args.after) if args.after is not None else None
    records: list[CertificateRecord] = []
    async with opened_store(config) as store:
        while True:
            page = await store.search_certificates(_search(args, now, limit, after))
            records.extend(page)
            if not args.all or len(page) < limit:
                break
            after = (page[-1].not_after, page[-1].serial)
    if args.json:
        print_json([record_to_dict(r, now) for r in records])
    else:
        print(format_table([table_row(r, now) for r in records], TABLE_COLUMNS))
    if not args.all and len(records) == limit:
        print(f"more certificates: the next page is --after {cursor_of(records[-1])}", file=sys.stderr)
    return 0


async def _show(config: Config, args: argparse.Namespace) -> int:
    ca = load_identity(config)
    now = utc_now()
    async with opened_store(config) as store:
        record = await _find(RevocationService(store, ca), args.serial, args)
    info = record_to_dict(record, now, include_pem=args.pem)
    if args.json:
        print_json(info)
        return 0
    print_fields({key: value for key, value in info.items() if key != "pem"}, 22)
    if args.pem:
        sys.stdout.write(der_to_pem(record.der))
    return 0


async def _find(service: RevocationService, serial: str, args: argparse.Namespace) -> CertificateRecord:
    try:
        record = await service.find_certificate(serial, base=_base(args))
    except (SerialError, AmbiguousSerial) as exc:
        raise CliError(str(exc)) from exc
    if record is None:
        raise CliError(f"no certificate with serial {serial}")
    return record


def _base(args: argparse.Namespace) -> Base:
    if getattr(args, "decimal", False):
        return "dec"
    return "hex" if getattr(args, "hex", False) else "auto"


async def _revoke(config: Config, args: argparse.Namespace) -> int:
    ca = load_identity(config)
    async with opened_store(config) as store:
        service = RevocationService(store, ca, audit=cli_audit_log(config, store))
        record = await _find(service, args.serial, args)
        try:
            revoked = await service.revoke(record.serial, args.reason, base="hex", actor=os_actor())
        except ReasonError as exc:
            raise CliError(str(exc)) from exc
    if not revoked:
        raise CliError(f"certificate {record.serial} is already revoked")
    print(f"revoked {record.serial} ({args.reason}); the CRL and OCSP show it from the next request")
    return 0


def _confirm(prompt: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return input(f"{prompt} [y/N] ").strip().lower() in {"y", "yes"}


async def _delete(config: Config, args: argparse.Namespace) -> int:
    ca = load_identity(config)
    async with opened_store(config) as store:
        integration = await live_integration(store, args.id)
        count = await store.count_certificates(integration.id)
        if not args.yes and not _confirm(
            f"Delete integration {integration.id} ({integration.name!r}) and revoke its {count} certificate(s)?"
        ):
            raise CliError("not confirmed (use --yes to skip the question)")
        try:
            service = RevocationService(store, ca, audit=cli_audit_log(config, store))
            result = await service.delete_integration(integration.id, actor=os_actor())
        except IntegrationNotFound as exc:
            raise NoLiveIntegration(args.id) from exc
    if args.json:
        print_json({"id": integration.id, "revoked": result.revoked, "deleted_at": result.deleted_at.isoformat()})
    else:
        print(f"deleted integration {integration.id}; revoked {result.revoked} certificate(s) (cessationOfOperation)")
    return 0


async def _crl(config: Config, args: argparse.Namespace) -> int:
    cas = load_ca_set(config.data_dir, ca_passphrase(config), key_token(config))
    async with opened_store(config) as store:
        service = RevocationService(store, cas, crl_next_update_hours=config.revocation.crl_next_update_hours)
        if args.ca not in service.crl_names():
            raise CliError(f"no CA {args.ca!r}; known: {', '.join(sorted(service.crl_names()))}")
        der = await service.current_crl(args.ca)
    if args.out:
        try:
            replace_public(Path(args.out), der if not args.pem else _pem_crl(der).encode())
        except OSError as exc:
            raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
        print(f"wrote {args.out} ({len(der)} bytes DER)")
    elif args.pem or sys.stdout.isatty():
        sys.stdout.write(_pem_crl(der))
    else:
        sys.stdout.buffer.write(der)
    return 0


def _pem_crl(der: bytes) -> str:
    import base64

    body = base64.encodebytes(der).decode()
    return f"-----BEGIN X509 CRL-----\n{body}-----END X509 CRL-----\n"


def _days(text: str) -> dt.timedelta:
    """``30d`` (or ``30``): a number of days for ``--expiring``."""
    digits = text.strip().lower().removesuffix("d")
    if not digits.isdigit() or not 0 < int(digits) <= 36_500:
        raise argparse.ArgumentTypeError(f"expected a number of days such as 30d, got {text!r}")
    return dt.timedelta(days=int(digits))


def _serial_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("serial", help="hex (colons and 0x allowed) or decimal")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--decimal", action="store_true", help="read the serial as decimal")
    group.add_argument("--hex", action="store_true", help="read the serial as hexadecimal")


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    integration_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    p = sub.add_parser("cert", help="issued certificates")
    csub = p.add_subparsers(dest="cert_cmd", required=True)
    c = csub.add_parser("list", parents=[common], help="list certificates")
    c.add_argument("--integration")
    c.add_argument("--status", choices=_STATUSES)
    c.add_argument(
        "--expiring",
        type=_days,
        metavar="Nd",
        help="only valid certificates that expire within N days (e.g. 30d), the devices to renew",
    )
    c.add_argument("--search", metavar="TEXT", help="the start of the subject (CN=..., or a CN) or of the serial")
    c.add_argument(
        "--limit", type=_page_size, default=PAGE_DEFAULT, help=f"certificates a page (default {PAGE_DEFAULT})"
    )
    c.add_argument("--after", metavar="CURSOR", help="the next page: the cursor the previous page printed")
    c.add_argument("--all", action="store_true", help="every page")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_async(_list))
    c = csub.add_parser("show", parents=[common], help="show one certificate and its audit trail")
    _serial_args(c)
    c.add_argument("--pem", action="store_true", help="also print the certificate")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_async(_show))
    c = csub.add_parser("revoke", parents=[common], help="revoke one certificate")
    _serial_args(c)
    c.add_argument("--reason", default="unspecified", help=", ".join(operator_reason_names()))
    c.set_defaults(func=run_async(_revoke))
    d = integration_sub.add_parser(
        "delete", parents=[common], help="delete an integration and revoke every certificate it issued"
    )
    d.add_argument("id")
    d.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=run_async(_delete))
    r = sub.add_parser("crl", parents=[common], help="print or write the current CRL")
    r.add_argument("--out", help="write to this file (DER unless --pem)")
    r.add_argument("--pem", action="store_true")
    r.add_argument("--ca", default="ca", help="a previous CA's id after a rollover (default: the current CA)")
    r.set_defaults(func=run_async(_crl))
