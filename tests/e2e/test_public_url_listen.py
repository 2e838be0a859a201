"""The public URL in issued certificates against a real ``scep-ca init`` + ``scep-ca serve --port``.

``init`` without ``--public-url`` defaults the public URL to the listen address; that default
must follow the port ``serve`` listens on (``serve --port P`` issues certificates whose CDP and
AIA name port P, not 8080 where nothing answers), while an explicit ``--public-url`` is kept and
``serve`` warns that it differs from the listen address. The certificate comes from micromdm's
``scepclient`` and its URLs are fetched from the server.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

from tests.e2e import clients
from tests.e2e.clients import run_scepclient
from tests.e2e.conftest import DEFAULT_SUBJECT, SCEP_CA, _server_env


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(SCEP_CA), "--data-dir", str(data_dir), *args]
    result = subprocess.run(
        argv, env=_server_env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, f"$ {' '.join(argv)}\n{result.stdout}\n{result.stderr}"
    return result


class _Serve:
    """``scep-ca --data-dir DIR serve --port PORT`` (no config file), its log in ``log_path``."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for attempt in range(3):  # a free port can be taken before the server binds it
            self.port = clients.free_port()
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [str(SCEP_CA), "--data-dir", str(self.data_dir), "serve", "--port", str(self.port)],
                    env=_server_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=clients._die_with_parent,
                )
            try:
                clients.wait_http(f"http://{clients.LOOPBACK}:{self.port}/crl/ca.crl", timeout=15, proc=self._proc)
                return
            except clients.HarnessError:
                self.stop()
                if attempt == 2 or "address already in use" not in self.log().lower():
                    raise

    def stop(self) -> None:
        if self._proc is not None:
            clients.kill_process_group(self._proc)
            self._proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[_Serve]:
    server = _Serve(tmp_path / "data", tmp_path / "server.log")
    yield server
    server.stop()


def _enroll(server: _Serve, workdir: Path) -> x509.Certificate:
    created = json.loads(
        _cli(server.data_dir, "integration", "create", "Fleet", "--subject", DEFAULT_SUBJECT, "--json").stdout
    )
    challenge = _cli(server.data_dir, "challenge", "new", created["id"]).stdout.strip()
    url = f"http://{clients.LOOPBACK}:{server.port}/scep/{created['id']}"
    result = run_scepclient(url, challenge, workdir, subject_cn="device")
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


def test_a_defaulted_public_url_follows_serve_port(serve: _Serve, tmp_path: Path) -> None:
    init = _cli(serve.data_dir, "init")
    assert "Public URL:           http://127.0.0.1:8080" in init.stdout, init.stdout
    serve.start()
    assert serve.port != 8080
    cert = _enroll(serve, tmp_path / "device")
    base = f"http://127.0.0.1:{serve.port}"
    crl, ocsp, ca_issuers = _urls(cert)
    assert crl.startswith(f"{base}/crl/") and ocsp == f"{base}/ocsp" and ca_issuers.startswith(f"{base}/ca/")
    # The URLs answer: the relying party finds the CRL and the CA where the certificate says.
    for url in (crl, ca_issuers):
        status, _, _ = clients.http_get(url)
        assert status == 200, url
    assert "differs from the listen address" not in serve.log(), serve.log()


def test_an_explicit_public_url_is_kept_and_serve_warns(serve: _Serve, tmp_path: Path) -> None:
    _cli(serve.data_dir, "init", "--public-url", "http://127.0.0.1:8080")
    serve.start()
    cert = _enroll(serve, tmp_path / "device")
    crl, ocsp, ca_issuers = _urls(cert)
    assert crl.startswith("http://127.0.0.1:8080/crl/") and ocsp == "http://127.0.0.1:8080/ocsp"
    assert ca_issuers.startswith("http://127.0.0.1:8080/ca/")
    expected = f"differs from the listen address http://127.0.0.1:{serve.port}"
    assert expected in serve.log(), serve.log()
