"""Fixtures for the end-to-end tests: real clients against real server processes.

Everything under tests/e2e is marked ``e2e`` (``pytest -m "not e2e"`` leaves it out).
A missing client binary makes the test ERROR with an install hint, never skip: in CI a
missing client must not pass silently.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import re
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import yaml

from tests.e2e import clients
from tests.e2e.clients import Certmonger, ScepServerProcess

_E2E_DIR = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _E2E_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)


# --------------------------------------------------------------------------------------------
# Generic fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def require_binary() -> Callable[[str], str]:
    """``require_binary("scepclient")`` -> absolute path, or MissingBinaryError (test errors)."""
    return clients.require_binary


@pytest.fixture
def certmonger(tmp_path: Path) -> Iterator[Certmonger]:
    """A private certmonger daemon (own D-Bus bus, state under ``tmp_path/certmonger``).

    After the test: the daemon, its helpers and the bus are gone, and nothing under
    /var/lib/certmonger or /etc/certmonger changed. The state dir and ``daemon.log`` stay in
    ``tmp_path`` for post-mortems.
    """
    cm = Certmonger(tmp_path / "certmonger")
    with cm:
        yield cm
    assert not cm.leftovers, f"processes left behind: {cm.leftovers}"
    assert not cm.system_changes, f"the private certmonger touched system state: {cm.system_changes}"


@pytest.fixture(scope="module")
def micromdm_scepserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepServerProcess]:
    """micromdm's reference ``scepserver`` (challenge ``secret``) on a free loopback port.

    Module-scoped: starting it and making its CA costs about half a second.
    """
    with ScepServerProcess(tmp_path_factory.mktemp("micromdm"), challenge="secret") as server:
        yield server


# --------------------------------------------------------------------------------------------
# scep-ca server fixtures
#
# Reserved for the fixtures that start OUR server as a process
# (`scep-ca serve --data-dir DIR --port PORT`, SCEP URL http://127.0.0.1:PORT/scep/<integration>,
# CA certificate at DIR/ca.pem). Use clients.free_port() and clients.wait_http(..., proc=...)
# to start it, and clients.kill_process_group() to stop it.
# --------------------------------------------------------------------------------------------

# The `scep-ca` console script of the interpreter running the tests (the venv's), never one
# found on PATH: the tests must exercise this checkout.
SCEP_CA = Path(sys.executable).parent / "scep-ca"

# The subject template the e2e integrations use: matches scepclient's -cn/-ou/-organization/
# -country flags (run_scepclient's defaults) with any CN.
DEFAULT_SUBJECT = "CN=$USERID$,OU=MDM,O=scep-client,C=US"


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, section by section (one level of nesting is enough)."""
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = value
    return merged


def _server_env() -> dict[str, str]:
    """No proxies, and no SCEP_CA_* settings from the caller's environment: the config file alone
    decides (the loader gives SCEP_CA_* variables precedence over the file)."""
    return {k: v for k, v in clients.clean_env().items() if not k.startswith("SCEP_CA_")}


