"""Run the real SCEP clients (and micromdm's reference server) from tests and benchmarks.

Plain Python on purpose: no pytest import, so benchmarks and ad-hoc scripts can use it too.
Every helper returns what the client printed, so a failing assertion can show it
(``result.describe()``), and every process runs in its own process group with a timeout,
so a hung client never hangs the suite and nothing is left running.

Clients driven here:

* micromdm ``scepclient`` 2.1.0 (Debian package ``scep``): :func:`run_scepclient`.
* certmonger 0.79.17 (Debian package ``certmonger``): :class:`Certmonger`, a private daemon on
  a private D-Bus bus with all of its state in a temporary directory.
* micromdm ``scepserver`` 2.1.0: :class:`ScepServerProcess`, the reference server used to prove
  this harness before our own server exists (and later as a benchmark baseline).

A missing binary raises :class:`MissingBinaryError`: under CI a missing client must fail the
test, never skip it.

All traffic goes to 127.0.0.1. Proxy variables are stripped from every child's environment,
because certmonger's helper uses libcurl, which would otherwise send loopback requests to a
configured proxy. (micromdm's ``scepserver`` has no listen-address flag: it always binds all
interfaces; we only ever connect to it over loopback.)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Self

LOOPBACK = "127.0.0.1"

SCEPCLIENT = "scepclient"
SCEPSERVER = "scepserver"
CERTMONGER = "/usr/sbin/certmonger"
GETCERT = "getcert"
SCEP_SUBMIT = "/usr/lib/certmonger/scep-submit"
DBUS_DAEMON = "dbus-daemon"
DBUS_SEND = "dbus-send"
OPENSSL = "openssl"

CERTMONGER_BUS_NAME = "org.fedorahosted.certmonger"

# Where each binary comes from, for the error message when it is missing.
_PACKAGE_OF = {
    SCEPCLIENT: "scep",
    SCEPSERVER: "scep",
    CERTMONGER: "certmonger",
    GETCERT: "certmonger",
    SCEP_SUBMIT: "certmonger",
    DBUS_DAEMON: "dbus",
    DBUS_SEND: "dbus",
    OPENSSL: "openssl",
}

# The system-wide certmonger state that a test must never touch (we run as root in CI).
SYSTEM_CERTMONGER_DIRS = (Path("/var/lib/certmonger"), Path("/etc/certmonger"))

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")


class MissingBinaryError(RuntimeError):
    """A real client or tool that the e2e tests need is not installed."""


class HarnessError(RuntimeError):
    """A harness step (starting a daemon, waiting for a port, ...) failed."""


# --------------------------------------------------------------------------------------------
# Generic helpers
# --------------------------------------------------------------------------------------------


def require_binary(name: str) -> str:
    """Return the absolute path of ``name`` or raise :class:`MissingBinaryError`.

    Never used to skip: the e2e suite must fail loudly when a client is missing.
    """
    found = shutil.which(name) if not os.path.isabs(name) else (name if os.access(name, os.X_OK) else None)
    if found is None:
        package = _PACKAGE_OF.get(name, "?")
        raise MissingBinaryError(
            f"required binary {name!r} not found; install the Debian package {package!r} "
            f"(apt-get install {package}); .ci/run does this"
        )
    return found


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without proxy settings, so loopback traffic stays on loopback."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    env["NO_PROXY"] = env["no_proxy"] = f"{LOOPBACK},localhost"
    if extra:
        env.update(extra)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry on a lost race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


# A urllib opener that ignores proxy settings (urllib honours http_proxy even for 127.0.0.1).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """GET ``url`` without proxies; return (status, headers, body), also for HTTP errors."""
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def wait_http(
    url: str,
    timeout: float = 10.0,
    *,
    interval: float = 0.05,
    proc: subprocess.Popen[bytes] | None = None,
    describe: str = "",
) -> bytes:
    """Poll ``url`` until it answers 200 and return the body.

    If ``proc`` is given and exits first, fail at once instead of waiting out the timeout
    (a server that died on a port clash should not cost 10 s). ``describe`` is added to the
    error, e.g. the server's log.
    """
    deadline = time.monotonic() + timeout
    last_error = "no attempt made"
    while True:
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"process exited with {proc.returncode} before {url} answered. {describe}")
        try:
            status, _, body = http_get(url, timeout=max(0.2, min(2.0, deadline - time.monotonic())))
            if status == 200:
                return body
            last_error = f"HTTP {status}: {body[:200]!r}"
        except (OSError, urllib.error.URLError) as exc:
            last_error = repr(exc)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout}s: {last_error}. {describe}")
        time.sleep(interval)


@dataclass(frozen=True)
class CommandResult:
    """What a finished (or killed) command did."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        """A multi-line summary for assertion messages."""
        state = "TIMED OUT" if self.timed_out else f"exit {self.returncode}"
        return (
            f"$ {' '.join(self.args)}\n[{state} after {self.duration:.2f}s]\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def _die_with_parent() -> None:
    """``preexec_fn`` for long-running children: ask the kernel to SIGTERM them when the
    test process dies (even by SIGKILL), so an aborted run leaves no daemons behind."""
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _wait_unreaped(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` for ``pid`` (our child) to exit WITHOUT reaping it.

    While the leader is an unreaped zombie its pid, and so its process-group id, cannot be
    reused, which makes the SIGKILL sweep of the group below safe.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def kill_process_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group led by ``proc``, SIGKILL whatever is left, then reap.

    Every child we start is a group leader (``start_new_session=True``), so this reaches its
    helpers too (certmonger's scep-submit, for instance) and never anything else.
    """
    if proc.returncode is not None:
        return  # already reaped: its group id may belong to someone else by now
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    _wait_unreaped(proc.pid, grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=grace)


