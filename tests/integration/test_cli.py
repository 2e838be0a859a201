"""The operator CLI, in-process, on a temporary data directory with the real SQLite store."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scep_ca.cli.main import main


class Cli:
    def __init__(self, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.data_dir = data_dir
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["--data-dir", str(self.data_dir), *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> object:
        code, out, err = self(*args, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    runner = Cli(tmp_path / "data", capsys)
    code, _, err = runner("init")
    assert code == 0, err
    return runner


def _key_usage(path: Path) -> tuple[bool, bool]:
    ku = x509.load_pem_x509_certificate(path.read_bytes()).extensions.get_extension_for_class(x509.KeyUsage).value
    return ku.digital_signature, ku.key_encipherment


def test_init_creates_ca_and_ra_with_private_keys(cli: Cli) -> None:
    for name in ("ca.key", "ra.key", "ra-enc.key"):
        assert stat.S_IMODE((cli.data_dir / name).stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate((cli.data_dir / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The default is NDES's pair: signing-only and encryption-only.
    assert _key_usage(cli.data_dir / "ra.pem") == (True, False)
    assert _key_usage(cli.data_dir / "ra-enc.pem") == (False, True)
    code, _, err = cli("init")
    assert code == 1 and "refusing to overwrite" in err


def test_integration_create_prints_the_five_mdm_values(cli: Cli) -> None:
    info = cli.json("integration", "create", "Fleet A", "--subject", "CN=$USERID$,O=Example")
    assert isinstance(info, dict)
    for key in ("id", "scep_url", "subject", "challenge_url", "username", "password", "ca_fingerprint_sha256"):
        assert info[key], key
    assert info["scep_url"].endswith(f"/scep/{info['id']}")
    assert info["challenge_url"].endswith(f"/challenge/{info['id']}/certsrv/mscep_admin/")
    assert info["subject"] == "CN=$USERID$,O=Example"
    assert len(info["password"]) >= 26
    shown = cli.json("integration", "show", info["id"])
    assert isinstance(shown, dict) and "password" not in shown, "the password is shown once only"
    listed = cli.json("integration", "list")
    assert isinstance(listed, list) and [i["id"] for i in listed] == [info["id"]]


def test_integration_create_human_output(cli: Cli) -> None:
    code, out, _ = cli("integration", "create", "Fleet B")
    assert code == 0
    for label in ("SCEP URL:", "Subject:", "Challenge URL:", "Username:", "Password:", "CA fingerprint (SHA-256):"):
        assert label in out


def test_bad_subject_is_refused(cli: Cli) -> None:
    code, _, err = cli("integration", "create", "x", "--subject", "not a dn")
    assert code == 1 and "--subject" in err


def test_challenge_new_and_cache_full(cli: Cli) -> None:
    info = cli.json("integration", "create", "c")
    assert isinstance(info, dict)
    seen = set()
    for _ in range(5):
        code, out, _ = cli("challenge", "new", info["id"])
        assert code == 0 and re.fullmatch(r"[0-9A-F]{16}\n", out)
        seen.add(out)
    assert len(seen) == 5
    code, out, err = cli("challenge", "new", info["id"])
    assert code == 1 and out == "" and "cache" in err


def test_challenge_for_unknown_integration(cli: Cli) -> None:
    code, _, err = cli("challenge", "new", "nosuch")
    assert code == 1 and "nosuch" in err


def test_rotate_password(cli: Cli) -> None:
    info = cli.json("integration", "create", "r")
    assert isinstance(info, dict)
    rotated = cli.json("integration", "rotate-password", info["id"])
    assert isinstance(rotated, dict)
    assert rotated["password"] != info["password"] and rotated["username"] == info["username"]


def test_config_error_names_the_key(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {port: 99999}\n")
    code, _, err = cli("--config", str(bad), "integration", "list")
    assert code == 1 and "server.port" in err
    bad.write_text("server: {prot: 1}\n")
    code, _, err = cli("--config", str(bad), "integration", "list")
    assert code == 1 and "server.prot" in err


def test_cert_commands_on_unknown_serials(cli: Cli) -> None:
    code, _, err = cli("cert", "show", "abcdef")
    assert code == 1 and "no certificate" in err
    code, _, err = cli("cert", "revoke", "zz:zz")
    assert code == 1
    code, out, _ = cli("cert", "list", "--json")
    assert code == 0 and json.loads(out) == []


def test_delete_needs_confirmation_and_then_revokes(cli: Cli) -> None:
    info = cli.json("integration", "create", "d")
    assert isinstance(info, dict)
    code, _, err = cli("integration", "delete", info["id"])
    assert code == 1 and "--yes" in err
    assert cli.json("integration", "list") != []
    result = cli.json("integration", "delete", info["id"], "--yes")
    assert isinstance(result, dict) and result["revoked"] == 0
    assert cli.json("integration", "list") == []
    code, _, err = cli("integration", "delete", info["id"], "--yes")
    assert code == 1


def test_crl_out(cli: Cli, tmp_path: Path) -> None:
    out_file = tmp_path / "ca.crl"
    code, out, _ = cli("crl", "--out", str(out_file))
    assert code == 0 and "wrote" in out
    crl = x509.load_der_x509_crl(out_file.read_bytes())
    ca = x509.load_pem_x509_certificate((cli.data_dir / "ca.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]


def test_crl_out_is_world_readable_whatever_the_umask(cli: Cli, tmp_path: Path) -> None:
    """A CRL is published: 0644 under ``umask 077`` too, also when it replaces a 0600 file."""
    out_file = tmp_path / "ca.crl"
    old_umask = os.umask(0o077)
    try:
        code, _, err = cli("crl", "--out", str(out_file))
        assert code == 0, err
        assert stat.S_IMODE(out_file.stat().st_mode) == 0o644
        out_file.chmod(0o600)
        code, _, err = cli("crl", "--pem", "--out", str(out_file))
        assert code == 0, err
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o644
    assert out_file.read_text().startswith("-----BEGIN X509 CRL-----")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "data") == ["ca.crl"]  # no temporary file left


def test_crl_out_into_a_missing_directory_is_one_line(cli: Cli, tmp_path: Path) -> None:
    code, out, err = cli("crl", "--out", str(tmp_path / "missing" / "ca.crl"))
    assert code == 1 and out == ""
    assert err == f"scep-ca: cannot write {tmp_path / 'missing' / 'ca.crl'}: No such file or directory\n"


async def _queue_requests(db: Path, integration_id: str, tids: list[str]) -> None:
    """Two requests waiting for approval, written through the real store as the SCEP path would."""
    import datetime as dt

    from cryptography.hazmat.primitives.asymmetric import rsa

    from scep_ca.pki.records import Transaction, TransactionStatus
    from scep_ca.protocol.client import build_csr
    from scep_ca.protocol.csr import spki_sha256
    from scep_ca.protocol.dn import parse_dn
    from store.sqlite import SQLiteStore

    store = SQLiteStore(db)
    await store.open()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = build_csr(key, parse_dn("CN=queued"), None)
    now = dt.datetime.now(dt.UTC)
    for tid in tids:
        txn = Transaction(
            integration_id=integration_id,
            transaction_id=tid,
            pubkey_sha256=spki_sha256(x509.load_der_x509_csr(csr).public_key()),
            status=TransactionStatus.PENDING,
            created_at=now,
            csr_der=csr,
        )
        await store.record_pending(txn, None, now)
    await store.close()


def test_request_queue_approve_and_reject(cli: Cli) -> None:
    import asyncio

    info = cli.json("integration", "create", "q", "--subject", "CN=$USERID$", "--require-approval")
    assert isinstance(info, dict) and info["require_approval"] is True
    asyncio.run(_queue_requests(cli.data_dir / "scep-ca.sqlite3", info["id"], ["t1", "t2"]))
    queued = cli.json("request", "list")
    assert isinstance(queued, list) and [r["id"] for r in queued] == [f"{info['id']}:t1", f"{info['id']}:t2"]
    code, _, err = cli("request", "approve", f"{info['id']}:t1")
    assert code == 0, err
    code, _, err = cli("request", "reject", f"{info['id']}:t2")
    assert code == 0, err
    assert cli.json("request", "list") == []
    certs = cli.json("cert", "list")
    assert isinstance(certs, list) and [c["subject"] for c in certs] == ["CN=queued"]
    code, _, err = cli("request", "approve", f"{info['id']}:t2")
    assert code == 1 and "pending" in err
    code, _, err = cli("request", "approve", "no-colon")
    assert code == 1 and "INTEGRATION:TRANSACTION" in err


def test_init_stores_the_public_url_and_integrations_print_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(tmp_path / "data", capsys)
    code, out, err = cli("init", "--public-url", "https://ca.example/")
    assert code == 0 and "Public URL:           https://ca.example (CRL" in out, err
    assert "warning" not in err
    assert (cli.data_dir / "public_url").read_text() == "https://ca.example\n"
    info = cli.json("integration", "create", "Fleet", "--subject", "CN=$USERID$,O=Example")
    assert isinstance(info, dict)
    assert info["scep_url"] == f"https://ca.example/scep/{info['id']}"


def test_serve_warns_when_certificates_name_loopback_but_it_listens_beyond(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """What ``serve`` logs at start (its resolved config), without binding a non-loopback address."""
    from config import load_config
    from scep_ca.cli.ca_cmds import _warn_public_url
    from scep_ca.pki.public_url import resolved

    cli = Cli(tmp_path / "data", capsys)
    assert cli("init", "--public-url", "http://127.0.0.1:8080")[0] == 0
    for host, port, text in (
        ("192.0.2.7", 8080, "is loopback but the server listens on 192.0.2.7"),
        ("127.0.0.1", 9000, "differs from the listen address http://127.0.0.1:9000"),
        ("127.0.0.1", 8080, None),
    ):
        caplog.clear()
        overrides = {"data_dir": str(cli.data_dir), "server.host": host, "server.port": port}
        config = resolved(load_config(None, {}, overrides))
        with caplog.at_level("INFO", logger="scep_ca.cli.ca_cmds"):
            _warn_public_url(config, explicit=True)
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        if text is None:
            assert warnings == [], warnings
        else:
            assert len(warnings) == 1 and text in warnings[0], warnings


def test_serve_does_not_warn_about_a_derived_public_url(cli: Cli, caplog: pytest.LogCaptureFixture) -> None:
    """A defaulted public URL is the listen address of each start: nothing differs, nothing to warn."""
    from config import load_config
    from scep_ca.cli.ca_cmds import _warn_public_url
    from scep_ca.pki.public_url import resolved

    config = resolved(load_config(None, {}, {"data_dir": str(cli.data_dir), "server.port": 9000}))
    assert config.base_url == "http://127.0.0.1:9000"
    with caplog.at_level("INFO", logger="scep_ca.cli.ca_cmds"):
        _warn_public_url(config, explicit=False)
    assert [r.levelname for r in caplog.records] == ["INFO"], caplog.text


def test_init_without_public_url_stores_none_and_warns_on_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default is the listen address and is not stored: it follows ``serve --host/--port``."""
    cli = Cli(tmp_path / "data", capsys)
    code, out, err = cli("init")
    assert code == 0 and "Public URL:           http://127.0.0.1:8080" in out
    assert "follows `scep-ca serve --host/--port`" in out
    assert not (cli.data_dir / "public_url").exists()
    assert "warning: the public URL http://127.0.0.1:8080 is loopback" in err and "--public-url" in err