class ScepCaServer:
    """A real ``scep-ca serve`` process on a free 127.0.0.1 port, with its own data dir and a
    YAML config file that every CLI call shares (so printed URLs carry the right port).

    Tests create their own integrations (:meth:`create_integration`), so one server can serve a
    whole session without tests seeing each other's certificates, challenges or lockouts.
    """

    def __init__(
        self,
        base_dir: Path,
        config: Mapping[str, Any] | None = None,
        *,
        start_timeout: float = 15.0,
        fd_limit: int | None = None,
    ):
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.config_path = base_dir / "scep-ca.yaml"
        self.log_path = base_dir / "server.log"
        self.extra_config: dict[str, Any] = dict(config or {})
        self.start_timeout = start_timeout
        # RLIMIT_NOFILE (soft and hard) of the server process; None: inherited.
        self.fd_limit = fd_limit
        self.port = 0
        # The console's port: each server its own, so that servers run side by side.
        self.console_port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def _write_config(self) -> None:
        base: dict[str, Any] = {"server": {"host": clients.LOOPBACK, "port": self.port}}
        if self.console_port:
            # Before the first start (CLI commands on a server not started yet) the default
            # stands: nothing binds it, and port 0 is no console address.
            base["console"] = {"listen": f"{clients.LOOPBACK}:{self.console_port}"}
        config = _merge(base, self.extra_config)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> ScepCaServer:
        if not SCEP_CA.exists():
            raise clients.MissingBinaryError(f"{SCEP_CA} not found: pip install -e . into {sys.prefix}")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):  # a free port can be taken before the server binds it
            # A restart keeps its port first: the public URL stored at the first start (and in
            # every certificate issued) names it.
            self.port = self.port if attempt == 0 and self.port else clients.free_port()
            self.console_port = self.console_port if attempt == 0 and self.console_port else clients.free_port()
            self._write_config()
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    self._serve_argv(),
                    env=_server_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=self._preexec,
                )
            try:
                # The CRL route answers 200 without any integration (and creates the CA on first start).
                clients.wait_http(
                    f"{self.base_url}/crl/ca.crl",
                    timeout=self.start_timeout,
                    proc=self._proc,
                    describe=f"scep-ca log:\n{self.log()}",
                )
                return self
            except clients.HarnessError:
                self.stop()
                if attempt == 2 or not re.search("address already in use|cannot listen", self.log(), re.IGNORECASE):
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _serve_argv(self) -> list[str]:
        return [str(SCEP_CA), "--config", str(self.config_path), "--data-dir", str(self.data_dir), "serve"]

    def _preexec(self) -> None:
        clients._die_with_parent()
        if self.fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.fd_limit, self.fd_limit))

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after a grace period."""
        if self._proc is not None:
            clients.kill_process_group(self._proc)
            self._proc = None

    @property
    def pid(self) -> int:
        """The server's main process: leader of its own session (its workers are in it too)."""
        assert self._proc is not None, "the server is not running"
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> ScepCaServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- URLs and files -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{clients.LOOPBACK}:{self.port}"

    @property
    def console_url(self) -> str:
        return f"http://{clients.LOOPBACK}:{self.console_port}/console"

    def scep_url(self, integration_id: str) -> str:
        return f"{self.base_url}/scep/{integration_id}"

    def challenge_url(self, integration_id: str) -> str:
        return f"{self.base_url}/challenge/{integration_id}/certsrv/mscep_admin/"

    @property
    def ca_pem(self) -> Path:
        return self.data_dir / "ca.pem"

    @property
    def ra_pem(self) -> Path:
        """The RA that signs CertReps (the combined RA, or the signing half of the default pair)."""
        return self.data_dir / "ra.pem"

    @property
    def encryption_pem(self) -> Path:
        """The RA that requests are encrypted to: ``ra-enc.pem`` of the default pair, else the combined RA."""
        enc = self.data_dir / "ra-enc.pem"
        return enc if enc.exists() else self.ra_pem

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "scep-ca.sqlite3"

    # ---- the log --------------------------------------------------------------------------

    def log(self, since: int = 0) -> str:
        """The server's log (stdout and stderr), from byte offset ``since`` (see :meth:`log_mark`)."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")

    def log_mark(self) -> int:
        """The log's current size: pass it to :meth:`log` or :meth:`wait_log` to see only what follows."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def wait_log(self, pattern: str, since: int = 0, timeout: float = 5.0) -> re.Match[str]:
        """Poll the log (from ``since``) until ``pattern`` (a regex) appears; return the match."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log(since))
            if match is not None:
                return match
            if time.monotonic() >= deadline:
                raise AssertionError(f"{pattern!r} not in the server log within {timeout}s:\n{self.log(since)}")
            time.sleep(0.02)

    # ---- the operator CLI -----------------------------------------------------------------

    def cli(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``scep-ca --config CFG --data-dir DIR ARGS`` against this server's data dir."""
        argv = [str(SCEP_CA), "--config", str(self.config_path), "--data-dir", str(self.data_dir), *args]
        result = subprocess.run(
            argv, env=_server_env(), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"$ {' '.join(argv)}\n[exit {result.returncode}]\n--- stdout ---\n{result.stdout}\n"
                f"--- stderr ---\n{result.stderr}"
            )
        return result

    def create_integration(self, name: str, subject: str = DEFAULT_SUBJECT, **options: str | int) -> dict[str, Any]:
        """``integration create NAME --subject S [--option value ...] --json``: id, scep_url, subject,
        challenge_url, username, password, ca_fingerprint_sha256, ... (``validity_days=30`` becomes
        ``--validity-days 30``)."""
        args = ["integration", "create", name, "--subject", subject, "--json"]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        created: dict[str, Any] = json.loads(self.cli(*args).stdout)
        return created

    def challenge(self, integration_id: str) -> str:
        """``challenge new ID``: a fresh one-time challenge (the CLI prints it alone on a line)."""
        return self.cli("challenge", "new", integration_id).stdout.strip()

    def certificates(self, integration_id: str | None = None) -> list[dict[str, Any]]:
        """``cert list --json [--integration ID]``."""
        args = ["cert", "list", "--json"]
        if integration_id is not None:
            args += ["--integration", integration_id]
        listed: list[dict[str, Any]] = json.loads(self.cli(*args).stdout)
        return listed

    def certificate_count(self, integration_id: str | None = None) -> int:
        return len(self.certificates(integration_id))

    # ---- observing and ageing challenges in the store --------------------------------------
    #
    # The CLI shows no challenges, so tests read the SQLite store directly (read-only queries
    # on a WAL database are safe while the server runs). ``backdate_challenges`` is the one
    # write: it moves challenges into the past as if they had been created earlier, which is
    # how the e2e tests make a challenge expire without waiting out its validity (at least one
    # minute, the smallest unit the config accepts). The server still decides everything itself
    # from the stored times; no production code is bypassed.

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.sqlite_path, timeout=10.0)

    def challenge_rows(self, integration_id: str) -> list[dict[str, Any]]:
        """The integration's stored challenges: created_at, expires_at (UTC datetimes), used."""
        with contextlib.closing(self._db()) as db:
            rows = db.execute(
                "SELECT created_at, expires_at, used_at FROM challenges WHERE integration_id = ? ORDER BY id",
                (integration_id,),
            ).fetchall()
        return [
            {"created_at": _from_us(created), "expires_at": _from_us(expires), "used": used is not None}
            for created, expires, used in rows
        ]

    def unused_challenges(self, integration_id: str) -> int:
        """Unused, unexpired challenges of the integration (what counts towards max_unused)."""
        now = datetime.datetime.now(datetime.UTC)
        return sum(1 for r in self.challenge_rows(integration_id) if not r["used"] and r["expires_at"] > now)

    def backdate_challenges(self, integration_id: str, by: datetime.timedelta, challenge: str | None = None) -> int:
        """Shift the integration's unused challenges (or just ``challenge``) ``by`` into the past;
        returns how many rows moved."""
        shift = by // datetime.timedelta(microseconds=1)
        query = (
            "UPDATE challenges SET created_at = created_at - ?, expires_at = expires_at - ? "
            "WHERE integration_id = ? AND used_at IS NULL"
        )
        params: tuple[object, ...] = (shift, shift, integration_id)
        if challenge is not None:
            query += " AND challenge_hash = ?"
            params += (hashlib.sha256(challenge.encode("utf-8")).hexdigest(),)
        with contextlib.closing(self._db()) as db, db:
            moved = db.execute(query, params).rowcount
        return moved


