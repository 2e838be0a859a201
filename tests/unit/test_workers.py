"""The supervisor with stand-in workers (real forks, no server), restart policy, CPU count, port probe.

Each ``Supervisor.run`` here forks the test process; a stand-in worker records its starts in a
file and ends the scenario by signalling the supervisor itself, so every test finishes in
about a second and leaves no process behind (``run`` only returns once all workers are reaped).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from scep_ca.server.workers import (
    RestartPolicy,
    Supervisor,
    available_cpus,
    check_port_free,
    describe_status,
    resolve_workers,
)

FAST = RestartPolicy(first_delay=0.05, max_delay=1.0, stable_after=5.0)


def _starts(path: Path, index: int) -> list[float]:
    if not path.exists():
        return []
    return [float(t) for i, t in (line.split() for line in path.read_text().splitlines()) if int(i) == index]


def _record(path: Path, index: int) -> None:
    with path.open("a") as f:
        f.write(f"{index} {time.monotonic()}\n")


def _idle() -> int:
    time.sleep(30)  # until the supervisor's SIGTERM (default action: the worker dies of it)
    return 0


def test_a_crashing_worker_is_restarted_with_a_growing_delay(tmp_path: Path) -> None:
    starts = tmp_path / "starts"

    def worker(index: int, ready: Callable[[], None]) -> int:
        _record(starts, index)
        ready()
        if index == 0:
            if len(_starts(starts, 0)) < 4:
                return 3  # a crash, three times in a row
            os.kill(os.getppid(), signal.SIGTERM)  # the fourth start ends the scenario
        return _idle()

    status = Supervisor(2, worker, policy=FAST, stop_timeout=5).run()

    assert status == 0
    first = _starts(starts, 0)
    gaps = [later - earlier for earlier, later in itertools.pairwise(first)]
    assert len(first) == 4
    # 0.05, 0.1, 0.2 s of backoff (plus the time to fork and crash).
    for gap, delay in zip(gaps, (0.05, 0.1, 0.2), strict=True):
        assert gap >= delay
    assert gaps[2] > gaps[0]
    assert len(_starts(starts, 1)) == 1  # the healthy worker was left alone


def test_a_worker_that_cannot_start_stops_everything_with_status_1(tmp_path: Path) -> None:
    starts = tmp_path / "starts"

    def worker(index: int, ready: Callable[[], None]) -> int:
        _record(starts, index)
        if index == 1:
            return 7  # e.g. the store is unreachable: never listened
        ready()
        return _idle()

    began = time.monotonic()
    status = Supervisor(2, worker, policy=FAST, stop_timeout=5).run()

    assert status == 1
    assert time.monotonic() - began < 5
    assert len(_starts(starts, 1)) == 1  # not restarted: a start-up failure does not fix itself


def test_workers_that_ignore_sigterm_are_killed_after_the_stop_timeout(tmp_path: Path) -> None:
    def worker(index: int, ready: Callable[[], None]) -> int:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ready()
        if index == 0:
            os.kill(os.getppid(), signal.SIGTERM)
        return _idle()

    began = time.monotonic()
    status = Supervisor(2, worker, policy=FAST, stop_timeout=0.5).run()

    assert status == 1
    assert 0.5 <= time.monotonic() - began < 5


def test_the_supervisor_restores_its_signal_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGCHLD)

    def worker(index: int, ready: Callable[[], None]) -> int:
        ready()
        os.kill(os.getppid(), signal.SIGINT)
        return _idle()

    assert Supervisor(1, worker, policy=FAST, stop_timeout=5).run() == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGCHLD)) == before


def test_restart_policy() -> None:
    policy = RestartPolicy(first_delay=0.5, max_delay=30.0, stable_after=10.0)
    assert [policy.delay(n) for n in range(8)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]


def test_describe_status() -> None:
    assert describe_status(0) == "exit status 0"
    assert describe_status(-signal.SIGKILL) == "signal SIGKILL"


# -- how many workers -------------------------------------------------------------------------


def _cgroup(tmp_path: Path, relative: str, limits: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for path, content in limits.items():
        directory = root / path
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cpu.max").write_text(content + "\n")
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text(f"0::{relative}\n")
    return root, self_cgroup


def test_cpu_count_honours_the_tightest_cgroup_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    # A 1.5-CPU quota on the parent slice, none on the service: 2 workers at most.
    root, self_cgroup = _cgroup(
        tmp_path,
        "/system.slice/scep-ca.service",
        {
            "system.slice": "150000 100000",
            "system.slice/scep-ca.service": "max 100000",
        },
    )
    assert available_cpus(root, self_cgroup) == min(affinity, 2)
    root, self_cgroup = _cgroup(tmp_path / "b", "/", {".": "50000 100000"})
    assert available_cpus(root, self_cgroup) == 1


def test_cpu_count_without_cgroup_information_is_the_affinity_mask(tmp_path: Path) -> None:
    assert available_cpus(tmp_path / "none", tmp_path / "none") == len(os.sched_getaffinity(0))


def test_resolve_workers() -> None:
    assert resolve_workers(3) == 3
    assert resolve_workers(0) == available_cpus()


# -- the port probe ---------------------------------------------------------------------------


def test_port_probe() -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(OSError):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # free again once it closed
