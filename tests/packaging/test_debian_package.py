"""The Debian package (issue 22): lintian finds no errors; installed into the mmdebstrap Debian 12
base in a container it makes the scep-ca user and a 0700 /var/lib/scep-ca, `scep-ca --version`
prints pyproject's version, `serve` runs as scep-ca from /etc/scep-ca/config.yaml and micromdm's
scepclient enrolls from the host; `dpkg -r` keeps the configuration and the CA, `dpkg --purge`
removes the configuration and keeps the CA's keys, saying so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.packaging.conftest import (
    enroll_from_host,
    free_port,
    podman,
    project_version,
    require_tool,
    run,
    ulimit_args,
    unique_name,
    wait_healthz,
)

SUBJECT = "CN=$USERID$,OU=MDM,O=scep-client,C=US"
CONFIG = "/etc/scep-ca/config.yaml"
# The uids of the processes whose command line runs `serve` (the base has no procps).
SERVE_UIDS = (
    "import os\n"
    "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "    try:\n"
    "        argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')\n"
    "    except OSError:\n"
    "        continue\n"
    "    if b'serve' in argv:\n"
    "        print(pid, os.stat(f'/proc/{pid}').st_uid)\n"
)


def _exists(container: str, path: str) -> bool:
    return podman("exec", container, "test", "-e", path, check=False).returncode == 0


def _serve_processes(container: str) -> list[tuple[int, int]]:
    out = podman("exec", container, "/usr/bin/python3", "-c", SERVE_UIDS).stdout
    return [(int(pid), int(uid)) for pid, uid in (line.split() for line in out.splitlines())]


def _as_scep_ca(container: str, *args: str) -> Any:
    return podman("exec", "--user", "scep-ca", container, "scep-ca", "--config", CONFIG, *args)


def test_package_carries_pyprojects_version(scep_ca_deb: Path) -> None:
    fields = run(["dpkg-deb", "--field", str(scep_ca_deb), "Package", "Version"]).stdout
    assert fields.splitlines() == ["Package: scep-ca", f"Version: {project_version()}"]
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    assert scep_ca_deb.name == f"scep-ca_{project_version()}_{arch}.deb"


def test_lintian_reports_no_errors(scep_ca_deb: Path) -> None:
    require_tool("lintian")
    result = run(["lintian", "--tag-display-limit", "0", str(scep_ca_deb)], check=False)
    errors = [line for line in result.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], result.stdout
    # The warnings left are the ones the README explains (the venv's interpreter, upstream files).
    warnings = {line.split()[2] for line in result.stdout.splitlines() if line.startswith("W:")}
    assert warnings <= {"unusual-interpreter", "script-not-executable", "no-manual-page"}, result.stdout


def test_deb_installs_serves_as_scep_ca_and_enrolls(scep_ca_deb: Path, debian_base: str, tmp_path: Path) -> None:
    name = unique_name("scep-ca-deb-test")
    port = free_port()
    podman(
        "run", "--detach", "--name", name, "--network", "host", *ulimit_args(),
        "--volume", f"{scep_ca_deb.parent}:/pkg:ro", debian_base, "sleep", "infinity",
    )  # fmt: skip
    try:
        podman("exec", name, "dpkg", "-i", f"/pkg/{scep_ca_deb.name}")
        assert podman("exec", name, "scep-ca", "--version").stdout.strip() == f"scep-ca {project_version()}"
        assert podman("exec", name, "stat", "-c", "%U %a", "/var/lib/scep-ca").stdout.split() == ["scep-ca", "700"]
        assert _exists(name, "/lib/systemd/system/scep-ca.service")

        podman("exec", "--detach", "--user", "scep-ca", "--env", f"SCEP_CA_SERVER_PORT={port}", name,
               "scep-ca", "--config", CONFIG, "serve")  # fmt: skip
        wait_healthz(port)
        uid = int(podman("exec", name, "id", "-u", "scep-ca").stdout)
        serving = _serve_processes(name)
        assert serving and {u for _, u in serving} == {uid}, serving
        assert podman("exec", name, "stat", "-c", "%U", "/var/lib/scep-ca/ca.pem").stdout.strip() == "scep-ca"

        integration = json.loads(
            _as_scep_ca(name, "integration", "create", "Package fleet", "--subject", SUBJECT, "--json").stdout
        )
        challenge = _as_scep_ca(name, "challenge", "new", integration["id"]).stdout.strip()
        enroll_from_host(port, integration, challenge, tmp_path / "bob")

        for pid, _ in serving:
            podman("exec", name, "kill", "-TERM", str(pid), check=False)

        # Removal keeps the configuration and the CA; purge removes the configuration only.
        podman("exec", name, "dpkg", "-r", "scep-ca")
        assert not _exists(name, "/usr/bin/scep-ca") and not _exists(name, "/opt/scep-ca/bin")
        assert _exists(name, CONFIG) and _exists(name, "/var/lib/scep-ca/ca.pem")
        purged = podman("exec", name, "dpkg", "--purge", "scep-ca")
        assert "kept /var/lib/scep-ca" in purged.stderr, purged
        assert not _exists(name, "/etc/scep-ca")
        assert _exists(name, "/var/lib/scep-ca/ca.pem")
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
