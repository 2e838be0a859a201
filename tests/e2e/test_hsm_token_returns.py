"""A token that goes away and comes back (issue 17 item 12), against a real ``scep-ca serve``.

The SoftHSM token's directory is moved out of the token directory while the server runs (as a
token pulled out, or an HSM rebooting), then moved back. While it is gone every request that
needs a key gets 503 with Retry-After and ``/readyz`` says the key is unavailable; once it is
back the server enrolls again by itself, the same process, no restart. SoftHSM lists its
tokens only in C_Initialize, so this needs the server to re-initialise the library
(``keys.pkcs11.reinit_interval_seconds``, 1 s here).
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.protocol.client import build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import PKIStatus
from tests.e2e.clients import http_get
from tests.e2e.conftest import ScepCaServer
from tests.hsm import SoftHsm, init_softhsm

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def softhsm(tmp_path: Path) -> Iterator[SoftHsm]:
    saved = os.environ.get("SOFTHSM2_CONF")
    yield init_softhsm(tmp_path / "softhsm")
    if saved is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = saved


def _post(url: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"{url}?operation=PKIOperation", data=body, headers={"Content-Type": "application/x-pki-message"}
    )
    try:
        with _OPENER.open(request, timeout=30) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def test_the_server_recovers_when_the_token_comes_back(softhsm: SoftHsm, tmp_path: Path) -> None:
    keys = softhsm.keys_config(tmp_path / "pin")
    keys["pkcs11"]["reinit_interval_seconds"] = 1  # type: ignore[index]
    with ScepCaServer(tmp_path / "server", {"keys": keys, "server": {"workers": 1}}) as server:
        iid = server.create_integration("token-returns", subject="CN=$USERID$")["id"]
        url = server.scep_url(iid)
        enc = x509.load_pem_x509_certificate((server.data_dir / "ra-enc.pem").read_bytes())
        device_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signer = self_signed_signer(device_key)

        def request(challenge: str, tid: str) -> bytes:
            csr = build_csr(device_key, parse_dn(f"CN={tid}"), challenge)
            return build_request(csr, signer_cert=signer, signer_key=device_key, recipient=enc, transaction_id=tid).der

        status, _, body = _post(url, request(server.challenge(iid), "before"))
        assert status == 200 and open_reply(body, signer, device_key).status is PKIStatus.SUCCESS
        pending = server.challenge(iid)
        pid = server.pid

        (token_dir,) = (tmp_path / "softhsm" / "tokens").iterdir()
        away = tmp_path / "away"
        token_dir.rename(away)
        for attempt in range(3):  # every request while it is gone, not only the first
            status, headers, body = _post(url, request(pending, f"gone-{attempt}"))
            assert status == 503, (status, body)
            assert headers["Retry-After"] == "30"
            time.sleep(0.6)  # past the rate limit at least once: re-initialising does not find it either
        ready_status, _, ready = http_get(f"{server.base_url}/readyz")
        assert ready_status == 503, ready

        away.rename(token_dir)
        deadline = time.monotonic() + 20
        while True:
            status, _, body = _post(url, request(pending, "back"))
            if status != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 200, (status, body, server.log())
        reply = open_reply(body, signer, device_key)
        assert reply.status is PKIStatus.SUCCESS, reply.fail_info
        assert http_get(f"{server.base_url}/readyz")[0] == 200
        assert server.pid == pid and server.running, "recovered without a restart"
