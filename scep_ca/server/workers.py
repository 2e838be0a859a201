"""Worker processes sharing one port, and the supervisor that keeps them running.

``scep-ca serve`` with more than one worker: the parent loads the CA once, then forks N
workers. Each builds its own app (its own store connection, caches and metrics) and
listens on the same host:port with SO_REUSEPORT, so the kernel spreads new connections
over them. The parent serves nothing. It:

* restarts a worker that exits without being asked to (a crash, ``kill -9``, the OOM
  killer), after a delay that doubles while the same slot keeps dying young
  (``RestartPolicy``), so a worker that cannot run does not spin the CPU;
* stops everything (exit status 1) when a worker dies before it ever listened during
  the initial start: a bad setting, a taken port or an unreachable store will not fix
  itself, and the init system should see the failure rather than a restart loop;
* on SIGTERM, SIGINT or SIGHUP sends SIGTERM to every worker, which stops accepting,
  drains its in-flight requests (``scep_ca.server.app.run_server``) and exits; the parent waits
  for them and exits 0. Workers still running after ``stop_timeout`` get SIGKILL (exit
  status 1), and so do all of them at once on a second signal.

Why load before forking: cryptography spends about 27 ms checking an RSA private key,
and a wrong passphrase should fail once, before any worker starts. Nothing else is
opened before the fork (no event loop, no store connection, no thread), so every
worker starts from a clean state. Workers ask the kernel for SIGTERM when the parent
dies (``PR_SET_PDEATHSIG``), so a killed supervisor never leaves orphans on the port.

The parent's loop waits on one ``poll``: signals arrive through ``signal.set_wakeup_fd``,
and each worker reports readiness by writing one byte to its pipe once it listens.

Why not gunicorn with aiohttp's ``GunicornWebWorker``: it would add a dependency and a
second set of settings (gunicorn's, next to the YAML configuration) for what is one
module here, and the rules above (doubling restart delay per slot, stop on a failed first
start, readiness by pipe, the CA loaded and its passphrase checked once before the fork,
the PKCS#11 library never initialised in the parent) would each have to be bent into
gunicorn's hooks; its arbiter replaces a dead worker at once, without a back-off.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import NoReturn

log = logging.getLogger(__name__)

# Runs in the child: (worker index, call-once-listening) -> exit status.
WorkerMain = Callable[[int, Callable[[], None]], int]

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Exit statuses of a worker that stopped because it was asked to.
_CLEAN_STOP = frozenset({0, -signal.SIGTERM, -signal.SIGINT})
# Upper bound of one wait of the loop: a safety net, every event also wakes it.
_MAX_WAIT_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a worker that died unasked.

    A worker that ran at least ``stable_after`` seconds is restarted at once. One that
    died younger counts as a quick failure of its slot: restarts wait ``first_delay``,
    then twice as long for each further quick failure in a row, up to ``max_delay``.
    """

    first_delay: float = 0.5
    max_delay: float = 30.0
    stable_after: float = 10.0

    def delay(self, quick_failures: int) -> float:
        if quick_failures <= 0:
            return 0.0
        return float(min(self.max_delay, self.first_delay * 2 ** (quick_failures - 1)))


@dataclass
class _Slot:
    """One worker position; its index survives restarts (logs and metrics use it)."""

    index: int
    pid: int | None = None
    started_at: float = 0.0
    ready: bool = False
    ready_fd: int | None = None
    quick_failures: int = 0
    restart_at: float | None = None


def describe_status(code: int) -> str:
    """``waitstatus_to_exitcode`` result as words: "exit status 1", "signal SIGKILL"."""
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