def group_members(pgid: int) -> list[str]:
    """``pid: cmdline`` of live processes in process group ``pgid`` (leak checks)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            # Field 2 (comm) may contain spaces: split after its closing parenthesis.
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                found.append(f"{entry}: {cmd}")
    return found


def run_command(
    args: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
) -> CommandResult:
    """Run ``args`` in its own process group; on timeout kill the whole group and report it."""
    argv = tuple(str(a) for a in args)
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=dict(env) if env is not None else clean_env(),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(input=stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_process_group(proc, grace=2.0)
        out, err = proc.communicate()
    return CommandResult(
        args=argv,
        returncode=proc.returncode if proc.returncode is not None else -1,
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
        duration=time.monotonic() - started,
        timed_out=timed_out,
    )


def openssl_verify(cert_path: Path, ca_path: Path, timeout: float = 10.0) -> CommandResult:
    """``openssl verify -CAfile CA CERT``; ``.ok`` is True when OpenSSL accepts the chain."""
    return run_command([require_binary(OPENSSL), "verify", "-CAfile", str(ca_path), str(cert_path)], timeout=timeout)


# --------------------------------------------------------------------------------------------
# micromdm scepclient
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientResult:
    """One ``scepclient`` run: the command's result and the files it left."""

    command: CommandResult
    key_path: Path
    cert_path: Path
    issued: bool  # the client exited 0 and wrote a certificate that was not there before

    @property
    def ok(self) -> bool:
        return self.issued

    @property
    def returncode(self) -> int:
        return self.command.returncode

    @property
    def output(self) -> str:
        return self.command.output

    @property
    def cert_pem(self) -> str | None:
        return self.cert_path.read_text() if self.issued else None

    def describe(self) -> str:
        return f"{self.command.describe()}\n[issued={self.issued} cert={self.cert_path}]"


