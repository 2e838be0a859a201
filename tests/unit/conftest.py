"""Unit-test fixtures: a throwaway CA and device keys, made once per session (RSA keygen is slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.pki.ca import CAIdentity, create_ca


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CAIdentity:
    return create_ca(
        Path(tmp_path_factory.mktemp("ca")),
        subject="CN=Unit Test CA,O=scep-ca",
        key_size=2048,
        validity_days=3650,
        passphrase=None,
    )


@pytest.fixture(scope="session")
def device_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
