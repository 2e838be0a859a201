"""packaging/prometheus/alerts.yml: ``promtool check rules`` and ``promtool test rules`` (Debian's
``prometheus`` package; a missing promtool FAILS these tests), and every metric the rules use
is one the server exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.protocol.enums import PKIStatus
from tests.integration.conftest import ServerFactory
from tests.integration.test_expiry import scrape_until
from tests.integration.test_metrics import enroll

RULES_DIR = Path(__file__).resolve().parents[2] / "packaging" / "prometheus"
RULES = RULES_DIR / "alerts.yml"
RULE_TESTS = RULES_DIR / "alerts_test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None, "promtool is missing: apt-get install prometheus (scripts/system-deps.sh)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_promtool_rule_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_tests_fail_without_the_rule_they_test(tmp_path: Path) -> None:
    """The rule tests bite: with the store alert removed, promtool test rules fails."""
    rules = yaml.safe_load(RULES.read_text())
    group = rules["groups"][0]
    group["rules"] = [r for r in group["rules"] if r["alert"] != "ScepCaStoreUnavailable"]
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    result = promtool("test", "rules", str(tmp_path / "alerts_test.yml"))
    assert result.returncode != 0
    assert "ScepCaStoreUnavailable" in result.stdout + result.stderr


async def test_every_metric_in_the_rules_is_exposed(make_server: ServerFactory, device_key: rsa.RSAPrivateKey) -> None:
    server = await make_server(**{"metrics.counts_max_age_seconds": 1})
    assert (await enroll(server, device_key, await server.challenge(), "rules")).status is PKIStatus.SUCCESS
    used = set(re.findall(r"\bscep_ca_[a-z0-9_]+", RULES.read_text()))
    assert used, "no scep_ca metric in the rules"
    # The certificate counts come from a count in the background: wait for them.
    samples = await scrape_until(server, lambda s: used <= {name for name, _ in s})
    exposed = {name for name, _ in samples}
    assert used <= exposed, used - exposed