def test_init_refuses_a_bad_public_url_and_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli = Cli(tmp_path / "data", capsys)
    code, _, err = cli("init", "--public-url", "ca.example")
    assert code == 2 and "must be an http:// or https:// URL with a host" in err
    assert not cli.data_dir.exists()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://admin:hunter2@ca.example", "must not contain user:password"),
        ("https://admin@ca.example", "must not contain user:password"),
        ("https://ca example", "contains whitespace or control characters"),
        ("https://ca.example/scep ca", "contains whitespace or control characters"),
        ("https://ca.example\x1b[31m", "contains whitespace or control characters"),
        ("http://[::1", "is not a well-formed URL"),
        ("http://ca.example:80x", "is not a well-formed URL"),
        ("http://ca.example:70000", "is not a well-formed URL"),
        ("http://ca.example:0", "has port 0"),
        ("http://ca$.example", "has a malformed host"),
        ("http://-ca.example", "has a malformed host"),
        ("http://ca..example", "has a malformed host"),
        ("http://999.0.0.1", "has a malformed host"),
        ("http://[ca.example]", "is not a well-formed URL"),
        ("https://ca.example/?x=1", "must not have a query or fragment"),
    ],
)
def test_init_refuses_a_malformed_public_url_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, problem: str
) -> None:
    """One line, exit 2 (a usage error), no traceback, credentials not echoed, nothing created."""
    cli = Cli(tmp_path / "data", capsys)
    code, out, err = cli("init", "--public-url", url)
    assert (code, out) == (2, "")
    assert err.startswith("scep-ca: --public-url: the public URL") and err.count("\n") == 1, err
    assert problem in err and "Traceback" not in err and "hunter2" not in err and "\x1b" not in err
    assert not cli.data_dir.exists()