def _from_us(value: int) -> datetime.datetime:
    """The store's times: integer microseconds since the Unix epoch, UTC."""
    return datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(microseconds=value)


ScepCaServerFactory = Callable[..., ScepCaServer]


@pytest.fixture(scope="session")
def scep_ca_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepCaServer]:
    """One ``scep-ca serve`` with the default settings for the whole session (start: about 1 s).

    Tests share it and make their own integrations; tests that need other settings use
    :func:`scep_ca_server_factory`.
    """
    with ScepCaServer(tmp_path_factory.mktemp("scep-ca")) as server:
        yield server


def _factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepCaServerFactory]:
    started: list[ScepCaServer] = []

    def factory(**sections: Any) -> ScepCaServer:
        server = ScepCaServer(tmp_path_factory.mktemp("scep-ca-custom"), sections)
        started.append(server)
        return server.start()

    try:
        yield factory
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def scep_ca_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepCaServerFactory]:
    """``factory(challenge={"validity_minutes": 1, "lockout_failures": 3}, ...)`` starts a server
    whose YAML config has these sections merged in; every server it started stops after the test."""
    yield from _factory(tmp_path_factory)


@pytest.fixture(scope="module")
def scep_ca_module_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepCaServerFactory]:
    """The same factory for module-scoped fixtures: its servers stop after the test module."""
    yield from _factory(tmp_path_factory)
