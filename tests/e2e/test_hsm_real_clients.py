"""CA and RA keys in a SoftHSM2 token (issue 12): scepclient and certmonger enroll against a
``scep-ca serve`` whose keys never leave the token; its CRL and OCSP answers verify.

Also the operator-facing failures: a wrong PIN or a missing module makes ``serve`` exit
non-zero with one line and no traceback.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.clients import Certmonger, openssl_verify, run_scepclient
from tests.e2e.conftest import SCEP_CA, ScepCaServer, _server_env
from tests.e2e.test_enroll_real_clients import add_ca_without_cert, check_issued
from tests.e2e.test_revocation_real_clients import fetch_crl, ocsp_status
from tests.hsm import SoftHsm, init_softhsm, private_key_objects


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    saved = os.environ.get("SOFTHSM2_CONF")
    yield init_softhsm(tmp_path_factory.mktemp("softhsm"))
    if saved is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = saved


@pytest.fixture(scope="module")
def hsm_server(softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepCaServer]:
    base = tmp_path_factory.mktemp("scep-ca-hsm")
    with ScepCaServer(base, {"keys": softhsm.keys_config(base / "pin")}) as server:
        yield server


def _scep_ca(*args: str, config: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    argv = [str(SCEP_CA), "--config", str(config), "--data-dir", str(data_dir), *args]
    return subprocess.run(
        argv, env=_server_env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def test_init_generates_sensitive_non_extractable_keys_in_the_token(softhsm: SoftHsm, tmp_path: Path) -> None:
    config = tmp_path / "scep-ca.yaml"
    config.write_text(yaml.safe_dump({"keys": softhsm.keys_config(tmp_path / "pin")}))
    data = tmp_path / "data"
    result = _scep_ca("init", "--subject", "CN=HSM Init CA,O=test", config=config, data_dir=data)
    assert result.returncode == 0, result.stderr
    assert "token scep-ca (pkcs11:token=scep-ca;id=" in result.stdout
    # Only certificates, key references and the database (the audit log of the init; its
    # keys are in the token): no private key file anywhere in the data directory.
    names = sorted(p.name for p in data.rglob("*") if p.is_file())
    refs = ["ca.key.pkcs11", "ra-enc.key.pkcs11", "ra.key.pkcs11"]  # the CA and the NDES RA pair
    assert names == sorted([*refs, "ca.pem", "ra-enc.pem", "ra.pem", "scep-ca.sqlite3"]), names
    for path in data.rglob("*"):
        assert b"PRIVATE KEY" not in path.read_bytes(), path
    objects = private_key_objects(softhsm)
    for name in refs:
        key_id = (data / name).read_text().split("id=", 1)[1].split(";", 1)[0].replace("%", "")
        block = objects.split(f"ID:         {key_id}", 1)[1].split("Private Key Object", 1)[0]
        assert "sensitive, always sensitive, never extractable" in block, objects
    listed = _scep_ca("keys", "list", config=config, data_dir=data)
    assert listed.returncode == 0, listed.stderr
    assert "current CA" in listed.stdout and "current RA" in listed.stdout
    assert listed.stdout.count("token scep-ca") == 3, listed.stdout


def test_keys_import_moves_a_file_key_into_the_token(softhsm: SoftHsm, tmp_path: Path) -> None:
    config = tmp_path / "scep-ca.yaml"
    data = tmp_path / "data"
    config.write_text("{}\n")
    assert _scep_ca("init", config=config, data_dir=data).returncode == 0
    config.write_text(yaml.safe_dump({"keys": softhsm.keys_config(tmp_path / "pin")}))
    result = _scep_ca("keys", "import", "ca", "--label", "imported CA", config=config, data_dir=data)
    assert result.returncode == 0, result.stderr
    assert "WARNING: this key existed outside the token" in result.stderr
    assert not (data / "ca.key").exists() and (data / "ca.key.pkcs11").exists()
    listed = _scep_ca("keys", "list", config=config, data_dir=data).stdout
    assert "imported CA" in listed and f"file {data / 'ra.key'}" in listed, listed
    assert "imported CA" in private_key_objects(softhsm)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pin": "9999"}, "scep-ca: the PIN for PKCS#11 token 'scep-ca' is wrong\n"),
        ({"module": "/nonexistent/libpkcs11.so"}, "scep-ca: cannot load the PKCS#11 module /nonexistent/libpkcs11.so"),
    ],
)
def test_serve_with_a_wrong_pin_or_missing_module_exits_with_one_line(
    hsm_server: ScepCaServer, softhsm: SoftHsm, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    keys = softhsm.keys_config(tmp_path / "pin")
    if "pin" in change:
        (tmp_path / "pin").write_text(change["pin"])
    else:
        keys["pkcs11"]["module"] = change["module"]  # type: ignore[index]
    config = tmp_path / "scep-ca.yaml"
    config.write_text(yaml.safe_dump({"server": {"port": 1, "workers": 2}, "keys": keys}))
    result = _scep_ca("serve", config=config, data_dir=hsm_server.data_dir)
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr


def test_scepclient_and_certmonger_enroll_and_crl_and_ocsp_verify(
    hsm_server: ScepCaServer, certmonger: Certmonger, tmp_path: Path
) -> None:
    server = hsm_server
    # secret.key is the challenge HMAC secret (section 9), not a private key.
    assert not (server.data_dir / "ca.key").exists() and not (server.data_dir / "ra.key").exists()
    assert not [p for p in server.data_dir.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    integration = server.create_integration("hsm-scepclient")
    result = run_scepclient(integration["scep_url"], server.challenge(integration["id"]), tmp_path, subject_cn="hsm")
    assert result.issued, result.describe()
    check_issued(server, integration, result.cert_path, "hsm")
    assert openssl_verify(result.cert_path, server.ca_pem).ok

    integration = server.create_integration("hsm-certmonger")
    add_ca_without_cert(certmonger, server, integration)
    cert_path = tmp_path / "carol.pem"
    enrolled = certmonger.request(
        "scep-ca",
        tmp_path / "carol.key",
        cert_path,
        server.challenge(integration["id"]),
        "C=US,O=scep-client,OU=MDM,CN=carol",
    )
    assert enrolled.state == "MONITORING", f"{enrolled.stdout}\n{certmonger.daemon_log()[-3000:]}"

    crl_path, _ = fetch_crl(server, tmp_path / "crl")
    verified = subprocess.run(
        ["openssl", "crl", "-in", str(crl_path), "-CAfile", str(server.ca_pem), "-verify", "-noout"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0 and "verify OK" in verified.stderr + verified.stdout, verified
    assert ocsp_status(server, result.cert_path).status == "good"  # asserts "Response verify OK"


def test_serve_first_start_with_ra_keys_in_files_and_scepclient_enrolls(softhsm: SoftHsm, tmp_path: Path) -> None:
    """``keys.pkcs11.ra_keys: files``: the CA that ``serve`` makes on its first start (in a forked
    child) has its key in the token and its RA pair in 0600 files; scepclient enrolls through them."""
    keys = softhsm.keys_config(tmp_path / "pin", ra_keys="files")
    settings = {"keys": keys, "ca": {"subject": "CN=HSM RA files CA,O=test"}}
    with ScepCaServer(tmp_path / "server", settings) as server:
        data = server.data_dir
        assert (data / "ca.key.pkcs11").exists() and not (data / "ca.key").exists()
        for name in ("ra.key", "ra-enc.key"):
            assert (data / name).stat().st_mode & 0o777 == 0o600
            assert (data / name).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert not list(data.glob("ra*.pkcs11"))
        labels = [line for line in private_key_objects(softhsm).splitlines() if "HSM RA files CA" in line]
        assert [line.split(":", 1)[1].strip() for line in labels] == ["CN=HSM RA files CA,O=test CA"], labels

        integration = server.create_integration("hsm-ra-files")
        result = run_scepclient(integration["scep_url"], server.challenge(integration["id"]), tmp_path, subject_cn="rf")
        assert result.issued, result.describe()
        check_issued(server, integration, result.cert_path, "rf")
        assert openssl_verify(result.cert_path, server.ca_pem).ok