def test_a_corrupt_stored_public_url_is_an_operator_error(cli: Cli) -> None:
    (cli.data_dir / "public_url").write_text("nonsense\n")
    code, _, err = cli("integration", "list")
    assert code == 1 and "public_url" in err and "Traceback" not in err


def test_init_combined_ra_on_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli = Cli(tmp_path / "data", capsys)
    code, out, err = cli("init", "--ra", "combined")
    assert code == 0 and "one combined RA" in out, err
    assert _key_usage(cli.data_dir / "ra.pem") == (True, True)
    assert not (cli.data_dir / "ra-enc.pem").exists()


def test_ra_create_combined_and_back_to_the_pair(cli: Cli) -> None:
    code, out, err = cli("ra", "create")
    assert code == 0 and "one combined RA" in out, err
    assert not (cli.data_dir / "ra-enc.pem").exists()
    assert _key_usage(cli.data_dir / "ra.pem") == (True, True)
    code, out, err = cli("ra", "create", "--pair")
    assert code == 0 and "a signing RA (ra.pem) and an encryption RA (ra-enc.pem)" in out, err
    assert _key_usage(cli.data_dir / "ra-enc.pem") == (False, True)
    assert len(list((cli.data_dir / "retired").iterdir())) == 2


def test_ca_rollover_and_activate(cli: Cli) -> None:
    cli.json("integration", "create", "before")  # creates secret.key, which must not move
    secret = (cli.data_dir / "secret.key").read_bytes()
    old = x509.load_pem_x509_certificate((cli.data_dir / "ca.pem").read_bytes())
    code, _, err = cli("ca", "activate-next")
    assert code == 1 and "rollover" in err
    code, out, err = cli("ca", "rollover")
    assert code == 0 and "next CA created" in out, err
    code, _, err = cli("ca", "rollover")
    assert code == 1 and "already exists" in err
    code, out, err = cli("ca", "activate-next")
    assert code == 0, err
    new = x509.load_pem_x509_certificate((cli.data_dir / "ca.pem").read_bytes())
    assert new != old and new.subject == old.subject
    assert (cli.data_dir / "secret.key").read_bytes() == secret
    previous = list((cli.data_dir / "previous").iterdir())
    assert len(previous) == 1 and (previous[0] / "ca.pem").read_bytes() == old.public_bytes(serialization.Encoding.PEM)
    code, _, err = cli("crl", "--ca", previous[0].name, "--out", str(cli.data_dir / "old.crl"))
    assert code == 0, err
    assert x509.load_der_x509_crl((cli.data_dir / "old.crl").read_bytes()).issuer == old.subject


