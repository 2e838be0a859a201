"""``scep-ca init`` and ``scep-ca serve``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import ssl
import sys
from collections.abc import Callable

from audit.events import Event
from challenge.secret_key import load_or_create_secret_key
from config import Config
from config.clock import utc_now
from scep_ca.cli.audit_cmds import record
from scep_ca.cli.console_cmds import first_admin_hint
from scep_ca.cli.context import (
    CliError,
    UsageError,
    ca_passphrase,
    colon_fingerprint,
    config_from_args,
    key_token,
)
from scep_ca.cli.ra_renew import cmd_ra_renew, identity_loader, notifier_for, ra_files_renewer, renew_ra_now
from scep_ca.pki.ca import CAIdentity, ca_exists, create_ca, load_ca, replace_ra
from scep_ca.pki.ca_set import CASet, activate_next, ca_id, load_ca_set, rollover
from scep_ca.pki.keys import describe_key
from scep_ca.pki.pkcs11_keys import Token, check_in_child, in_child
from scep_ca.pki.public_url import (
    PublicUrlError,
    check_public_url,
    derive_public_url,
    loopback_mismatch,
    resolved,
    url_is_loopback,
    write_public_url,
)
from scep_ca.pki.ra_renewal import Renewed
from scep_ca.server.workers import Supervisor, check_port_free, resolve_workers
from scep_ca.services.expiry import log_expiry
from store.factory import open_store

log = logging.getLogger(__name__)


def ensure_ca(config: Config) -> tuple[CAIdentity, bool]:
    """Load the CA, creating it first (with the public URL, as ``init`` would) when the data directory has none."""
    passphrase = ca_passphrase(config)
    token = key_token(config)
    if ca_exists(config.data_dir):
        return load_ca(config.data_dir, passphrase, token, ra_validity_days=config.ra.validity_days), False
    if token is not None:
        # Keys generated in a child: this process forks the workers (see check_in_child).
        problem = in_child(lambda: _create_default_ca(config, passphrase, token))
        if problem is not None:
            raise CliError(problem)
        return load_ca(config.data_dir, passphrase, token), True
    return _create_default_ca(config, passphrase, token), True


def _create_default_ca(config: Config, passphrase: bytes | None, token: Token | None) -> CAIdentity:
    ca = create_ca(
        config.data_dir,
        subject=config.ca.subject,
        key_size=config.ca.key_size,
        validity_days=config.ca.validity_days,
        passphrase=passphrase,
        token=token,
        ra_validity_days=config.ra.validity_days,
    )
    if config.server.public_url:
        # Only an explicit URL is stored; a derived one follows the listen address (scep_ca.pki.public_url).
        write_public_url(config.data_dir, config.server.public_url)
    return ca


def cmd_init(args: argparse.Namespace) -> int:
    explicit = None
    if args.public_url is not None:
        try:
            explicit = check_public_url(args.public_url)
        except PublicUrlError as exc:
            raise UsageError(f"--public-url: {exc}") from None
    config = config_from_args(args)
    explicit = explicit or config.server.public_url
    public_url = explicit or derive_public_url(config)
    passphrase = ca_passphrase(config)
    ca = create_ca(
        config.data_dir,
        subject=args.subject or config.ca.subject,
        key_size=args.key_size or config.ca.key_size,
        validity_days=config.ca.validity_days,
        passphrase=passphrase,
        ra_pair=args.ra == "pair",
        token=key_token(config),
        ra_validity_days=config.ra.validity_days,
    )
    if explicit:
        write_public_url(config.data_dir, explicit)
    record(
        config,
        Event.CA_INIT,
        f"ca/{ca_id(ca)}",
        {"subject": ca.cert.subject.rfc4514_string(), "sha256": ca.fingerprint_sha256},
    )
    where = describe_key(ca.key, f"{config.data_dir / 'ca.key'}, mode 0600")
    print(f"CA created in {config.data_dir}")
    print(f"  Subject:              {ca.cert.subject.rfc4514_string()}")
    print(f"  Key:                  RSA {ca.key.key_size} ({where})")
    print(f"  Fingerprint (SHA-256): {colon_fingerprint(ca.fingerprint_sha256)}")
    print(f"  RA:                   {_ra_layout(ca)}")
    print(f"  Public URL:           {public_url} (CRL, OCSP and CA URLs of every certificate)")
    if not explicit:
        print("                        the listen address: it follows `scep-ca serve --host/--port`")
    if url_is_loopback(public_url):
        print(
            f"warning: the public URL {public_url} is loopback: relying parties on other hosts cannot check "
            "revocation of the certificates; pass --public-url (or set server.public_url)",
            file=sys.stderr,
        )
    return 0


def _ra_layout(ca: CAIdentity) -> str:
    if ca.enc_cert is not None:
        return "a signing RA (ra.pem) and an encryption RA (ra-enc.pem), as NDES has them"
    return "one combined RA (ra.pem), signing and encryption"


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve in this process (one worker) or under a supervisor (several, see scep_ca.server.workers)."""
    # The web server (aiohttp) is imported by `serve` alone: every other command starts without it.
    from scep_ca.server.logsetup import configure_logging

    config = config_from_args(args)
    configure_logging(config.log)
    notifier_for(config)  # a missing or bad notification secret stops the start, not each worker
    # Once, before any fork: keys are checked here, and workers never race to create files.
    ca, created = ensure_ca(config)
    if created:
        log.info("created a new CA in %s (SHA-256 %s)", config.data_dir, ca.fingerprint_sha256)
    # Before any worker loads the RA: workers of this host and other hosts take the same lease.
    renewed = _renew_at_start(config)
    # One Token for every key user of a process (CA set, RA reloads, audit keys, console): a
    # PKCS#11 library re-initialised by one user would leave another's cached handles pointing
    # at other objects. It opens nothing here; each worker opens it after the fork.
    token = key_token(config)
    cas = load_ca_set(config.data_dir, ca_passphrase(config), token)
    log_expiry(cas.current, utc_now(), config.ra.renew_before_days)
    # Token keys are checked in a forked child: this process forks the workers, and a
    # PKCS#11 library's state must not be inherited (README, "Keys in an HSM").
    problem = check_in_child(key for ca in (*cas.issuers, *([cas.next] if cas.next else [])) for key in ca.keys)
    if problem is not None:
        raise CliError(problem)
    explicit = bool(config.server.public_url)  # configured or stored by init; else derived below
    config = resolved(config)
    _warn_public_url(config, explicit=explicit)
    load_or_create_secret_key(config.data_dir)
    console = config.console
    if console.enabled:
        try:
            check_port_free(console.host, console.port)
        except OSError as exc:
            raise CliError(f"cannot listen on console.listen {console.listen}: {exc.strerror or exc}") from exc
        from scep_ca.console.app import console_ssl_context  # with aiohttp: `serve` alone loads it

        try:
            console_ssl_context(console.tls.cert, console.tls.key)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(f"console.tls: cannot load {console.tls.cert} and {console.tls.key}: {exc}") from exc
        hint = asyncio.run(first_admin_hint(config))
        if hint:
            print(f"scep-ca: {hint}", file=sys.stderr)
    workers = resolve_workers(config.server.workers)
    if workers == 1:
        # No supervisor: restarting a lone server process is the init system's job, and
        # serving in-process keeps signals and exit statuses direct.
        _serve(config, cas, token, 0, None, renewed=renewed)
        return 0
    try:
        check_port_free(config.server.host, config.server.port)
    except OSError as exc:
        raise CliError(f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror or exc}") from exc
    # Create and migrate the store once, here: N workers opening a new SQLite file at the
    # same moment race to create it. Each worker then opens its own connection.
    asyncio.run(_prepare_store(config))
    log.info("serving on %s with %d worker processes", config.base_url, workers)
    return Supervisor(workers, functools.partial(_worker, config, cas, token, renewed)).run()


