"""Fixtures for the packaging tests: the Debian 12 base, the wheelhouse, the image and the .deb.

Everything under tests/packaging is marked ``packaging``. Where podman (or mmdebstrap,
dpkg-deb, lintian, systemd-analyze) is missing the tests skip, unless
``SCEP_CA_PACKAGING_TESTS=required`` (``.ci/run`` sets it, after installing them): then a missing
tool FAILS the test. The base, the wheelhouse and the builds are made once per session and
shared by the image and the package tests (the mmdebstrap base is the slow part, ~3 minutes).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.clients import run_scepclient

REPO = Path(__file__).resolve().parents[2]
_PACKAGING_DIR = Path(__file__).parent
REQUIRED_ENV = "SCEP_CA_PACKAGING_TESTS"
# Built once per session and removed afterwards (the base image stays: debian-base.sh reuses it).
BASE_TAG = "localhost/scep-ca-base:bookworm"
PODMAN = ("podman", "--runtime", "runc")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _PACKAGING_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.packaging)


def require_tool(name: str) -> str:
    """The tool's path; without it: skip, or fail where the packaging tests are required (CI)."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} not found (bash scripts/system-deps.sh --packaging installs it)"
        if os.environ.get(REQUIRED_ENV) == "required":
            pytest.fail(f"{message}; {REQUIRED_ENV}=required", pytrace=False)
        pytest.skip(message)
    return found


def project_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
    return version


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 900.0) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure (with ``check``) fail the test showing its output."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {result.returncode}\n--- stdout ---\n{result.stdout[-4000:]}\n"
            f"--- stderr ---\n{result.stderr[-4000:]}",
            pytrace=False,
        )
    return result


def podman(*args: str, check: bool = True, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    return run([*PODMAN, *args], check=check, timeout=timeout)


def ulimit_args() -> list[str]:
    """--ulimit flags below the host's hard limits (podman's defaults exceed them here)."""
    out = run(["bash", "-c", "source scripts/podman-common.sh && printf '%s\\n' \"${ULIMITS[@]}\""]).stdout
    return out.split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_healthz(port: int, timeout: float = 120.0) -> None:
    """Until ``/healthz`` on 127.0.0.1:port answers 200 (generous: first start makes the CA)."""
    deadline = time.monotonic() + timeout
    last: object = None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        try:
            with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.5)
    pytest.fail(f"/healthz on port {port} did not answer 200 within {timeout} s: {last}", pytrace=False)


def enroll_from_host(port: int, integration: Mapping[str, Any], challenge: str, workdir: Path) -> Path:
    """micromdm's scepclient on the host enrolls ``CN=<workdir's name>`` through the published
    or host port; the certificate's path (the test fails with the client's output otherwise)."""
    enrolled = run_scepclient(
        f"http://127.0.0.1:{port}/scep/{integration['id']}",
        challenge,
        workdir,
        subject_cn=workdir.name,
        # No -ca-fingerprint: with it scepclient encrypts to the CA, and only the encryption RA
        # decrypts (README "Security"); without it, it picks the RA from GetCACert.
    )
    assert enrolled.issued, enrolled.describe()
    return enrolled.cert_path


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Timings(dict[str, float]):
    """Build times of the session, printed at its end (the README's figures come from here)."""


@pytest.fixture(scope="session")
def timings() -> Iterator[Timings]:
    measured = Timings()
    yield measured
    for name, seconds in measured.items():
        print(f"\n[packaging] {name}: {seconds:.1f} s", file=sys.stderr)


@pytest.fixture(scope="session")
def packaging_tools() -> None:
    for tool in ("podman", "runc", "mmdebstrap", "dpkg-deb", "strip"):
        require_tool(tool)


@pytest.fixture(scope="session")
def debian_base(packaging_tools: None, timings: Timings) -> str:
    """The mmdebstrap Debian 12 base image (scripts/debian-base.sh; reused when present)."""
    started = time.monotonic()
    tag = run(["bash", "scripts/debian-base.sh", "--tag", BASE_TAG]).stdout.strip().splitlines()[-1]
    timings["Debian 12 base (mmdebstrap + import, 0 when reused)"] = time.monotonic() - started
    return tag


@pytest.fixture(scope="session")
def wheelhouse(packaging_tools: None, tmp_path_factory: pytest.TempPathFactory, timings: Timings) -> Path:
    """Wheels of this tree and its dependencies for CPython 3.11, made once on the host."""
    started = time.monotonic()
    directory = tmp_path_factory.mktemp("wheelhouse")
    env_python = f"PYTHON={sys.executable}"
    run(["env", env_python, "bash", "scripts/wheelhouse.sh", str(directory)])
    timings["wheelhouse (pip wheel on the host)"] = time.monotonic() - started
    return directory


@pytest.fixture(scope="session")
def scep_ca_image(debian_base: str, wheelhouse: Path, timings: Timings) -> Iterator[str]:
    """The image built by scripts/build-image.sh from the mmdebstrap base."""
    tag = f"localhost/scep-ca:{unique_name('test')}"
    started = time.monotonic()
    built = (
        run(["bash", "scripts/build-image.sh", "--base", debian_base, "--wheelhouse", str(wheelhouse), "--tag", tag])
        .stdout.strip()
        .splitlines()[-1]
    )
    timings["image build (build-image.sh, base and wheels ready)"] = time.monotonic() - started
    assert built == tag
    yield tag
    podman("rmi", "--force", tag, check=False)


@pytest.fixture(scope="session")
def scep_ca_deb(debian_base: str, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory, timings: Timings) -> Path:
    """The .deb built by scripts/build-deb.sh, its venv made in the mmdebstrap base."""
    out = tmp_path_factory.mktemp("deb")
    started = time.monotonic()
    built = (
        run(["bash", "scripts/build-deb.sh", "--out", str(out), "--base", debian_base, "--wheelhouse", str(wheelhouse)])
        .stdout.strip()
        .splitlines()[-1]
    )
    timings["package build (build-deb.sh, base and wheels ready)"] = time.monotonic() - started
    deb = Path(built)
    assert deb.parent == out and deb.is_file(), built
    return deb