def test_each_validator_kind_stores_and_shows_its_settings(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """``integration create --validator KIND``: each kind's factory stores its settings, ``show``
    lists them without the secret; another kind's options are refused, and nothing is stored."""
    hook = cli.json("integration", "create", "Hook", "--validator", "webhook", "--webhook-url", "https://h.example/s")
    assert isinstance(hook, dict) and len(base64.b64decode(hook["webhook_secret"])) == 32
    shown = cli.json("integration", "show", hook["id"])
    assert isinstance(shown, dict)
    assert (shown["validator"], shown["webhook_url"], shown["webhook_notify_url"]) == (
        "webhook",
        "https://h.example/s",
        None,
    )
    assert "webhook_secret" not in shown
    monkeypatch.setenv("SCEP_CA_INTUNE_CLIENT_SECRET", "s3cret-value")
    tune = cli.json(
        "integration", "create", "Tune", "--validator", "intune", "--intune-tenant", "t.example",
        "--intune-client-id", "c-1",
    )  # fmt: skip
    assert isinstance(tune, dict)
    shown = cli.json("integration", "show", tune["id"])
    assert isinstance(shown, dict)
    assert (shown["validator"], shown["intune_tenant"], shown["intune_client_id"]) == ("intune", "t.example", "c-1")
    assert "s3cret-value" not in json.dumps(shown)
    before = cli.json("integration", "list")
    for args, error in (
        (("--webhook-url", "https://h.example/s"), "--webhook-* options need --validator webhook"),
        (("--validator", "webhook", "--intune-tenant", "t"), "--intune-* options need --validator intune"),
        (("--validator", "intune", "--intune-tenant", "t"), "--validator intune needs --intune-tenant and"),
        (("--validator", "webhook", "--require-approval"), "--require-approval works with --validator ndes only"),
    ):
        code, out, err = cli("integration", "create", "Refused", *args)
        assert (code, out) == (1, "") and error in err, err
    assert cli.json("integration", "list") == before


@pytest.mark.parametrize(
    "command",
    [
        ("integration", "delete", "{id}", "--yes"),
        ("integration", "rotate-password", "{id}"),
        ("challenge", "new", "{id}"),
        ("integration", "test-validator", "{id}"),
    ],
)
def test_commands_on_an_integration_refuse_a_deleted_or_unknown_one(cli: Cli, command: tuple[str, ...]) -> None:
    """One answer, from one helper: exit 1 and ``no live integration 'ID'``, store unchanged."""
    info = cli.json("integration", "create", "Gone")
    assert isinstance(info, dict)
    assert cli.json("integration", "delete", info["id"], "--yes")
    listed = cli.json("integration", "list")
    for integration_id in (info["id"], "nosuchid"):
        code, out, err = cli(*(part.format(id=integration_id) for part in command))
        assert (code, out, err) == (1, "", f"scep-ca: no live integration {integration_id!r}\n")
    assert cli.json("integration", "list") == listed


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        # Loopback included: whoever holds a plain-HTTP port reads the challenge and answers allow.
        (["--webhook-url", "http://127.0.0.1:9000/hook"], "a webhook URL must be https://"),
        (["--webhook-url", "http://hooks.example.com/hook"], "a webhook URL must be https://"),
        (
            ["--webhook-url", "https://hooks.example.com/hook", "--webhook-notify-url", "http://localhost/n"],
            "a webhook URL must be https://",
        ),
        (["--webhook-url", "https://127.0.0.1:9000/hook", "--webhook-pin-sha256", "abcd"], "64 lowercase hex"),
    ],
)
def test_integration_create_refuses_an_unsafe_webhook(cli: Cli, args: list[str], problem: str) -> None:
    code, out, err = cli("integration", "create", "Hooks", "--validator", "webhook", *args)
    assert code != 0 and problem in err, (code, out, err)
    assert "Traceback" not in err
    assert cli.json("integration", "list") == []