def run_scepclient(
    url: str,
    challenge: str | None,
    workdir: Path,
    *,
    subject_cn: str = "scepclient",
    organization: str = "scep-client",
    ou: str = "MDM",
    country: str = "US",
    province: str | None = None,
    locality: str | None = None,
    key_size: int = 2048,
    key_path: Path | None = None,
    cert_path: Path | None = None,
    ca_fingerprint: str | None = None,
    debug: bool = True,
    timeout: float = 30.0,
) -> ClientResult:
    """Enroll once with micromdm's ``scepclient`` and report what happened.

    Behaviour of scepclient 2.1.0 worth knowing (observed against micromdm's scepserver):

    * it writes ``csr.pem`` (and ``self.pem``, the transient signer, on some paths) into its
      *current directory*, so it runs with ``cwd=workdir``;
    * it reuses ``key_path`` if that exists, else creates an RSA key of ``key_size`` bits;
    * if ``cert_path`` already exists it sends a RenewalReq signed by that certificate instead
      of a PKCSReq (and, at least with micromdm's server, still exits 0 when that fails), so
      ``issued`` is only True when the certificate file changed;
    * it exits 1 on a FAILURE CertRep, printing e.g.
      ``PKCSReq (19) request failed, failInfo: badRequest (2)``;
    * it ignores GetCACaps: DES-CBC content encryption and SHA-1 signing, POST.

    ``ca_fingerprint`` is the hex SHA-256 of the CA certificate (``-ca-fingerprint``), needed when
    GetCACert returns more than one certificate.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    key_path = (key_path or workdir / "key.pem").absolute()
    cert_path = (cert_path or workdir / "cert.pem").absolute()
    before = cert_path.read_bytes() if cert_path.exists() else None
    args = [
        require_binary(SCEPCLIENT),
        "-server-url",
        url,
        "-private-key",
        str(key_path),
        "-certificate",
        str(cert_path),
        "-cn",
        subject_cn,
        "-organization",
        organization,
        "-ou",
        ou,
        "-country",
        country,
        "-keySize",
        str(key_size),
    ]
    if challenge is not None:
        args += ["-challenge", challenge]
    if province is not None:
        args += ["-province", province]
    if locality is not None:
        args += ["-locality", locality]
    if ca_fingerprint is not None:
        args += ["-ca-fingerprint", ca_fingerprint]
    if debug:
        args.append("-debug")
    result = run_command(args, timeout=timeout, cwd=workdir)
    after = cert_path.read_bytes() if cert_path.exists() else None
    issued = result.ok and after is not None and after != before
    return ClientResult(command=result, key_path=key_path, cert_path=cert_path, issued=issued)


# --------------------------------------------------------------------------------------------
# micromdm scepserver
# --------------------------------------------------------------------------------------------


class ScepServerProcess:
    """micromdm's ``scepserver`` with its own CA in ``workdir/depot`` on a free loopback port.

    ``scepserver ca -init`` makes a self-signed CA (KeyUsage critical keyCertSign+cRLSign, no
    digitalSignature) and that CA itself signs CertReps; GetCACert answers that one DER
    certificate as ``application/x-x509-ca-cert``; GetCACaps advertises Renewal, SHA-1, SHA-256,
    AES, DES3, SCEPStandard, POSTPKIOperation, but CertReps always use DES-CBC and SHA-1.

    ``allow_renew_days=0`` because micromdm's depot otherwise refuses a second certificate for
    a DN that already has a valid one ("DN ... already exists").
    """

    def __init__(
        self,
        workdir: Path,
        *,
        challenge: str | None = "secret",
        port: int | None = None,
        ca_key_size: int = 2048,  # the default 4096 costs seconds of key generation
        organization: str = "scep-ca e2e harness",
        allow_renew_days: int = 0,
        debug: bool = True,
        start_timeout: float = 10.0,
    ) -> None:
        self.workdir = workdir
        self.depot = workdir / "depot"
        self.challenge = challenge
        self._requested_port = port
        self.port = port or 0
        self.ca_key_size = ca_key_size
        self.organization = organization
        self.allow_renew_days = allow_renew_days
        self.debug = debug
        self.start_timeout = start_timeout
        self.log_path = workdir / "scepserver.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The SCEP URL (clients append ``?operation=...``)."""
        return f"http://{LOOPBACK}:{self.port}/scep"

    @property
    def ca_cert_path(self) -> Path:
        return self.depot / "ca.pem"

    @property
    def ca_key_path(self) -> Path:
        """PEM, encrypted (DES-EDE3) with the empty password: ``openssl ... -passin pass:``."""
        return self.depot / "ca.key"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def init_ca(self) -> None:
        """Create the CA unless the depot already has one (so a restart keeps the CA)."""
        if self.ca_cert_path.exists():
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        result = run_command(
            [
                require_binary(SCEPSERVER),
                "ca",
                "-init",
                "-depot",
                str(self.depot),
                "-keySize",
                str(self.ca_key_size),
                "-organization",
                self.organization,
            ],
            timeout=60.0,
            cwd=self.workdir,
        )
        if not result.ok or not self.ca_cert_path.exists():
            raise HarnessError(f"scepserver ca -init failed:\n{result.describe()}")

    def start(self) -> Self:
        self.init_ca()
        attempts = 1 if self._requested_port else 3  # a free port can be taken before we bind it
        for attempt in range(attempts):
            self.port = self._requested_port or free_port()
            args = [
                require_binary(SCEPSERVER),
                "-depot",
                str(self.depot),
                "-port",
                str(self.port),
                "-allowrenew",
                str(self.allow_renew_days),
            ]
            if self.challenge is not None:
                args += ["-challenge", self.challenge]
            if self.debug:
                args.append("-debug")
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    args,
                    cwd=self.workdir,
                    env=clean_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            try:
                wait_http(
                    f"{self.url}?operation=GetCACaps",
                    timeout=self.start_timeout,
                    proc=self._proc,
                    describe=f"scepserver log:\n{self.log()}",
                )
                return self
            except HarnessError:
                self.stop()
                if attempt == attempts - 1:
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self._proc is not None:
            kill_process_group(self._proc)
            self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# certmonger
