"""The systemd units (issue 22): `systemd-analyze security --offline=yes` rates scep-ca.service
2.0 or lower ("OK"), and `systemd-analyze verify` finds nothing to report in any unit the package
ships (scripts/build-deb.sh leaves out the ones that are still a commented-out seam)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.packaging.conftest import REPO, require_tool, run

UNITS_DIR = REPO / "packaging" / "systemd"
UNIT = UNITS_DIR / "scep-ca.service"
SYSTEM_UNITS = Path("/lib/systemd/system")


def _shipped_units() -> dict[str, str]:
    """The units build-deb.sh installs: those with a [Unit] section that is not commented out."""
    units = {p.name: p.read_text() for p in sorted(UNITS_DIR.iterdir()) if p.suffix in (".service", ".timer")}
    return {name: text for name, text in units.items() if re.search(r"^\[Unit\]", text, re.MULTILINE)}


def _verify(units: dict[str, str], root: Path) -> tuple[int, str]:
    """`systemd-analyze verify` in a root holding the units, the system's own units (the targets
    they name) and an executable /usr/bin/scep-ca, as the package installs it; (status, output)."""
    (root / "etc/systemd/system").mkdir(parents=True)
    for name, text in units.items():
        (root / "etc/systemd/system" / name).write_text(text)
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/scep-ca").write_text("#!/bin/sh\n")
    (root / "usr/bin/scep-ca").chmod(0o755)
    result = run([require_tool("systemd-analyze"), "verify", f"--root={root}", "--man=no", *units], check=False)
    return result.returncode, result.stdout + result.stderr


def test_unit_exposure_is_at_most_2() -> None:
    result = run([require_tool("systemd-analyze"), "security", "--offline=yes", str(UNIT)])
    found = re.search(r"Overall exposure level for scep-ca\.service: (\d+\.\d+) (\w+)", result.stdout)
    assert found, result.stdout
    assert float(found[1]) <= 2.0 and found[2] == "OK", found[0]


def test_shipped_units_verify_clean(tmp_path: Path) -> None:
    units = _shipped_units()
    assert {"scep-ca.service", "scep-ca-backup.service", "scep-ca-backup.timer"} <= set(units)
    assert _verify(units, tmp_path) == (0, "")


def test_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive is reported."""
    broken = UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    status, output = _verify({"scep-ca.service": broken}, tmp_path)
    assert "Unknown key 'NoNewPrivilege'" in output, (status, output)
