"""The systemd unit (issue 22): `systemd-analyze security --offline=yes` rates it 2.0 or lower
("OK"), and `systemd-analyze verify` finds nothing to report."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.packaging.conftest import REPO, require_tool, run

UNIT = REPO / "packaging" / "systemd" / "scep-ca.service"
SYSTEM_UNITS = Path("/lib/systemd/system")


def _verify(unit_text: str, root: Path) -> tuple[int, str]:
    """`systemd-analyze verify` in a root holding the unit, the system's own units (targets it
    names) and an executable /usr/bin/scep-ca, as the package installs it; (status, output)."""
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/scep-ca.service").write_text(unit_text)
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/scep-ca").write_text("#!/bin/sh\n")
    (root / "usr/bin/scep-ca").chmod(0o755)
    result = run(
        [require_tool("systemd-analyze"), "verify", f"--root={root}", "--man=no", "scep-ca.service"], check=False
    )
    return result.returncode, result.stdout + result.stderr


def test_unit_exposure_is_at_most_2() -> None:
    result = run([require_tool("systemd-analyze"), "security", "--offline=yes", str(UNIT)])
    found = re.search(r"Overall exposure level for scep-ca\.service: (\d+\.\d+) (\w+)", result.stdout)
    assert found, result.stdout
    assert float(found[1]) <= 2.0 and found[2] == "OK", found[0]


def test_unit_verifies_clean(tmp_path: Path) -> None:
    assert _verify(UNIT.read_text(), tmp_path) == (0, "")


def test_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive is reported."""
    broken = UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    status, output = _verify(broken, tmp_path)
    assert "Unknown key 'NoNewPrivilege'" in output, (status, output)