# --------------------------------------------------------------------------------------------

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <!-- No service directories: nothing on this bus can be D-Bus-activated, so an early
       getcert fails instead of starting a second certmonger (certmonger-session) that
       would not see our environment. -->
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def parse_getcert_list(text: str) -> dict[str, str]:
    """``getcert list -f CERT`` output as {'status': ..., 'ca-error': ..., ...} (first request)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\t([a-zA-Z][a-zA-Z0-9 ()-]*?): ?(.*)$", line)
        if m and m.group(1) not in fields:
            fields[m.group(1)] = m.group(2)
        elif line.startswith("Request ID"):
            fields.setdefault("request-id", line.split("'")[1] if "'" in line else line)
    return fields


def parse_certmonger_record(text: str) -> dict[str, str]:
    """A certmonger state file (cas/*, requests/*): ``key=value`` with continuation lines
    that start with a space (PEM blocks)."""
    entries: dict[str, str] = {}
    key: str | None = None
    for line in text.splitlines():
        if line.startswith(" ") and key is not None:
            entries[key] += "\n" + line[1:]
        elif "=" in line:
            key, value = line.split("=", 1)
            entries[key] = value
    return entries


class RequestResult(NamedTuple):
    """``getcert request -w`` outcome: the final state and what getcert printed.

    ``stdout`` holds the output of ``getcert request`` followed by ``getcert list -f CERT``
    (which carries ``status:`` and the CA's ``ca-error:`` text).
    """

    state: str
    stdout: str

    @property
    def info(self) -> dict[str, str]:
        return parse_getcert_list(self.stdout.split("\n--- getcert list ---\n", 1)[-1])

    @property
    def ca_error(self) -> str:
        return self.info.get("ca-error", "")


def _snapshot(paths: Sequence[Path]) -> dict[str, tuple[int, int]]:
    """{path: (size, mtime_ns)} of every file under ``paths``, to detect writes."""
    snap: dict[str, tuple[int, int]] = {}
    for root in paths:
        if not root.exists():
            continue
        for dirpath, _dirs, files in os.walk(root):
            for name in [".", *files]:
                p = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    st = os.stat(p)
                    snap[p] = (st.st_size if name != "." else 0, st.st_mtime_ns)
    return snap


class Certmonger:
    """A private certmonger daemon on a private D-Bus bus, all state under ``base_dir``.

    Usage::

        with Certmonger() as cm:
            cm.add_scep_ca("ours", url, ca_cert_path=ca_pem)
            state, out = cm.request("ours", key, cert, "challenge", "CN=device")

    Why each step:

    * a dbus-daemon of our own (config written to ``base_dir``, socket in a short temp dir
      because unix socket paths are limited to 108 bytes), with no service directories, so
      nothing can be D-Bus-activated behind our back;
    * ``certmonger -s -n -d LEVEL``: session bus, no fork (we own its pid and process group),
      debug log to ``daemon.log`` for assertion messages (helper output, env given to
      scep-submit, chosen cipher and digest);
    * we wait until it owns ``org.fedorahosted.certmonger`` before any ``getcert -s``;
    * CERTMONGER_CONFIG_DIR, _CAS_DIR, _REQUESTS_DIR, _LOCAL_CA_DIR, _TMPDIR and
      _SYSTEM_LOCK_FILE point into ``base_dir``, otherwise as root it writes to
      /var/lib/certmonger. :meth:`stop` records in ``system_changes`` anything under
      /var/lib/certmonger or /etc/certmonger that changed meanwhile, and in ``leftovers``
      any process of ours still alive; both must stay empty.

    ``base_dir`` defaults to a fresh temp dir that :meth:`stop` removes; a caller-supplied
    directory (e.g. pytest's ``tmp_path``) is kept for post-mortems.
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        start_timeout: float = 10.0,
        command_timeout: float = 30.0,
        debug_level: int = 3,
        config_text: str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.base_dir = base_dir
        self.start_timeout = start_timeout
        self.command_timeout = command_timeout
        self.debug_level = debug_level
        self.config_text = config_text  # written to CERTMONGER_CONFIG_DIR/certmonger.conf
        self.extra_env = dict(extra_env or {})
        self.bus_address = ""
        self.system_changes: list[str] = []
        self.leftovers: list[str] = []
        self._own_base = False
        self._bus_dir: Path | None = None
        self._bus: subprocess.Popen[bytes] | None = None
        self._daemon: subprocess.Popen[bytes] | None = None
        self._pgids: list[int] = []
        self._system_before: dict[str, tuple[int, int]] | None = None

    # ---- paths ----------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        if self.base_dir is None:
            raise HarnessError("Certmonger not started")
        return self.base_dir

    @property
    def cas_dir(self) -> Path:
        return self.root / "cas"

    @property
    def requests_dir(self) -> Path:
        return self.root / "requests"

    @property
    def log_path(self) -> Path:
        return self.root / "daemon.log"

    def daemon_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def env(self) -> dict[str, str]:
        """Environment for the daemon and for every getcert call."""
        root = self.root
        return clean_env(
            {
                "DBUS_SESSION_BUS_ADDRESS": self.bus_address,
                "CERTMONGER_CONFIG_DIR": str(root / "config"),
                "CERTMONGER_CAS_DIR": str(root / "cas"),
                "CERTMONGER_REQUESTS_DIR": str(root / "requests"),
                "CERTMONGER_LOCAL_CA_DIR": str(root / "local"),
                "CERTMONGER_TMPDIR": str(root / "tmp"),
                "CERTMONGER_SYSTEM_LOCK_FILE": str(root / "lock"),
                **self.extra_env,
            }
        )

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        certmonger = require_binary(CERTMONGER)
        dbus_daemon = require_binary(DBUS_DAEMON)
        require_binary(DBUS_SEND)
        require_binary(GETCERT)
        self._system_before = _snapshot(SYSTEM_CERTMONGER_DIRS)
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="certmonger-"))
            self._own_base = True
        try:
            for sub in ("config", "cas", "requests", "local", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            if self.config_text is not None:
                (self.root / "config" / "certmonger.conf").write_text(self.config_text)
            self._start_bus(dbus_daemon)
            with self.log_path.open("ab") as log:
                self._daemon = subprocess.Popen(
                    [certmonger, "-s", "-n", "-d", str(self.debug_level)],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            self._pgids.append(self._daemon.pid)
            self._wait_for_name()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_bus(self, dbus_daemon: str) -> None:
        self._bus_dir = Path(tempfile.mkdtemp(prefix="cmbus-", dir="/tmp"))
        conf = self.root / "bus.conf"
        conf.write_text(_BUS_CONFIG.format(socket=self._bus_dir / "bus"))
        with (self.root / "bus.log").open("ab") as bus_log:
            self._bus = subprocess.Popen(
                [dbus_daemon, f"--config-file={conf}", "--nofork", "--nopidfile", "--print-address=1"],
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=bus_log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._pgids.append(self._bus.pid)
        assert self._bus.stdout is not None
        # The daemon prints its address once it listens; read it without risking a hang.
        ready, _, _ = select.select([self._bus.stdout], [], [], self.start_timeout)
        line = self._bus.stdout.readline().decode().strip() if ready else ""
        if not line:
            raise HarnessError(
                f"dbus-daemon did not print its address within {self.start_timeout}s "
                f"(exit={self._bus.poll()}): {(self.root / 'bus.log').read_text(errors='replace')}"
            )
        self.bus_address = line

    def name_has_owner(self) -> bool:
        result = run_command(
            [
                require_binary(DBUS_SEND),
                "--session",
                "--dest=org.freedesktop.DBus",
                "--print-reply",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                f"string:{CERTMONGER_BUS_NAME}",
            ],
            timeout=5.0,
            env=self.env,
        )
        return result.ok and "boolean true" in result.stdout

    def _wait_for_name(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not self.name_has_owner():
            if self._daemon is not None and self._daemon.poll() is not None:
                raise HarnessError(f"certmonger exited with {self._daemon.returncode}:\n{self.daemon_log()}")
            if time.monotonic() >= deadline:
                raise HarnessError(
                    f"certmonger did not own {CERTMONGER_BUS_NAME} within {self.start_timeout}s:\n"
                    f"{self.daemon_log()[-4000:]}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill the daemon (with any helper it runs) and the bus; remove our temp dirs."""
        if self._daemon is not None:
            kill_process_group(self._daemon)
            self._daemon = None
        if self._bus is not None:
            kill_process_group(self._bus)
            if self._bus.stdout is not None:
                self._bus.stdout.close()
            self._bus = None
        if self._bus_dir is not None:
            shutil.rmtree(self._bus_dir, ignore_errors=True)
            self._bus_dir = None
        self.leftovers = [proc for pgid in self._pgids for proc in group_members(pgid)]
        if self._system_before is not None:
            before, after = self._system_before, _snapshot(SYSTEM_CERTMONGER_DIRS)
            self.system_changes = sorted(p for p in set(after) | set(before) if after.get(p) != before.get(p))
        if self._own_base and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
            self._own_base = False

    @property
    def running(self) -> bool:
        return self._daemon is not None and self._daemon.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- getcert --------------------------------------------------------------------------

    def getcert(self, *args: str, timeout: float | None = None) -> CommandResult:
        """``getcert ARGS`` against our daemon. Pass ``-s`` yourself where the verb takes it."""
        if not self.running:
            raise HarnessError(f"certmonger is not running:\n{self.daemon_log()[-4000:]}")
        return run_command([require_binary(GETCERT), *args], timeout=timeout or self.command_timeout, env=self.env)

    def add_scep_ca(
        self,
        name: str,
        url: str,
        ca_cert_path: Path | None = None,
        *,
        ra_cert_path: Path | None = None,
        other_certs_path: Path | None = None,
        tls_ca_path: Path | None = None,
        non_renewal: bool = False,
        wait_ca_data: float | None = 10.0,
        need_caps: bool = True,
    ) -> CommandResult:
        """``getcert add-scep-ca -s -c NAME -u URL [-N CA] [-r RA] [-I OTHERS] [-R TLSCA] [-n]``.

        ``ca_cert_path`` is ``-N/--signingca``: the CA that signed the RA certificate, which
        scep-submit uses as its trust anchor for CertRep signatures. ``-R/--cacert`` is only the
        TLS trust anchor for https URLs (``tls_ca_path``).

        The daemon then fetches GetCACaps and GetCACert by itself; with ``wait_ca_data`` we
        poll ``getcert list-cas`` until the CA's certificate thumbprint shows (raises
        TimeoutError otherwise). Pass None when the server is meant to be unreachable.
        """
        args = ["add-scep-ca", "-s", "-c", name, "-u", url]
        if ca_cert_path is not None:
            args += ["-N", str(Path(ca_cert_path).absolute())]
        if ra_cert_path is not None:
            args += ["-r", str(Path(ra_cert_path).absolute())]
        if other_certs_path is not None:
            args += ["-I", str(Path(other_certs_path).absolute())]
        if tls_ca_path is not None:
            args += ["-R", str(Path(tls_ca_path).absolute())]
        if non_renewal:
            args.append("-n")
        result = self.getcert(*args)
        if not result.ok:
            raise HarnessError(f"getcert add-scep-ca failed:\n{result.describe()}")
        if wait_ca_data is not None:
            self.wait_ca_data(name, wait_ca_data, need_caps=need_caps)
        return result

    def wait_ca_data(self, name: str, timeout: float = 10.0, *, need_caps: bool = True) -> dict[str, str]:
        """Wait until the daemon has stored the SCEP CA's encryption (RA) certificate and, with
        ``need_caps``, its capabilities (an empty GetCACaps answer stores none)."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.ca_record(name)
            if record.get("ca_encryption_cert") and (not need_caps or "ca_capabilities" in record):
                return record
            if time.monotonic() >= deadline:
                listing = self.list_cas(name)
                raise TimeoutError(
                    f"certmonger did not fetch GetCACaps/GetCACert for CA {name!r} within {timeout}s:\n"
                    f"{listing.describe()}\n{self.daemon_log()[-3000:]}"
                )
            time.sleep(0.05)

    def ca_record(self, name: str) -> dict[str, str]:
        """The daemon's stored record for CA ``name`` (``ca_capabilities``,
        ``ca_encryption_cert`` (RA), ``ca_encryption_issuer_cert`` (its CA), ...), or {}."""
        if not self.cas_dir.exists():
            return {}
        for f in self.cas_dir.iterdir():
            with contextlib.suppress(OSError):
                record = parse_certmonger_record(f.read_text(errors="replace"))
                if record.get("id") == name:
                    return record
        return {}

    def request_record(self, cert_path: Path) -> dict[str, str]:
        """The daemon's stored tracking request for ``cert_path`` (``scep_req`` is the
        PKIOperation pkiMessage it sent, PEM), or {}."""
        location = str(Path(cert_path).absolute())
        if not self.requests_dir.exists():
            return {}
        for f in self.requests_dir.iterdir():
            with contextlib.suppress(OSError):
                record = parse_certmonger_record(f.read_text(errors="replace"))
                if record.get("cert_storage_location") == location:
                    return record
        return {}

    def request(
        self,
        ca: str,
        key_path: Path,
        cert_path: Path,
        challenge: str | None,
        subject: str,
        wait_timeout: int = 20,
        *,
        extra_args: Sequence[str] = (),
    ) -> RequestResult:
        """``getcert request -s -c CA -k KEY -f CERT -L CHALLENGE -N SUBJECT -w --wait-timeout N``.

        Returns the final status (``MONITORING`` when issued; ``CA_UNREACHABLE``,
        ``CA_REJECTED``, ``NEED_GUIDANCE``, ... otherwise) read back with
        ``getcert list -f CERT``, and both commands' output.
        """
        key_path = Path(key_path).absolute()
        cert_path = Path(cert_path).absolute()
        args = ["request", "-s", "-c", ca, "-k", str(key_path), "-f", str(cert_path), "-N", subject]
        if challenge is not None:
            args += ["-L", challenge]
        args += [*extra_args, "-w", "--wait-timeout", str(wait_timeout)]
        req = self.getcert(*args, timeout=wait_timeout + 15)
        listing = self.list(cert_path)
        info = parse_getcert_list(listing.stdout)
        stdout = f"{req.describe()}\n--- getcert list ---\n{listing.stdout}"
        return RequestResult(state=info.get("status", "UNKNOWN"), stdout=stdout)

    def list(self, cert_path: Path | None = None) -> CommandResult:
        """``getcert list -s [-f CERT]``."""
        args = ["list", "-s"]
        if cert_path is not None:
            args += ["-f", str(Path(cert_path).absolute())]
        return self.getcert(*args)

    def list_cas(self, name: str | None = None) -> CommandResult:
        """``getcert list-cas -s [-c NAME]``."""
        args = ["list-cas", "-s"]
        if name is not None:
            args += ["-c", name]
        return self.getcert(*args)


# --------------------------------------------------------------------------------------------
# certmonger's scep-submit helper, run directly
# --------------------------------------------------------------------------------------------

# scep-submit's exit codes (certmonger's submit-e.h), as seen in `getcert` states.
SCEP_SUBMIT_STATUS = {
    0: "ISSUED",
    1: "WAIT",
    2: "REJECTED",
    3: "UNREACHABLE",
    4: "UNCONFIGURED",
    5: "WAIT_WITH_DELAY",
    16: "NEED_SCEP_MESSAGES",
}


def run_scep_submit(
    url: str,
    operation: str,
    *,
    ra_cert: Path | None = None,
    signing_ca: Path | None = None,
    message_file: Path | None = None,
    verbose: bool = True,
    timeout: float = 30.0,
) -> CommandResult:
    """Run ``/usr/lib/certmonger/scep-submit`` by hand, the way the daemon would.

    ``operation``: ``GetCACaps`` (-c), ``GetCACert`` (-C) or ``PKIOperation`` (-p, needs
    ``ra_cert`` (-r, the encryption/RA certificate) and ``message_file``, a PKCSReq pkiMessage
    in PEM or base64, e.g. the ``scep_req`` of :meth:`Certmonger.request_record`).
    ``signing_ca`` is -N: the trust anchor for the CertRep signature. Without it the helper
    trusts nothing, so a CertRep signed by a self-signed certificate fails with
    ``failed to verify signature on server response`` (OpenSSL: self-signed certificate).
    Exit codes: :data:`SCEP_SUBMIT_STATUS`.
    """
    flag = {"GetCACaps": "-c", "GetCACert": "-C", "PKIOperation": "-p"}[operation]
    args = [require_binary(SCEP_SUBMIT), "-u", url, flag]
    if ra_cert is not None:
        args += ["-r", str(ra_cert)]
    if signing_ca is not None:
        args += ["-N", str(signing_ca)]
    if verbose:
        args.append("-v")
    if message_file is not None:
        args.append(str(message_file))
    return run_command(args, timeout=timeout)


# --------------------------------------------------------------------------------------------
# A recording stub SCEP endpoint (to probe what a client asks and accepts)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    operation: str
    message: str  # the raw (still percent-encoded) ``message`` parameter of a GET
    body: bytes
    raw_target_length: int  # length of the request target, e.g. to size header limits


@dataclass
class ProbeScepServer:
    """A loopback HTTP stub answering GetCACaps and GetCACert with chosen bytes and recording
    every request; PKIOperation gets ``pkioperation_status`` with an empty body.

    It cannot enroll anything: it exists to observe what a real client sends and how it
    classifies a GetCACert answer (see the certmonger tests), without our server.
    """

    caps: str = "POSTPKIOperation\nSHA-256\nAES\n"
    cacert_body: bytes = b""
    cacert_content_type: str = "application/x-x509-ca-cert"
    pkioperation_status: int = 503
    requests: list[RecordedRequest] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/scep"

    def pkioperations(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.operation == "PKIOperation"]

    def start(self) -> Self:
        probe = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method: str) -> None:
                split = urllib.parse.urlsplit(self.path)
                # Keep `message` raw: parse_qs would turn a literal "+" into a space.
                params = {k: v for k, _, v in (kv.partition("=") for kv in split.query.split("&"))}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                op = params.get("operation", "")
                probe.requests.append(
                    RecordedRequest(method, split.path, op, params.get("message", ""), body, len(self.path))
                )
                if op == "GetCACaps":
                    self._answer(200, "text/plain", probe.caps.encode())
                elif op == "GetCACert":
                    self._answer(200, probe.cacert_content_type, probe.cacert_body)
                else:
                    self._answer(probe.pkioperation_status, "text/plain", b"")

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean; requests are recorded instead

        self._server = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="probe-scep", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
