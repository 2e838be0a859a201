"""The container image (issue 22): built from the mmdebstrap Debian 12 base, run with a volume
and a published port, as a non-root user on a read-only root; micromdm's scepclient enrolls from
the host; after a restart the integration and the certificate are still there; the health
check reports healthy; SIGTERM stops it cleanly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography import x509

from tests.packaging.conftest import (
    enroll_from_host,
    free_port,
    podman,
    project_version,
    ulimit_args,
    unique_name,
    wait_healthz,
)

SUBJECT = "CN=$USERID$,OU=MDM,O=scep-client,C=US"


def _inspect(name: str, template: str) -> str:
    return podman("inspect", "--format", template, name).stdout.strip()


def _cli_json(container: str, *args: str) -> Any:
    return json.loads(podman("exec", container, "scep-ca", *args, "--json").stdout)


def test_image_enrolls_keeps_state_across_restart_and_is_healthy(scep_ca_image: str, tmp_path: Path) -> None:
    assert _inspect(scep_ca_image, '{{index .Config.Labels "org.opencontainers.image.version"}}') == project_version()

    name = unique_name("scep-ca-image-test")
    volume = podman("volume", "create", unique_name("scep-ca-data")).stdout.strip()
    port = free_port()
    try:
        podman(
            "run", "--detach", "--name", name, "--read-only", *ulimit_args(),
            "--volume", f"{volume}:/var/lib/scep-ca", "--publish", f"127.0.0.1:{port}:8080",
            scep_ca_image,
        )  # fmt: skip
        wait_healthz(port)

        # Non-root (the image's fixed uid), read-only root file system; the volume is writable.
        assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
        assert _inspect(name, "{{.HostConfig.ReadonlyRootfs}}") == "true"
        denied = podman("exec", name, "touch", "/opt/scep-ca/written", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied
        assert podman("exec", name, "stat", "-c", "%u %a", "/var/lib/scep-ca").stdout.split() == ["10001", "700"]

        # `podman exec <container> scep-ca ...` needs no flags (SCEP_CA_DATA_DIR is set).
        integration = _cli_json(name, "integration", "create", "Container fleet", "--subject", SUBJECT)
        challenge = podman("exec", name, "scep-ca", "challenge", "new", integration["id"]).stdout.strip()
        cert_path = enroll_from_host(port, integration, challenge, tmp_path / "alice")
        serial = format(x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number, "x")

        # SIGTERM: serve drains and exits 0 (not killed after the grace period).
        podman("stop", "--time", "60", name)
        assert _inspect(name, "{{.State.ExitCode}}") == "0"
        podman("start", name)
        wait_healthz(port)

        assert integration["id"] in [i["id"] for i in _cli_json(name, "integration", "list")]
        certificates = _cli_json(name, "cert", "list")
        assert [c["serial"].lstrip("0") for c in certificates] == [serial], certificates
        assert certificates[0]["integration"] == integration["id"]

        # The HEALTHCHECK (kept by --format docker) runs the venv's Python against /healthz.
        assert podman("healthcheck", "run", name).returncode == 0
        assert _inspect(name, "{{.State.Health.Status}}") == "healthy"
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)
        podman("volume", "rm", "--force", volume, check=False)