def test_integration_create_pins_a_webhook_receiver(cli: Cli) -> None:
    pin = "AB:" * 31 + "AB"  # as openssl x509 -fingerprint -sha256 prints it
    info = cli.json(
        "integration", "create", "Hooks", "--validator", "webhook",
        "--webhook-url", "https://127.0.0.1:9000/hook", "--webhook-pin-sha256", pin,
    )  # fmt: skip
    assert isinstance(info, dict) and info["webhook_secret"]
    shown = cli.json("integration", "show", info["id"])
    assert isinstance(shown, dict)
    assert (shown["webhook_url"], shown["webhook_pin_sha256"]) == ("https://127.0.0.1:9000/hook", "ab" * 32)


def test_version_is_pyprojects(capsys: pytest.CaptureFixture[str]) -> None:
    """One version number (issue 22): `scep-ca --version` prints pyproject.toml's, which the image
    label and the Debian package also carry (tests/packaging)."""
    with (Path(__file__).resolve().parents[2] / "pyproject.toml").open("rb") as f:
        version = tomllib.load(f)["project"]["version"]
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"scep-ca {version}\n"


def _seed_certificates(db: Path, integration_id: str, count: int) -> None:
    """``count`` certificates of one integration, a day apart in expiry, inserted as the store's rows."""
    import asyncio
    import datetime as dt
    from dataclasses import replace

    from tests.store.conftest import SQLiteHarness
    from tests.store.test_contract import NOW, certificate

    async def seed() -> None:
        harness = SQLiteHarness(db)
        await harness.store.open()
        rows = [
            replace(certificate(f"{i + 1:x}0", integration_id), not_after=NOW + dt.timedelta(days=400 + i))
            for i in range(count)
        ]
        await harness.bulk_insert_certificates(rows)
        await harness.close()

    asyncio.run(seed())