def _renew_at_start(config: Config) -> tuple[Renewed, ...]:
    """Renew due RAs; a failure is logged and retried by the daily round, never a failed start:
    the current RA serves until it expires, and the metrics and ``status`` show the date."""
    try:
        return asyncio.run(renew_ra_now(config))
    except Exception as exc:
        log.error("RA renewal at start failed (retried daily; `scep-ca ra renew` to retry now): %s", exc)
        return ()


def _warn_public_url(config: Config, *, explicit: bool) -> None:
    if loopback_mismatch(config):
        log.warning(
            "the public URL %s in issued certificates (CRL, OCSP) is loopback but the server listens on %s: "
            "relying parties on other hosts cannot check revocation; set server.public_url",
            config.server.public_url,
            config.server.host,
        )
    elif explicit and config.base_url != derive_public_url(config):
        log.warning(
            "the public URL %s in issued certificates (CRL, OCSP, CA) differs from the listen address %s: "
            "kept because it was set (server.public_url or init --public-url); it must reach this server",
            config.base_url,
            derive_public_url(config),
        )
    else:
        log.info("public URL (CRL, OCSP and CA URLs in certificates): %s", config.server.public_url)


async def _prepare_store(config: Config) -> None:
    store = open_store(config)
    await store.open()
    await store.close()


def _worker(
    config: Config,
    cas: CASet,
    token: Token | None,
    renewed: tuple[Renewed, ...],
    index: int,
    ready: Callable[[], None],
) -> int:
    """A worker process (after fork): its own app and store connection on the shared port."""
    from scep_ca.server.logsetup import tag_worker

    tag_worker(index)
    _serve(config, cas, token, index, ready, reuse_port=True, renewed=renewed)
    return 0