class Supervisor:
    """Runs ``count`` workers until asked to stop (see the module docstring)."""

    def __init__(
        self,
        count: int,
        worker_main: WorkerMain,
        *,
        policy: RestartPolicy | None = None,
        stop_timeout: float = 40.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if count < 1:
            raise ValueError("at least one worker is needed")
        self._slots = [_Slot(index) for index in range(count)]
        self._worker_main = worker_main
        self._policy = policy or RestartPolicy()
        self._stop_timeout = stop_timeout
        self._clock = clock
        self._selector = selectors.PollSelector()
        self._wakeup_r = -1
        self._wakeup_w = -1
        self._signals: list[int] = []
        self._stopping = False
        self._killed = False
        self._stop_deadline = 0.0
        self._status = 0
        self._booted = False
        self._pid = os.getpid()

    # -- the parent's loop ---------------------------------------------------------------

    def run(self) -> int:
        """Start the workers and supervise them; returns the exit status for the parent."""
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_r, False)
        os.set_blocking(self._wakeup_w, False)
        self._selector.register(self._wakeup_r, selectors.EVENT_READ, None)
        handled = (*_STOP_SIGNALS, signal.SIGCHLD)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        previous_wakeup = signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        try:
            log.info("starting %d workers", len(self._slots))
            for slot in self._slots:
                self._spawn(slot)
            while not (self._stopping and not self._live()):
                self._step()
            log.info("all workers stopped")
            return self._status
        except BaseException:
            # A bug here must not leave workers without a supervisor.
            self._signal_all(signal.SIGKILL)
            for slot in self._slots:
                if slot.pid is not None:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(slot.pid, 0)
            raise
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._selector.close()
            for slot in self._slots:
                self._close_ready_fd(slot)
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs between bytecodes of the main thread; the loop does the work.
        self._signals.append(signum)

    def _step(self) -> None:
        for key, _ in self._selector.select(self._wait_seconds()):
            if key.fd == self._wakeup_r:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wakeup_r, 512):
                        pass
            else:
                self._read_ready(key.data)
        while self._signals:
            signum = self._signals.pop(0)
            if signum != signal.SIGCHLD:
                self._stop_requested(signum)
        self._reap()
        self._start_due()
        self._enforce_deadline()

    def _wait_seconds(self) -> float:
        now = self._clock()
        deadlines = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        if self._stopping and not self._killed:
            deadlines.append(self._stop_deadline)
        wait = min((d - now for d in deadlines), default=_MAX_WAIT_SECONDS)
        return max(0.0, min(wait, _MAX_WAIT_SECONDS))

    def _live(self) -> bool:
        return any(slot.pid is not None for slot in self._slots)

    # -- stopping ------------------------------------------------------------------------

    def _stop_requested(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stopping:
            if not self._killed:
                log.warning("%s during shutdown: killing the workers now", name)
                self._kill_all()
            return
        log.info("%s: stopping the workers (waiting up to %.0f s for them to drain)", name, self._stop_timeout)
        self._begin_stop(0)

    def _begin_stop(self, status: int) -> None:
        self._stopping = True
        self._status = max(self._status, status)
        self._stop_deadline = self._clock() + self._stop_timeout
        for slot in self._slots:
            slot.restart_at = None
        self._signal_all(signal.SIGTERM)

    def _enforce_deadline(self) -> None:
        if self._stopping and not self._killed and self._live() and self._clock() >= self._stop_deadline:
            log.error("workers still running %.0f s after SIGTERM: killing them", self._stop_timeout)
            self._kill_all()

    def _kill_all(self) -> None:
        self._killed = True
        self._status = 1
        self._signal_all(signal.SIGKILL)

    def _signal_all(self, signum: int) -> None:
        for slot in self._slots:
            if slot.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signum)

    # -- workers coming and going --------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            self._child(slot.index, ready_w)
        os.close(ready_w)
        os.set_blocking(ready_r, False)
        slot.pid, slot.started_at, slot.ready, slot.ready_fd, slot.restart_at = pid, self._clock(), False, ready_r, None
        self._selector.register(ready_r, selectors.EVENT_READ, slot)
        log.info("worker %d started (pid %d)", slot.index, pid)

    def _read_ready(self, slot: _Slot) -> None:
        if slot.ready_fd is None:
            return
        try:
            data = os.read(slot.ready_fd, 16)
        except BlockingIOError:
            return
        if data:
            slot.ready = True
        self._close_ready_fd(slot)
        if not self._booted and all(s.ready for s in self._slots):
            self._booted = True
            log.info("all %d workers listening", len(self._slots))

    def _close_ready_fd(self, slot: _Slot) -> None:
        if slot.ready_fd is None:
            return
        # A worker may have reported readiness and died before the loop read the byte.
        with contextlib.suppress(OSError):
            if os.read(slot.ready_fd, 16):
                slot.ready = True
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(slot.ready_fd)
        os.close(slot.ready_fd)
        slot.ready_fd = None

    def _reap(self) -> None:
        for slot in self._slots:
            if slot.pid is None:
                continue
            try:
                pid, status = os.waitpid(slot.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: nothing to learn about it
                pid, status = slot.pid, 0
            if pid != 0:
                self._exited(slot, os.waitstatus_to_exitcode(status))

    def _exited(self, slot: _Slot, code: int) -> None:
        pid, lifetime = slot.pid, self._clock() - slot.started_at
        self._close_ready_fd(slot)
        was_ready, slot.pid, slot.ready = slot.ready, None, False
        if self._stopping:
            clean = code in _CLEAN_STOP
            (log.info if clean else log.warning)(
                "worker %d (pid %s) stopped: %s", slot.index, pid, describe_status(code)
            )
            if not clean:
                self._status = 1
            return
        if not was_ready and not self._booted:
            log.error(
                "worker %d (pid %s) failed to start (%s); stopping (see its log above)",
                slot.index,
                pid,
                describe_status(code),
            )
            self._begin_stop(1)
            return
        stable = lifetime >= self._policy.stable_after
        slot.quick_failures = 0 if stable else slot.quick_failures + 1
        delay = self._policy.delay(slot.quick_failures)
        slot.restart_at = self._clock() + delay
        log.error(
            "worker %d (pid %s) died (%s) after %.1f s; restarting it in %.1f s",
            slot.index,
            pid,
            describe_status(code),
            lifetime,
            delay,
        )

    def _start_due(self) -> None:
        if self._stopping:
            return
        now = self._clock()
        for slot in self._slots:
            if slot.pid is None and slot.restart_at is not None and slot.restart_at <= now:
                self._spawn(slot)

    # -- the child -----------------------------------------------------------------------

    def _child(self, index: int, ready_w: int) -> NoReturn:
        """The forked worker: reset what it inherited, run ``worker_main``, never return."""
        code = 1
        try:
            self._reset_inherited()
            _die_with_parent(self._pid)
            notified = False

            def ready() -> None:
                nonlocal notified
                if not notified:
                    notified = True
                    os.write(ready_w, b"r")
                    os.close(ready_w)

            code = self._worker_main(index, ready)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            for handler in logging.getLogger().handlers:
                with contextlib.suppress(Exception):
                    handler.flush()
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _reset_inherited(self) -> None:
        # The parent's signal plumbing and descriptors mean nothing here; asyncio installs
        # the worker's own SIGTERM/SIGINT handlers (scep_ca.server.app.run_server).
        signal.set_wakeup_fd(-1)
        for sig in (*_STOP_SIGNALS, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        self._selector.close()  # a poll selector holds no kernel object: nothing shared
        for fd in (self._wakeup_r, self._wakeup_w):
            os.close(fd)
        for slot in self._slots:
            if slot.ready_fd is not None:
                os.close(slot.ready_fd)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this worker when the supervisor dies (then it drains and exits)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        raise SystemExit(0)


# -- how many, and where -----------------------------------------------------------------


def resolve_workers(configured: int) -> int:
    """``server.workers``: a positive count as is; 0 means one per available CPU."""
    return configured if configured > 0 else available_cpus()


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota.

    ``os.cpu_count()`` alone counts the host's CPUs, so a container limited to two CPUs
    on a 64-core host would start 64 workers; ``taskset`` and systemd's ``CPUQuota`` and
    Kubernetes' CPU limits are honoured here. (cgroup v1 quotas are not read.)
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = _cgroup_cpu_limit(cgroup_root, self_cgroup)
    if limit is not None:
        cpus = min(cpus, limit)
    return max(1, cpus)


def _cgroup_cpu_limit(root: Path, self_cgroup: Path) -> int | None:
    """The tightest ``cpu.max`` quota of this process's cgroup and its ancestors, rounded up."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None
    relative = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), None)
    if relative is None:
        return None
    limits: list[int] = []
    directory = root / relative.strip("/")
    while True:
        limit = _read_cpu_max(directory / "cpu.max")
        if limit is not None:
            limits.append(limit)
        if directory == root or root not in directory.parents:
            break
        directory = directory.parent
    return min(limits, default=None)


def _read_cpu_max(path: Path) -> int | None:
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, -(-int(quota) // int(period)))  # ceiling: 1.5 CPUs -> 2 workers
    except (ValueError, ZeroDivisionError):
        return None


def check_port_free(host: str, port: int) -> None:
    """Raise ``OSError`` when something already listens on ``host:port``.

    Workers bind with SO_REUSEPORT, which lets any process of the same user join the
    port's group silently: an old instance still running would share (and answer) the
    traffic. A plain bind, as the single-process server does, fails instead.
    """
    seen: set[tuple[int, object]] = set()
    for family, kind, proto, _, address in socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        if (family, address) in seen:
            continue
        seen.add((family, address))
        with socket.socket(family, kind, proto) as probe:
            # As asyncio's create_server does: TIME_WAIT leftovers do not count as in use.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)