def test_cert_list_pages_with_a_cursor(cli: Cli) -> None:
    info = cli.json("integration", "create", "paged")
    assert isinstance(info, dict)
    _seed_certificates(cli.data_dir / "scep-ca.sqlite3", info["id"], 5)
    code, out, err = cli("cert", "list", "--limit", "2")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["10", "20"]  # soonest expiry first
    cursor = err.split("--after ")[1].strip()
    assert cursor.endswith(",20")
    second = cli.json("cert", "list", "--limit", "2", "--after", cursor)
    assert isinstance(second, list) and [c["serial"] for c in second] == ["30", "40"]
    code, _, err = cli("cert", "list", "--limit", "2", "--after", cursor, "--json")
    third_cursor = err.split("--after ")[1].strip()
    code, out, err = cli("cert", "list", "--limit", "2", "--after", third_cursor)
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["50"] and err == ""  # the last page says no more
    everything = cli.json("cert", "list", "--all")
    assert isinstance(everything, list) and [c["serial"] for c in everything] == ["10", "20", "30", "40", "50"]
    found = cli.json("cert", "list", "--search", "CN=device-3")
    assert isinstance(found, list) and [c["serial"] for c in found] == ["30"]


@pytest.mark.parametrize(
    "cursor", ["", "yesterday,10", "2027-01-01T00:00:00,10", "2027-01-01T00:00:00Z,", "2027-01-01T00:00:00Z,xyz"]
)
def test_cert_list_refuses_a_bad_cursor(cli: Cli, cursor: str) -> None:
    code, out, err = cli("cert", "list", "--after", cursor)
    assert code == 1 and out == "" and "--after takes the value a previous page printed" in err


@pytest.mark.parametrize("limit", ["0", "10001", "ten"])
def test_cert_list_refuses_a_bad_page_size(cli: Cli, limit: str) -> None:
    with pytest.raises(SystemExit) as exc:
        cli("cert", "list", "--limit", limit)
    assert exc.value.code == 2
    assert "a page holds 1 to 10000 certificates" in cli.capsys.readouterr().err
