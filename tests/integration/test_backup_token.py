"""A restore with keys in a PKCS#11 token (SoftHSM): the token must hold every key that a
restored ``.pkcs11`` reference names; the restore says which are missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from scep_ca.cli.main import main
from scep_ca.pki.pkcs11_keys import KeyRef
from tests.hsm import SoftHsm
from tests.integration.conftest import HsmCli


def _restore(cli: HsmCli, backup: Path, target: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--config", str(cli.config), "--data-dir", str(target), "restore", str(backup)])
    out, err = capsys.readouterr()
    return code, out + err


def test_restore_checks_the_token_holds_the_referenced_keys(
    cli: HsmCli, hsm: SoftHsm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = tmp_path / "b.tar"
    cli("backup", "--out", str(backup), "--insecure-plaintext")
    refs = sorted(p.name for p in cli.data_dir.iterdir() if p.name.endswith(".pkcs11"))
    assert refs, "init with keys.pkcs11 writes key references"
    code, text = _restore(cli, backup, tmp_path / "same-token", capsys)
    assert code == 0, text
    assert "MISSING" not in text
    # The RA key leaves the token: the restore names it.
    ref = KeyRef.parse((cli.data_dir / "ra.key.pkcs11").read_text())
    tool = shutil.which("pkcs11-tool")
    assert tool is not None, "pkcs11-tool (opensc) is missing: run scripts/system-deps.sh"
    subprocess.run(
        [tool, "--module", str(hsm.module), "--token-label", hsm.label, "--login", "--pin", hsm.pin,
         "--delete-object", "--type", "privkey", "--id", ref.key_id.hex()],
        check=True, capture_output=True, env={**os.environ, "SOFTHSM2_CONF": str(hsm.conf)},
    )  # fmt: skip
    code, text = _restore(cli, backup, tmp_path / "lost-key", capsys)
    assert code == 1, text
    missing = [line for line in text.splitlines() if line.startswith("MISSING")]
    assert missing == [f"MISSING in the token: ra.key.pkcs11 ({ref.label}, id {ref.key_id.hex()})"], text
