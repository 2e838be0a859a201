"""A SoftHSM2 token per test run (README "Keys in an HSM (PKCS#11)"): a temporary SOFTHSM2_CONF and token dir.

Missing ``softhsm2-util`` or the module is a failure, never a skip (scripts/system-deps.sh installs them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pkcs11

SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
TOKEN_LABEL = "scep-ca"
USER_PIN = "1234"
SO_PIN = "5678"


@dataclass(frozen=True)
class SoftHsm:
    conf: Path
    module: Path = SOFTHSM_MODULE
    label: str = TOKEN_LABEL
    pin: str = USER_PIN

    def keys_config(self, pin_file: Path, ra_keys: str | None = None) -> dict[str, object]:
        """The ``keys`` section of a scep-ca config for this token (PIN from ``pin_file``), with
        ``keys.pkcs11.ra_keys`` when given."""
        pin_file.write_text(self.pin + "\n")
        pin_file.chmod(0o600)  # refused otherwise, like a key file
        pkcs11 = {"module": str(self.module), "token_label": self.label, "pin_file": str(pin_file)}
        return {"pkcs11": pkcs11 | ({"ra_keys": ra_keys} if ra_keys else {})}


def init_softhsm(workdir: Path) -> SoftHsm:
    """A fresh token ``scep-ca`` (user PIN 1234, SO PIN 5678) in ``workdir``; sets SOFTHSM2_CONF."""
    util = shutil.which("softhsm2-util")
    assert util is not None, "softhsm2-util is missing: run scripts/system-deps.sh"
    assert SOFTHSM_MODULE.exists(), f"{SOFTHSM_MODULE} is missing: run scripts/system-deps.sh"
    tokens = workdir / "tokens"
    tokens.mkdir(parents=True)
    conf = workdir / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [util, "--init-token", "--free", "--label", TOKEN_LABEL, "--pin", USER_PIN, "--so-pin", SO_PIN],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )
    return SoftHsm(conf)


@contextlib.contextmanager
def softhsm_in_process(workdir: Path) -> Iterator[SoftHsm]:
    """A fresh token for tests that use it from this process; afterwards the library is finalised.

    python-pkcs11 keeps one library per process and SoftHSM reads SOFTHSM2_CONF only at
    C_Initialize: without the finalise, the next test's token directory would be ignored.
    """
    saved = os.environ.get("SOFTHSM2_CONF")
    hsm = init_softhsm(workdir)
    try:
        yield hsm
    finally:
        os.environ["SOFTHSM2_CONF"] = str(hsm.conf)
        with contextlib.suppress(pkcs11.PKCS11Error):
            pkcs11.lib(str(hsm.module)).finalize()
        if saved is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = saved


def private_key_objects(hsm: SoftHsm, kind: str = "privkey") -> str:
    """``pkcs11-tool --list-objects --type privkey`` (or ``kind``: secrkey, pubkey, cert) as
    the user: labels, ids and access flags."""
    tool = shutil.which("pkcs11-tool")
    assert tool is not None, "pkcs11-tool (opensc) is missing: run scripts/system-deps.sh"
    result = subprocess.run(
        [
            tool,
            "--module",
            str(hsm.module),
            "--token-label",
            hsm.label,
            "--login",
            "--pin",
            hsm.pin,
            "--list-objects",
            "--type",
            kind,
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "SOFTHSM2_CONF": str(hsm.conf)},
    )
    return result.stdout
