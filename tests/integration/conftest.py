"""An in-process scep-ca app on a real SQLite store in a temporary directory."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from challenge.issuer import issue_challenge
from config import Config, load_config
from scep_ca.cli.main import main
from scep_ca.pki.ca import CAIdentity, create_ca
from scep_ca.pki.ca_set import load_ca_set
from scep_ca.pki.pkcs11_keys import Token, TokenSettings
from scep_ca.pki.records import Integration
from scep_ca.protocol.client import Reply, build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.server.app import build_app
from store.base import Store
from store.factory import open_store
from tests.hsm import SoftHsm, softhsm_in_process

SUBJECT = "CN=$USERID$,O=Example"


@dataclass
class Server:
    client: TestClient  # type: ignore[type-arg]
    store: Store
    config: Config
    ca: CAIdentity
    integration: Integration
    other: Integration

    def url(self, integration_id: str | None = None) -> str:
        return f"/scep/{integration_id or self.integration.id}"

    async def challenge(self, integration_id: str | None = None) -> str:
        password = await issue_challenge(self.store, self.config.challenge, integration_id or self.integration.id)
        assert password is not None
        return password

    async def cert_count(self) -> int:
        return await self.store.count_certificates()


@pytest.fixture(scope="session")
def shared_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CAIdentity]:
    path = Path(tmp_path_factory.mktemp("ca"))
    return path, create_ca(path, subject="CN=Integration CA", key_size=2048, validity_days=3650, passphrase=None)


@pytest.fixture(scope="session")
def device_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _integration(integration_id: str) -> Integration:
    return Integration(
        id=integration_id,
        name=integration_id,
        subject_template=SUBJECT,
        created_at=dt.datetime.now(dt.UTC),
        validity_days=365,
        username=f"scep-{integration_id}",
    )


ServerFactory = Callable[..., Awaitable[Server]]


@pytest.fixture
async def make_server(
    tmp_path: Path,
    shared_ca: tuple[Path, CAIdentity],
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
) -> AsyncIterator[ServerFactory]:
    async def factory(**overrides: object) -> Server:
        config = load_config(None, {}, {"data_dir": str(tmp_path), **overrides})
        store = open_store(config)
        app = build_app(config, shared_ca[1], store)
        client = await aiohttp_client(app)
        main, other = _integration("intega"), _integration("integb")
        await store.create_integration(main)
        await store.create_integration(other)
        return Server(client, store, config, shared_ca[1], main, other)

    yield factory


@pytest.fixture
async def server(make_server: ServerFactory) -> Server:
    return await make_server()


@pytest.fixture
def hsm(tmp_path: Path) -> Iterator[SoftHsm]:
    with softhsm_in_process(tmp_path / "softhsm") as token:
        yield token


class HsmCli:
    def __init__(self, tmp_path: Path, hsm: SoftHsm, capsys: pytest.CaptureFixture[str]) -> None:
        self.data_dir = tmp_path / "data"
        self.config = tmp_path / "scep-ca.yaml"
        self._hsm, self._pin_file = hsm, tmp_path / "pin"
        self.write_config()
        self.capsys = capsys

    def write_config(self, *, ra_keys: str | None = None, passphrase_env: str | None = None) -> None:
        """The config every later call reads: the token, and ``keys.pkcs11.ra_keys`` and
        ``ca.passphrase_env`` when given."""
        settings: dict[str, object] = {"keys": self._hsm.keys_config(self._pin_file, ra_keys)}
        if passphrase_env:
            settings["ca"] = {"passphrase_env": passphrase_env}
        self.config.write_text(yaml.safe_dump(settings))

    def __call__(self, *args: str) -> str:
        self.capsys.readouterr()
        code = main(["--config", str(self.config), "--data-dir", str(self.data_dir), *args])
        out, err = self.capsys.readouterr()
        assert code == 0, err
        return out


@pytest.fixture
def cli(tmp_path: Path, hsm: SoftHsm, capsys: pytest.CaptureFixture[str]) -> HsmCli:
    runner = HsmCli(tmp_path, hsm, capsys)
    runner("init", "--subject", "CN=Token CA,O=Example")
    return runner


async def enroll_with_token(
    hsm: SoftHsm,
    data_dir: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    recipient: str,
    device_key: rsa.RSAPrivateKey,
    *,
    passphrase: bytes | None = None,
) -> Reply:
    """Load the data directory with the token as ``serve`` does and enroll to ``ra.pem`` or ``ra-enc.pem``."""
    cas = load_ca_set(data_dir, passphrase, Token(TokenSettings(str(hsm.module), hsm.label, hsm.pin)))
    config = load_config(None, {}, {"data_dir": str(data_dir)})
    store = open_store(config)
    client = await aiohttp_client(build_app(config, cas, store))
    await store.create_integration(_integration("tok"))
    challenge = await issue_challenge(store, config.challenge, "tok")
    assert challenge is not None
    signer = self_signed_signer(device_key)
    csr = build_csr(device_key, parse_dn("CN=alice,O=Example"), challenge)
    ra = x509.load_pem_x509_certificate((data_dir / recipient).read_bytes())
    req = build_request(csr, signer_cert=signer, signer_key=device_key, recipient=ra, transaction_id="t1")
    resp = await client.post("/scep/tok?operation=PKIOperation", data=req.der)
    assert resp.status == 200, await resp.text()
    return open_reply(await resp.read(), signer, device_key)
