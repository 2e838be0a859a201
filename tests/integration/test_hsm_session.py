"""A PKCS#11 session lost at run time (issue 12): 503 + Retry-After and a /readyz reason while
the token is out of reach, never 500, and recovery on the next request without a restart."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pkcs11
import pytest

from config import load_config
from scep_ca.app import build_app
from scep_ca.ca import create_ca, load_ca
from scep_ca.pkcs11_keys import Token, TokenSettings
from store.factory import open_store
from tests.hsm import init_softhsm


@pytest.fixture
def softhsm_env(tmp_path: Path) -> Any:
    saved = os.environ.get("SOFTHSM2_CONF")
    hsm = init_softhsm(tmp_path / "softhsm")
    yield hsm
    if saved is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = saved


async def test_lost_session_gives_503_then_recovers(tmp_path: Path, aiohttp_client: Any, softhsm_env: Any) -> None:
    hsm = softhsm_env
    token = Token(TokenSettings(str(hsm.module), hsm.label, hsm.pin))
    data = tmp_path / "data"
    create_ca(data, subject="CN=Session CA", key_size=2048, validity_days=30, passphrase=None, token=token)
    ca = load_ca(data, None, token)
    config = load_config(None, {}, {"data_dir": str(data)})
    client = await aiohttp_client(build_app(config, ca, open_store(config)))
    assert (await client.get("/readyz")).status == 200

    # The session and the library state vanish underneath (as after an HSM restart); the
    # next operation reopens by itself.
    pkcs11.lib(str(hsm.module)).finalize()
    assert (await client.get("/crl/ca.crl")).status == 200

    # Now the token is out of reach (its directory gone from the library's view): 503, not 500.
    pkcs11.lib(str(hsm.module)).finalize()
    os.environ["SOFTHSM2_CONF"] = str(tmp_path / "missing.conf")
    ready = await client.get("/readyz")
    body = await ready.json()
    assert ready.status == 503 and body["keys"].startswith("cannot load the PKCS#11 module"), body

    os.environ["SOFTHSM2_CONF"] = str(hsm.conf)
    assert (await client.get("/readyz")).status == 200
