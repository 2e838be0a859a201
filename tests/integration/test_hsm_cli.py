"""Every CLI command that loads or uses a key works with ``keys.pkcs11`` (issue 17 item 15), the
RA keys' CKA_LABELs are clean text (item 16), and the PIN file is held to the key files' modes
(item 14).

``ca rollover``, ``ca activate-next`` and ``ra create`` with token keys are in
``test_hsm_keys.py``; ``init`` is this module's fixture. The async commands run in a thread:
they start their own event loop (``asyncio.run``), and the test's loop serves the app.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from config import load_config
from scep_ca.cli.main import main
from scep_ca.pki.ca_set import load_ca_set
from scep_ca.pki.pkcs11_keys import Token, TokenSettings
from scep_ca.protocol.client import Reply, build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import PKIStatus
from scep_ca.server.app import build_app
from store.factory import open_store
from tests.hsm import SoftHsm, private_key_objects
from tests.integration.conftest import HsmCli

Client = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


class Enroller:
    """The data directory served as ``serve`` would (keys in the token), for requests to approve or revoke."""

    def __init__(self, client: TestClient, ra_enc: x509.Certificate) -> None:  # type: ignore[type-arg]
        self.client, self.ra_enc = client, ra_enc

    async def enroll(self, integration: str, challenge: str, tid: str, key: rsa.RSAPrivateKey, cn: str) -> Reply:
        signer = self_signed_signer(key)
        csr = build_csr(key, parse_dn(f"CN={cn}"), challenge)
        req = build_request(csr, signer_cert=signer, signer_key=key, recipient=self.ra_enc, transaction_id=tid)
        resp = await self.client.post(f"/scep/{integration}?operation=PKIOperation", data=req.der)
        assert resp.status == 200, await resp.text()
        return open_reply(await resp.read(), signer, key)


@pytest.fixture
async def served(cli: HsmCli, hsm: SoftHsm, aiohttp_client: Client) -> Enroller:
    cas = load_ca_set(cli.data_dir, None, Token(TokenSettings(str(hsm.module), hsm.label, hsm.pin)))
    config = load_config(None, {}, {"data_dir": str(cli.data_dir)})
    client = await aiohttp_client(build_app(config, cas, open_store(config)))
    return Enroller(client, x509.load_pem_x509_certificate((cli.data_dir / "ra-enc.pem").read_bytes()))


async def _run(cli: HsmCli, *args: str) -> str:
    return await asyncio.to_thread(cli, *args)


async def _new_integration(cli: HsmCli, name: str, *flags: str) -> str:
    created = json.loads(await _run(cli, "integration", "create", name, "--subject", "CN=$USERID$", "--json", *flags))
    return str(created["id"])


async def test_every_key_using_command_works_with_token_keys(
    cli: HsmCli, served: Enroller, tmp_path: Path, device_key: rsa.RSAPrivateKey
) -> None:
    ca = x509.load_pem_x509_certificate((cli.data_dir / "ca.pem").read_bytes())
    plain = await _new_integration(cli, "plain")
    assert json.loads(await _run(cli, "integration", "show", plain, "--json"))["id"] == plain
    assert plain in await _run(cli, "integration", "list")

    issued = await served.enroll(plain, (await _run(cli, "challenge", "new", plain)).split()[-1], "t1", device_key, "a")
    assert issued.status is PKIStatus.SUCCESS, issued.fail_info
    serial = format(issued.certificates[0].serial_number, "x")
    assert json.loads(await _run(cli, "cert", "show", serial, "--json"))["status"] == "valid"
    assert f"revoked {serial}" in await _run(cli, "cert", "revoke", serial, "--reason", "keyCompromise")

    # The command of issue 17 item 15: it failed with "set keys.pkcs11 in the configuration".
    crl_file = tmp_path / "ca.crl"
    assert "wrote" in await _run(cli, "crl", "--out", str(crl_file))
    crl = x509.load_der_x509_crl(crl_file.read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    pem = x509.load_pem_x509_crl((await _run(cli, "crl", "--pem")).encode())
    assert pem.is_signature_valid(ca.public_key())  # type: ignore[arg-type]

    approval = await _new_integration(cli, "approval", "--require-approval")
    for tid in ("p1", "p2"):
        challenge = (await _run(cli, "challenge", "new", approval)).split()[-1]
        pending = await served.enroll(approval, challenge, tid, device_key, tid)
        assert pending.status is PKIStatus.PENDING, pending.fail_info
    assert f"{approval}:p1" in await _run(cli, "request", "list")
    assert f"approved {approval}:p1" in await _run(cli, "request", "approve", f"{approval}:p1")
    assert f"rejected {approval}:p2" in await _run(cli, "request", "reject", f"{approval}:p2")
    polled = await served.enroll(approval, "unused", "p1", device_key, "p1")
    assert polled.status is PKIStatus.SUCCESS
    polled.certificates[0].verify_directly_issued_by(ca)

    # Loads the CA (with its token keys) before it finds there is nothing to call for ndes.
    cli.capsys.readouterr()
    code = await asyncio.to_thread(
        main, ["--config", str(cli.config), "--data-dir", str(cli.data_dir), "integration", "test-validator", plain]
    )
    assert (code, cli.capsys.readouterr().err) == (
        1,
        "scep-ca: this integration uses one-time challenges (ndes): nothing to call\n",
    )
    assert "revoked 1 certificate" in await _run(cli, "integration", "delete", approval, "--yes")
    assert "CN=Token CA SCEP RA signing,O=Example" in await _run(cli, "keys", "list")


def test_ra_key_labels_are_clean_text(cli: HsmCli, hsm: SoftHsm) -> None:
    """``init`` made the pair: pkcs11-tool shows the RFC 4514 subject, not ``<Name(...)>``."""
    labels = [line.split(":", 1)[1].strip() for line in private_key_objects(hsm).splitlines() if "label:" in line]
    assert sorted(labels) == [
        "CN=Token CA SCEP RA encryption,O=Example",
        "CN=Token CA SCEP RA signing,O=Example",
        "CN=Token CA,O=Example CA",
    ], labels


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_a_pin_file_open_to_others_is_refused_with_one_line(
    cli: HsmCli, capsys: pytest.CaptureFixture[str], mode: int
) -> None:
    pin_file = cli.config.parent / "pin"
    pin_file.chmod(mode)
    capsys.readouterr()
    code = main(["--config", str(cli.config), "--data-dir", str(cli.data_dir), "keys", "list"])
    out, err = capsys.readouterr()
    assert code != 0 and not out
    problem = f"key file {pin_file} is accessible by group or others (mode {mode:04o}); fix: chmod 600 {pin_file}"
    assert err == f"scep-ca: {problem}\n"
    pin_file.chmod(0o600)
    assert "CN=Token CA,O=Example CA" in cli("keys", "list")
