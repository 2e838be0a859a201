"""The public URL in issued certificates against a real ``scep-ca init`` + ``scep-ca serve --port``.

``init`` without ``--public-url`` defaults the public URL to the listen address; that default
must follow the port ``serve`` listens on (``serve --port P`` issues certificates whose CDP and
AIA name port P, not 8080 where nothing answers), while an explicit ``--public-url`` is kept and
``serve`` warns that it differs from the listen address. The certificate comes from micromdm's
``scepclient``; the URLs it names are fetched from the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

from tests.e2e import clients
from tests.e2e.clients import run_scepclient
from tests.e2e.conftest import ScepCaServer


class _PortFlagServer(ScepCaServer):
    """``scep-ca serve --port P``: the port is a flag, the config file names none (nor a public URL)."""

    def _write_config(self) -> None:
        config: dict[str, Any] = {"server": {"host": clients.LOOPBACK}}
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def _serve_argv(self) -> list[str]:
        return [*super()._serve_argv(), "--port", str(self.port)]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_PortFlagServer]:
    server = _PortFlagServer(tmp_path / "scep-ca")
    server.base_dir.mkdir(parents=True)
    server._write_config()
    yield server
    server.stop()


def _enroll(server: ScepCaServer, workdir: Path) -> x509.Certificate:
    integration = server.create_integration("Fleet")
    result = run_scepclient(server.scep_url(integration["id"]), server.challenge(integration["id"]), workdir)
    assert result.issued, result.describe()
    return x509.load_pem_x509_certificate(result.cert_path.read_bytes())


def _urls(cert: x509.Certificate) -> tuple[str, str, str]:
    """The CDP URI and the AIA's OCSP and caIssuers URIs (RFC 5280 sections 4.2.1.13, 4.2.2.1)."""
    (point,) = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert point.full_name is not None
    (crl,) = point.full_name
    aia = {
        d.access_method: d.access_location.value
        for d in cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    }
    return crl.value, aia[AuthorityInformationAccessOID.OCSP], aia[AuthorityInformationAccessOID.CA_ISSUERS]


def test_a_defaulted_public_url_follows_serve_port(server: _PortFlagServer, tmp_path: Path) -> None:
    init = server.cli("init")
    assert "Public URL:           http://127.0.0.1:8080" in init.stdout, init.stdout
    server.start()
    assert server.port != 8080
    crl, ocsp, ca_issuers = _urls(_enroll(server, tmp_path / "device"))
    base = server.base_url
    assert crl.startswith(f"{base}/crl/") and ocsp == f"{base}/ocsp" and ca_issuers.startswith(f"{base}/ca/")
    # The relying party finds the CRL and the CA where the certificate says.
    for url in (crl, ca_issuers):
        status, _, _ = clients.http_get(url)
        assert status == 200, url
    assert "differs from the listen address" not in server.log(), server.log()


def test_an_explicit_public_url_is_kept_and_serve_warns(server: _PortFlagServer, tmp_path: Path) -> None:
    server.cli("init", "--public-url", "http://127.0.0.1:8080")
    server.start()
    crl, ocsp, ca_issuers = _urls(_enroll(server, tmp_path / "device"))
    assert crl.startswith("http://127.0.0.1:8080/crl/") and ocsp == "http://127.0.0.1:8080/ocsp"
    assert ca_issuers.startswith("http://127.0.0.1:8080/ca/")
    server.wait_log(f"differs from the listen address http://127.0.0.1:{server.port}")
