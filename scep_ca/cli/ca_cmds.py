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

from aiohttp import web

from challenge.secret_key import load_or_create_secret_key
from config import Config
from scep_ca.cli.console_cmds import console_app, first_admin_hint
from scep_ca.cli.context import CliError, ca_passphrase, colon_fingerprint, config_from_args, key_token
from scep_ca.console.app import console_listener, console_ssl_context
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
from scep_ca.server.app import build_app, run_server
from scep_ca.server.logsetup import configure_logging, tag_worker
from scep_ca.server.workers import Supervisor, check_port_free, resolve_workers
from store.factory import open_store

log = logging.getLogger(__name__)


def ensure_ca(config: Config) -> tuple[CAIdentity, bool]:
    """Load the CA, creating it first (with the public URL, as ``init`` would) when the data directory has none."""
    passphrase = ca_passphrase(config)
    token = key_token(config)
    if ca_exists(config.data_dir):
        return load_ca(config.data_dir, passphrase, token), False
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
    )
    write_public_url(config.data_dir, config.server.public_url or derive_public_url(config))
    return ca


def cmd_init(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    passphrase = ca_passphrase(config)
    try:
        public_url = check_public_url(args.public_url or config.server.public_url or derive_public_url(config))
    except PublicUrlError as exc:
        raise CliError(str(exc)) from exc
    ca = create_ca(
        config.data_dir,
        subject=args.subject or config.ca.subject,
        key_size=args.key_size or config.ca.key_size,
        validity_days=config.ca.validity_days,
        passphrase=passphrase,
        ra_pair=args.ra == "pair",
        token=key_token(config),
    )
    write_public_url(config.data_dir, public_url)
    where = describe_key(ca.key, f"{config.data_dir / 'ca.key'}, mode 0600")
    print(f"CA created in {config.data_dir}")
    print(f"  Subject:              {ca.cert.subject.rfc4514_string()}")
    print(f"  Key:                  RSA {ca.key.key_size} ({where})")
    print(f"  Fingerprint (SHA-256): {colon_fingerprint(ca.fingerprint_sha256)}")
    print(f"  RA:                   {_ra_layout(ca)}")
    print(f"  Public URL:           {public_url} (CRL, OCSP and CA URLs of every certificate)")
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
    config = config_from_args(args)
    configure_logging(config.log)
    # Once, before any fork: keys are checked here, and workers never race to create files.
    ca, created = ensure_ca(config)
    if created:
        log.info("created a new CA in %s (SHA-256 %s)", config.data_dir, ca.fingerprint_sha256)
    cas = load_ca_set(config.data_dir, ca_passphrase(config), key_token(config))
    # Token keys are checked in a forked child: this process forks the workers, and a
    # PKCS#11 library's state must not be inherited (README, "Keys in an HSM").
    problem = check_in_child(key for ca in (*cas.issuers, *([cas.next] if cas.next else [])) for key in ca.keys)
    if problem is not None:
        raise CliError(problem)
    config = resolved(config)
    _warn_public_url(config)
    load_or_create_secret_key(config.data_dir)
    console = config.console
    if console.enabled:
        try:
            check_port_free(console.host, console.port)
        except OSError as exc:
            raise CliError(f"cannot listen on console.listen {console.listen}: {exc.strerror or exc}") from exc
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
        _serve(config, cas, 0, None)
        return 0
    try:
        check_port_free(config.server.host, config.server.port)
    except OSError as exc:
        raise CliError(f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror or exc}") from exc
    # Create and migrate the store once, here: N workers opening a new SQLite file at the
    # same moment race to create it. Each worker then opens its own connection.
    asyncio.run(_prepare_store(config))
    log.info("serving on %s with %d worker processes", config.base_url, workers)
    return Supervisor(workers, functools.partial(_worker, config, cas)).run()


def _warn_public_url(config: Config) -> None:
    if loopback_mismatch(config):
        log.warning(
            "the public URL %s in issued certificates (CRL, OCSP) is loopback but the server listens on %s: "
            "relying parties on other hosts cannot check revocation; set server.public_url",
            config.server.public_url,
            config.server.host,
        )
    else:
        log.info("public URL (CRL, OCSP and CA URLs in certificates): %s", config.server.public_url)


async def _prepare_store(config: Config) -> None:
    store = open_store(config)
    await store.open()
    await store.close()


def _worker(config: Config, cas: CASet, index: int, ready: Callable[[], None]) -> int:
    """A worker process (after fork): its own app and store connection on the shared port."""
    tag_worker(index)
    _serve(config, cas, index, ready, reuse_port=True)
    return 0


def _serve(
    config: Config, cas: CASet, index: int, ready: Callable[[], None] | None, *, reuse_port: bool = False
) -> None:
    app = build_app(config, cas, open_store(config), worker=index)
    # The console runs in one process: worker 0 (scep_ca.cli.console_cmds says why).
    console = console_app(config, cas) if config.console.enabled and index == 0 else None
    # run_server handles SIGINT itself; this only hides a Ctrl-C that lands before that.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(app, console, config, reuse_port=reuse_port, ready=ready))


async def _run(
    app: web.Application,
    console: web.Application | None,
    config: Config,
    *,
    reuse_port: bool,
    ready: Callable[[], None] | None,
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        if console is not None:
            await stack.enter_async_context(console_listener(console, config))
        await run_server(app, config, reuse_port=reuse_port, ready=ready)


def cmd_ra_create(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    identity = replace_ra(config.data_dir, ca_passphrase(config), pair=args.pair, token=key_token(config))
    print(f"issued {_ra_layout(identity)} under {identity.cert.subject.rfc4514_string()}")
    print("the old RA files are in retired/")
    print("restart `scep-ca serve` to use it; clients fetch it with their next GetCACert")
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
    )
    print(f"next CA created in {config.data_dir / 'next'}")
    print(f"  Subject:               {nxt.cert.subject.rfc4514_string()}")
    print(f"  Fingerprint (SHA-256): {colon_fingerprint(nxt.fingerprint_sha256)}")
    print("GetNextCACert announces it once `scep-ca serve` restarts; `scep-ca ca activate-next` switches issuance.")
    return 0


def cmd_ca_activate_next(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    old, new = activate_next(config.data_dir, ca_passphrase(config), key_token(config))
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
        help="base URL relying parties and devices reach (CRL, OCSP, CA and printed URLs); "
        "default server.public_url, else the listen address (stored in the data directory)",
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
