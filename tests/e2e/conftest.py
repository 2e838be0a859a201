"""Fixtures for the end-to-end tests: real clients against real server processes.

Everything under tests/e2e is marked ``e2e`` (``pytest -m "not e2e"`` leaves it out).
A missing client binary makes the test ERROR with an install hint, never skip: in CI a
missing client must not pass silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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