def _serve(
    config: Config,
    cas: CASet,
    token: Token | None,
    index: int,
    ready: Callable[[], None] | None,
    *,
    reuse_port: bool = False,
    renewed: tuple[Renewed, ...] = (),
) -> None:
    from scep_ca.cli.console_app import console_app, serve_with_console
    from scep_ca.server.app import RaUpkeep, build_app

    # In the worker (after any fork): a token's keys may be generated here directly.
    upkeep = RaUpkeep(
        identity_loader(config, token), ra_files_renewer(config, fork=False, token=token), renewed_at_start=renewed
    )
    app = build_app(
        config,
        cas,
        open_store(config),
        worker=index,
        token=token,
        ra_upkeep=upkeep,
        notifier=notifier_for(config),
    )
    # The console runs in one process: worker 0 (scep_ca.cli.console_app says why).
    console = console_app(config, cas, token) if config.console.enabled and index == 0 else None
    # run_server handles SIGINT itself; this only hides a Ctrl-C that lands before that.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_with_console(app, console, config, reuse_port=reuse_port, ready=ready))


def cmd_ra_create(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    identity = replace_ra(
        config.data_dir,
        ca_passphrase(config),
        pair=args.pair,
        token=key_token(config),
        validity_days=config.ra.validity_days,
    )
    record(config, Event.RA_CREATED, f"ca/{ca_id(identity)}", {"pair": bool(args.pair)})
    print(f"issued {_ra_layout(identity)} under {identity.cert.subject.rfc4514_string()}")
    print("the old RA files are in retired/")
    print("running servers switch to it within a minute; clients fetch it with their next GetCACert")
    return 0


def cmd_ca_rollover(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    nxt = rollover(
        config.data_dir,
        subject=args.subject,
        key_size=args.key_size or config.ca.key_size,
        validity_days=config.ca.validity_days,
        passphrase=ca_passphrase(config),
        token=key_token(config),
        ra_validity_days=config.ra.validity_days,
    )
    record(
        config,
        Event.CA_ROLLOVER,
        f"ca/{ca_id(nxt)}",
        {"subject": nxt.cert.subject.rfc4514_string(), "sha256": nxt.fingerprint_sha256},
    )
    print(f"next CA created in {config.data_dir / 'next'}")
    print(f"  Subject:               {nxt.cert.subject.rfc4514_string()}")
    print(f"  Fingerprint (SHA-256): {colon_fingerprint(nxt.fingerprint_sha256)}")
    print("GetNextCACert announces it once `scep-ca serve` restarts; `scep-ca ca activate-next` switches issuance.")
    return 0


def cmd_ca_activate_next(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    old, new = activate_next(config.data_dir, ca_passphrase(config), key_token(config))
    record(
        config, Event.CA_ACTIVATE_NEXT, f"ca/{ca_id(new)}", {"previous": ca_id(old), "sha256": new.fingerprint_sha256}
    )
    print(f"issuing with {colon_fingerprint(new.fingerprint_sha256)} from the next restart of `scep-ca serve`")
    print(
        f"the previous CA ({ca_id(old)}) keeps serving its CRL at /crl/{ca_id(old)}.crl and OCSP "
        "until its certificate expires"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help="create the CA key and certificate")
    p.add_argument("--key-size", type=int, choices=(2048, 3072, 4096))
    p.add_argument("--subject", help="CA subject DN (RFC 4514), default from ca.subject")
    p.add_argument(
        "--public-url",
        metavar="URL",
        help="base URL relying parties and devices reach (CRL, OCSP, CA and printed URLs), stored in the data "
        "directory; default server.public_url, else the address `serve` listens on (followed, not stored)",
    )
    p.add_argument(
        "--ra",
        choices=("pair", "combined"),
        default="pair",
        help="pair (default, as NDES): a signing-only and an encryption-only RA; combined: one RA for both",
    )
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("serve", parents=[common], help="run the server (creates the CA on first start)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="server processes sharing the port (default server.workers; 0: one per available CPU)",
    )
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("ca", help="CA rollover")
    casub = p.add_subparsers(dest="ca_cmd", required=True)
    c = casub.add_parser("rollover", parents=[common], help="create the next CA (announced by GetNextCACert)")
    c.add_argument("--subject", help="subject of the next CA (default: the current CA's)")
    c.add_argument("--key-size", type=int, choices=(2048, 3072, 4096))
    c.set_defaults(func=cmd_ca_rollover)
    c = casub.add_parser("activate-next", parents=[common], help="make the next CA the issuing CA")
    c.set_defaults(func=cmd_ca_activate_next)
    p = sub.add_parser("ra", help="the RA certificate(s) that decrypt requests and sign CertReps")
    rsub = p.add_subparsers(dest="ra_cmd", required=True)
    c = rsub.add_parser("create", parents=[common], help="issue a new RA (the current one is retired)")
    c.add_argument(
        "--pair", action="store_true", help="a signing-only and an encryption-only RA (without it: one combined RA)"
    )
    c.set_defaults(func=cmd_ra_create)
    c = rsub.add_parser(
        "renew",
        parents=[common],
        help="renew the RA certificate(s) now, as serve does within ra.renew_before_days (running servers switch)",
    )
    c.add_argument("--all", action="store_true", help="renew every RA certificate, not only those that are due")
    c.set_defaults(func=cmd_ra_renew)
