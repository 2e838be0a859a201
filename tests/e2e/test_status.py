"""``scep-ca status`` and ``cert list --expiring`` against a real server process (issue 21, item 5).

The exit status is the contract a cron job or monitoring check relies on: 0 when nothing
needs action within 30 days, 1 when something does (a CA within 30 days of expiry, a
server whose CRL cannot be fetched).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.clients import run_scepclient
from tests.e2e.conftest import ScepCaServer


def test_status_exit_0_then_1_when_the_server_is_down_and_expiring_devices_listed(tmp_path: Path) -> None:
    with ScepCaServer(tmp_path / "srv") as server:
        short = server.create_integration("short", validity_days=20)
        enrolled = run_scepclient(short["scep_url"], server.challenge(short["id"]), tmp_path / "sc")
        assert enrolled.ok, enrolled.command
        result = server.cli("status", check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "nothing needs action within 30 days" in result.stdout
        report = json.loads(server.cli("status", "--json", check=False).stdout)
        assert report["action_needed"] is False and report["warnings"] == []
        assert [c["role"] for c in report["certificates"]] == ["CA", "RA signing", "RA encryption"]
        assert report["crl"]["number"] >= 1 and 0.9 < report["crl"]["days_left"] <= 1.0
        [row] = [i for i in report["integrations"] if i["id"] == short["id"]]
        assert (row["valid"], row["revoked"], row["expiring_7d"], row["expiring_30d"]) == (1, 0, 0, 1)
        listed = json.loads(server.cli("cert", "list", "--expiring", "30d", "--json").stdout)
        assert [c["integration"] for c in listed] == [short["id"]]
        assert json.loads(server.cli("cert", "list", "--expiring", "7d", "--json").stdout) == []
        bad = server.cli("cert", "list", "--expiring", "30d", "--status", "revoked", check=False)
        assert bad.returncode == 1 and "--expiring" in bad.stderr
    down = server.cli("status", check=False)
    assert down.returncode == 1
    assert "the CRL could not be fetched" in down.stdout


def test_status_exit_1_when_the_ca_expires_within_30_days(tmp_path: Path) -> None:
    with ScepCaServer(tmp_path / "srv", {"ca": {"validity_days": 20}}) as server:
        result = server.cli("status", check=False)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "scep-ca ca rollover" in result.stdout
        report = json.loads(server.cli("status", "--json", check=False).stdout)
        assert report["action_needed"] is True
        # The RAs end with the CA: renewing them cannot help, and serve did not try.
        assert "event=ra_renewed" not in server.log()
        assert any("expires with the CA certificate" in w for w in report["warnings"])
        assert "event=expiry_warning" in server.log()
