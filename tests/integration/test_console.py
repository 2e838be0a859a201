"""The console app in process (aiohttp test client, real SQLite store): the error paths with their
exact answers and an unchanged store, the login lockout, cookies, settings and the admin CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import rsa

from config import Config, ConfigError, load_config
from scep_ca.cli.console_app import console_app
from scep_ca.cli.console_cmds import first_admin_hint
from scep_ca.cli.main import main as cli_main
from scep_ca.console.accounts import Accounts, SelfLockout
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.ca_set import CASet
from scep_ca.pki.records import Integration
from store.base import AdminRole, AuditFilter, IssuanceRequest, Store
from store.factory import open_store
from tests.integration.conftest import SUBJECT
from tests.revocation_helpers import issue_cert, record_for

PASSWORD = "a long enough password"
Client = TestClient  # type: ignore[type-arg]


@dataclass
class Console:
    client: Client
    store: Store
    config: Config

    async def login(self, name: str, password: str = PASSWORD) -> int:
        page = await (await self.client.get("/console/login")).text()
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token is not None
        answer = await self.client.post(
            "/console/login",
            data={"csrf": token.group(1), "name": name, "password": password},
            allow_redirects=False,
        )
        return answer.status

    async def csrf(self) -> str:
        page = await (await self.client.get("/console/")).text()
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token is not None, page
        return token.group(1)

    async def post(self, path: str, **fields: str) -> tuple[int, str]:
        answer = await self.client.post(path, data={"csrf": await self.csrf(), **fields}, allow_redirects=False)
        return answer.status, await answer.text()


ConsoleFactory = Callable[..., Awaitable[Console]]


@pytest.fixture
async def make_console(
    tmp_path: Path,
    shared_ca: tuple[Path, CAIdentity],
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> ConsoleFactory:
    async def factory(**overrides: object) -> Console:
        config = load_config(None, {}, {"data_dir": str(tmp_path), **overrides})
        store = open_store(config)
        await store.open()
        accounts = Accounts(store)
        for name, role in (("alice", AdminRole.ADMIN), ("oscar", AdminRole.OPERATOR), ("audrey", AdminRole.AUDITOR)):
            await accounts.create(name, role, PASSWORD)
        client = await aiohttp_client(console_app(config, CASet(current=shared_ca[1]), None))
        return Console(client, store, config)

    return factory


@pytest.fixture
async def console(make_console: ConsoleFactory) -> Console:
    return await make_console()


async def _certificate(console: Console, ca: CAIdentity, device_key: rsa.RSAPrivateKey) -> str:
    now = dt.datetime.now(dt.UTC)
    integration = Integration(
        id="intega", name="intega", subject_template=SUBJECT, created_at=now, validity_days=365, username="u"
    )
    await console.store.create_integration(integration)
    record = record_for(ca, issue_cert(ca, device_key, 0x1234ABCD, cn="device-1"))
    await console.store.record_issuance(IssuanceRequest(certificate=record, challenge_hash=None, now=now))
    return record.serial


async def test_cookies_and_headers(console: Console) -> None:
    assert await console.login("alice") == 303
    login = await console.client.get("/console/login")
    assert login.headers["Content-Security-Policy"].startswith("default-src 'self'; frame-ancestors 'none'")
    assert login.headers["X-Content-Type-Options"] == "nosniff"
    assert login.headers["Referrer-Policy"] == "no-referrer"
    page = await console.client.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', await page.text())
    assert token is not None
    answer = await console.client.post(
        "/console/login", data={"csrf": token.group(1), "name": "alice", "password": PASSWORD}, allow_redirects=False
    )
    cookie = answer.headers["Set-Cookie"]
    assert "scep_console=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback


async def test_session_cookie_is_secure_under_tls(
    make_console: ConsoleFactory, shared_ca: tuple[Path, CAIdentity]
) -> None:
    ca_dir = shared_ca[0]
    console = await make_console(
        **{"console.tls.cert": str(ca_dir / "ca.pem"), "console.tls.key": str(ca_dir / "ca.key")}
    )
    page = await console.client.get("/console/login")
    assert "Secure" in page.headers["Set-Cookie"]


async def test_login_lockout_answers_429_even_for_the_right_password(
    make_console: ConsoleFactory, caplog: pytest.LogCaptureFixture
) -> None:
    console = await make_console(**{"challenge.lockout_failures": 3})
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert await console.login("alice", "wrong password!") == 401
    assert await console.login("alice") == 429
    failed = await console.store.list_audit(AuditFilter(event="console.login_failed"))
    assert [(e.actor, e.details["address"]) for e in failed] == [("console:alice", "127.0.0.1")] * 4
    # Another account from the same address is not locked out.
    assert await console.login("oscar") == 303
    assert "wrong password" not in caplog.text and PASSWORD not in caplog.text


async def test_unknown_and_disabled_accounts_are_refused(console: Console) -> None:
    assert await console.login("nobody") == 401
    await Accounts(console.store).disable("oscar")
    assert await console.login("oscar") == 401


async def test_no_session_goes_to_the_login_page_and_changes_nothing(console: Console) -> None:
    for method, path in (("GET", "/console/"), ("POST", "/console/integrations")):
        answer = await console.client.request(method, path, data={"name": "x"}, allow_redirects=False)
        assert (answer.status, answer.headers["Location"]) == (303, "/console/login")
    assert await console.store.list_integrations() == []


async def test_error_paths_answer_4xx_and_change_nothing(
    console: Console, shared_ca: tuple[Path, CAIdentity], device_key: rsa.RSAPrivateKey
) -> None:
    serial = await _certificate(console, shared_ca[1], device_key)
    assert await console.login("alice") == 303
    before = await console.store.get_certificate(serial)
    cases = [
        ("/console/certificates/ffff/revoke", {"reason": "keyCompromise"}, 400, "no such certificate"),
        (f"/console/certificates/{serial}/revoke", {"reason": "certificateHold"}, 400, "not supported by this CA"),
        (f"/console/certificates/{serial}/revoke", {"reason": "no-such"}, 400, "unknown reason"),
        ("/console/integrations", {"name": "x", "subject": "CN=a,,"}, 400, "subject:"),
        ("/console/integrations", {"name": "x", "validity_days": "ten"}, 400, "validity: a whole number of days"),
        ("/console/integrations", {"name": "x", "validator": "webhook"}, 400, "needs a webhook URL"),
        ("/console/integrations", {"name": "x", "validator": "other"}, 400, "validator: one of"),
        ("/console/integrations", {"name": ""}, 400, "name: 1 to 200 printable characters"),
        ("/console/integrations/nope/rotate", {}, 400, "no such integration"),
        ("/console/integrations/nope/challenge", {}, 400, "no such integration"),
        ("/console/integrations/intega/delete", {"confirm": "INTEGA"}, 400, "type the integration"),
        ("/console/requests/approve", {"integration": "intega", "transaction": "t"}, 400, "no pending request"),
        ("/console/requests/reject", {"integration": "intega", "transaction": "t"}, 400, "no pending request"),
    ]
    for path, fields, status, message in cases:
        got, body = await console.post(path, **fields)
        assert (got, message in body) == (status, True), (path, got, body[-400:])
    assert await console.store.get_certificate(serial) == before
    assert [i.id for i in await console.store.list_integrations()] == ["intega"]
    assert (await console.client.get("/console/certificates/ffff")).status == 404
    assert (await console.client.get("/console/integrations/nope")).status == 404


async def test_roles_are_enforced_on_the_server(
    console: Console, shared_ca: tuple[Path, CAIdentity], device_key: rsa.RSAPrivateKey
) -> None:
    serial = await _certificate(console, shared_ca[1], device_key)
    assert await console.login("oscar") == 303
    for path, fields in (
        ("/console/integrations", {"name": "by-operator"}),
        ("/console/integrations/intega/rotate", {}),
        ("/console/integrations/intega/delete", {"confirm": "intega"}),
    ):
        assert (await console.post(path, **fields))[0] == 403
    assert (await console.post(f"/console/certificates/{serial}/revoke", reason="keyCompromise"))[0] == 303
    record = await console.store.get_certificate(serial)
    assert record is not None and record.revocation_reason == "keyCompromise"
    assert [i.name for i in await console.store.list_integrations()] == ["intega"]


async def test_search_parameters_out_of_range_are_ignored(console: Console) -> None:
    assert await console.login("audrey") == 303
    # The page says what the search matches: the start of a text, not a substring.
    help_text = re.sub(r"<[^>]+>|\s+", " ", await (await console.client.get("/console/certificates")).text())
    assert "The text matches the start of the subject" in re.sub(" +", " ", help_text)
    assert "does not find text in the middle" in help_text
    for query in ("?page=99999999999", "?expiring=-1", "?status=bogus", "?q=" + "x" * 5000, "?page=0"):
        answer = await console.client.get("/console/certificates" + query)
        assert answer.status == 200, query


def test_non_loopback_console_needs_tls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {}, {"console.listen": "0.0.0.0:8081"})
    assert caught.value.key == "console.listen" and "console.tls.cert" in str(caught.value)
    ok = load_config(None, {}, {"console.listen": "0.0.0.0:8081", "console.enabled": False})
    assert ok.console.enabled is False
    tls = load_config(
        None, {}, {"console.listen": "[::]:9443", "console.tls.cert": "c.pem", "console.tls.key": "k.pem"}
    )
    assert (tls.console.host, tls.console.port) == ("::", 9443)
    assert load_config(None, {"SCEP_CA_CONSOLE_LISTEN": "[::1]:8082"}, {}).console.port == 8082
    for bad in ("8081", "localhost", "::1:8081", "127.0.0.1:0", "127.0.0.1:http"):
        with pytest.raises(ConfigError) as caught:
            load_config(None, {}, {"console.listen": bad})
        assert caught.value.key == "console.listen", bad


async def test_admin_cli_and_the_first_admin_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(None, {}, {"data_dir": str(tmp_path)})
    hint = await first_admin_hint(config)
    assert hint is not None and "scep-ca admin create NAME --role admin" in hint
    argv = ["--data-dir", str(tmp_path), "admin"]
    assert await _cli([*argv, "create", "root", "--role", "admin"]) == 0
    shown = re.search(r"password \(shown only now\): (\S+)", capsys.readouterr().out)
    assert shown is not None and len(shown.group(1)) == 32
    assert await first_admin_hint(config) is None
    assert await _cli([*argv, "create", "root", "--role", "operator"]) == 1
    assert "an admin named 'root' exists" in capsys.readouterr().err
    assert await _cli([*argv, "create", "bad name", "--role", "admin"]) == 1
    assert await _cli([*argv, "disable", "nobody"]) == 1
    assert await _cli([*argv, "disable", "root"]) == 0
    assert await first_admin_hint(config) is not None
    assert await _cli([*argv, "reset-password", "root"]) == 0
    assert "password (shown only now)" in capsys.readouterr().out


async def _cli(argv: list[str]) -> int:
    # The CLI runs its own event loop: off this test's loop, in a thread.
    return await asyncio.to_thread(cli_main, argv)


async def test_search_pages_through_results(
    console: Console, shared_ca: tuple[Path, CAIdentity], device_key: rsa.RSAPrivateKey
) -> None:
    await _certificate(console, shared_ca[1], device_key)
    now = dt.datetime.now(dt.UTC)
    for n in range(60):
        record = record_for(shared_ca[1], issue_cert(shared_ca[1], device_key, 0x5000 + n, cn=f"paged-{n:02d}"))
        await console.store.record_issuance(IssuanceRequest(certificate=record, challenge_hash=None, now=now))
    assert await console.login("audrey") == 303
    first = await console.client.get("/console/certificates?q=paged&status=valid")
    body = await first.text()
    assert first.status == 200 and body.count("CN=paged-") == 50
    link = re.search(r'href="([^"]+)" id="next"', body)
    assert link is not None and "page=2" in link.group(1) and "q=paged" in link.group(1)
    second = await console.client.get(link.group(1).replace("&amp;", "&"))
    body = await second.text()
    assert second.status == 200 and body.count("CN=paged-") == 10 and 'id="next"' not in body
    assert 'id="previous"' in body


async def test_a_post_without_the_session_csrf_token_gets_403(
    console: Console, shared_ca: tuple[Path, CAIdentity], device_key: rsa.RSAPrivateKey
) -> None:
    serial = await _certificate(console, shared_ca[1], device_key)
    assert await console.login("alice") == 303
    for fields in ({}, {"csrf": ""}, {"csrf": "x" * 43}):
        answer = await console.client.post(
            f"/console/certificates/{serial}/revoke", data={"reason": "keyCompromise", **fields}, allow_redirects=False
        )
        assert answer.status == 403 and "security token is missing or wrong" in await answer.text()
        answer = await console.client.post("/console/integrations", data={"name": "csrf", **fields})
        assert answer.status == 403
    record = await console.store.get_certificate(serial)
    assert record is not None and record.revoked_at is None
    assert [i.id for i in await console.store.list_integrations()] == ["intega"]


@pytest.mark.parametrize(
    ("console", "message"),
    [
        ({"listen": "0.0.0.0:18081"}, "console.listen: 0.0.0.0 is not loopback: set console.tls.cert"),
        (
            {"tls": {"cert": "missing.pem", "key": "missing.key"}},
            "console.tls: cannot load missing.pem",
        ),
    ],
)
def test_serve_refuses_an_unsafe_or_broken_console(tmp_path: Path, console: dict[str, object], message: str) -> None:
    config = tmp_path / "scep-ca.yaml"
    with socket.socket() as probe:  # a free loopback port, unless the case names another address
        probe.bind(("127.0.0.1", 0))
        console = {"listen": f"127.0.0.1:{probe.getsockname()[1]}", **console}
    config.write_text(yaml.safe_dump({"server": {"port": 1, "workers": 1}, "console": console}))
    argv = [str(Path(sys.executable).parent / "scep-ca"), "--config", str(config), "--data-dir", str(tmp_path / "d")]
    result = subprocess.run([*argv, "serve"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# -- the admins page -------------------------------------------------------------------------


def _session_token(console: Console) -> str:
    (token,) = [c.value for c in console.client.session.cookie_jar if c.key == "scep_console"]
    return token


async def _as(console: Console, token: str, path: str) -> tuple[int, str]:
    """GET ``path`` with another session's cookie (the jar holds the last login's)."""
    answer = await console.client.get(path, cookies={"scep_console": token}, allow_redirects=False)
    return answer.status, await answer.text()


async def _admin_events(console: Console) -> list[tuple[str, str, str, dict[str, object]]]:
    found = []
    for event in ("admin.create", "admin.disable", "admin.reset_password"):
        for e in await console.store.list_audit(AuditFilter(event=event)):
            found.append((e.event, e.actor, e.target, dict(e.details)))
    return found


async def test_an_admin_creates_an_account_whose_password_is_shown_once(
    console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert await console.login("alice") == 303
    page = await console.client.get("/console/admins")
    body = await page.text()
    assert page.status == 200 and 'href="/console/admins"' in body
    assert re.findall(r'<tr id="admin-([a-z]+)">', body) == ["alice", "audrey", "oscar"]
    # No disable button on one's own row.
    assert 'action="/console/admins/alice/disable"' not in body and 'action="/console/admins/oscar/disable"' in body

    status, body = await console.post("/console/admins", name="bob", role="operator")
    shown = re.search(r'<code id="new-password">([^<]+)</code>', body)
    assert status == 200 and shown is not None and "Admin bob created (operator)." in body
    password = shown.group(1)
    account = await console.store.get_admin("bob")
    assert account is not None and account.role.value == "operator" and not account.disabled
    assert await _admin_events(console) == [
        ("admin.create", "console:alice", "console/admin/bob", {"role": "operator", "address": "127.0.0.1"})
    ]
    # Never again: not on the page afterwards, not in a log line, not in the audit log.
    assert password not in await (await console.client.get("/console/admins")).text()
    assert password not in caplog.text
    assert all(password not in str(e.details) for e in await console.store.list_audit(AuditFilter()))
    # The new operator signs in with it and has no admins page.
    assert await console.login("bob", password) == 303
    dashboard = await (await console.client.get("/console/")).text()
    assert "/console/admins" not in dashboard
    assert (await console.client.get("/console/admins")).status == 403


async def test_disabling_and_resetting_end_the_accounts_sessions(console: Console) -> None:
    assert await console.login("oscar") == 303
    oscar = _session_token(console)
    assert await console.login("audrey") == 303
    audrey = _session_token(console)
    assert await console.login("alice") == 303
    assert (await _as(console, oscar, "/console/"))[0] == 200

    status, body = await console.post("/console/admins/oscar/disable")
    assert status == 200 and "Admin oscar disabled; their sessions ended." in body
    assert (await _as(console, oscar, "/console/"))[0] == 303  # back to the login page
    account = await console.store.get_admin("oscar")
    assert account is not None and account.disabled
    assert await console.login("oscar") == 401
    # Disabled already: refused, told so.
    assert await console.login("alice") == 303
    status, body = await console.post("/console/admins/oscar/disable")
    assert (status, "admin &#39;oscar&#39; is already disabled" in body) == (400, True), body[-400:]

    status, body = await console.post("/console/admins/audrey/reset-password")
    shown = re.search(r'<code id="new-password">([^<]+)</code>', body)
    assert status == 200 and shown is not None and "their sessions ended" in body
    assert (await _as(console, audrey, "/console/"))[0] == 303
    assert await console.login("audrey") == 401  # the old password
    assert await console.login("audrey", shown.group(1)) == 303

    assert [(e[0], e[1], e[2]) for e in await _admin_events(console)] == [
        ("admin.disable", "console:alice", "console/admin/oscar"),
        ("admin.reset_password", "console:alice", "console/admin/audrey"),
    ]


async def test_an_admin_resetting_their_own_password_is_signed_out(console: Console) -> None:
    assert await console.login("alice") == 303
    status, body = await console.post("/console/admins/alice/reset-password")
    shown = re.search(r'<code id="new-password">([^<]+)</code>', body)
    assert status == 200 and shown is not None and "your session ended: sign in again with it." in body
    answer = await console.client.get("/console/", allow_redirects=False)
    assert (answer.status, answer.headers["Location"]) == (303, "/console/login")
    assert await console.login("alice", shown.group(1)) == 303


async def test_admins_page_error_paths_answer_4xx_and_change_nothing(
    console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    assert await console.login("alice") == 303
    before = await console.store.list_admins()
    cases = [
        ("/console/admins", {"name": "<b>x</b>", "role": "operator"}, 400, "admin names are 1-64 letters"),
        ("/console/admins", {"name": "a" * 65, "role": "operator"}, 400, "admin names are 1-64 letters"),
        ("/console/admins", {"name": "", "role": "operator"}, 400, "admin names are 1-64 letters"),
        ("/console/admins", {"name": "bob", "role": "root"}, 400, "role: one of admin, operator, auditor"),
        ("/console/admins", {"name": "bob"}, 400, "role: one of admin, operator, auditor"),
        ("/console/admins", {"name": "oscar", "role": "admin"}, 400, "an admin named &#39;oscar&#39; exists"),
        ("/console/admins/nobody/disable", {}, 404, "no such admin"),
        ("/console/admins/nobody/reset-password", {}, 404, "no such admin"),
        ("/console/admins/%3Cscript%3Ealert(1)%3C%2Fscript%3E/disable", {}, 404, "no such admin"),
        ("/console/admins/%3Cscript%3Ealert(1)%3C%2Fscript%3E/reset-password", {}, 404, "no such admin"),
        ("/console/admins/alice/disable", {}, 400, "you cannot disable your own account"),
    ]
    for path, fields, status, message in cases:
        got, body = await console.post(path, **fields)
        assert (got, message in body) == (status, True), (path, got, body[-400:])
        assert "<b>x</b>" not in body and "<script>" not in body
    assert await console.store.list_admins() == before
    assert await _admin_events(console) == []
    assert "<script>" not in caplog.text


async def test_the_last_enabled_admin_is_not_disabled_from_the_console(console: Console) -> None:
    """The console's own-account rule covers it over HTTP (the actor is an enabled admin); the
    service refuses it too, for any console actor, while the CLI (no actor) may."""
    accounts = Accounts(console.store)
    with pytest.raises(SelfLockout, match="'alice' is the last enabled admin"):
        await accounts.disable("alice", by="someone-else")
    alice = await console.store.get_admin("alice")
    assert alice is not None and not alice.disabled
    await accounts.disable("oscar", by="alice")  # not an admin: no lockout
    await accounts.create("second", AdminRole.ADMIN, PASSWORD)
    await accounts.disable("alice", by="second")
    await accounts.disable("second")  # the CLI: may disable the last one
    assert not any(a.role is AdminRole.ADMIN and not a.disabled for a in await console.store.list_admins())


@pytest.mark.parametrize("name", ["oscar", "audrey"])
async def test_operators_and_auditors_have_no_admins_page_and_their_posts_get_403(console: Console, name: str) -> None:
    assert await console.login(name) == 303
    assert "/console/admins" not in await (await console.client.get("/console/")).text()
    page = await console.client.get("/console/admins")
    assert page.status == 403 and "Your role does not allow this." in await page.text()
    before = await console.store.list_admins()
    for path, fields in (
        ("/console/admins", {"name": "mallory", "role": "admin"}),
        ("/console/admins/alice/disable", {}),
        ("/console/admins/alice/reset-password", {}),
        (f"/console/admins/{name}/reset-password", {}),
    ):
        status, body = await console.post(path, **fields)
        assert (status, "Your role does not allow this." in body) == (403, True), (path, status)
    assert await console.store.list_admins() == before
    assert await _admin_events(console) == []
    assert await console.login("alice") == 303  # alice's password was not reset


async def test_admins_posts_without_the_csrf_token_get_403(console: Console) -> None:
    assert await console.login("alice") == 303
    before = await console.store.list_admins()
    for path, fields in (
        ("/console/admins", {"name": "mallory", "role": "admin"}),
        ("/console/admins/oscar/disable", {}),
        ("/console/admins/oscar/reset-password", {}),
    ):
        for csrf in ({}, {"csrf": ""}, {"csrf": "x" * 43}):
            answer = await console.client.post(path, data={**fields, **csrf}, allow_redirects=False)
            assert answer.status == 403 and "security token is missing or wrong" in await answer.text(), path
    without_session = await console.client.post(
        "/console/admins", data={"name": "m", "role": "admin"}, cookies={"scep_console": "gone"}, allow_redirects=False
    )
    assert (without_session.status, without_session.headers["Location"]) == (303, "/console/login")
    assert await console.store.list_admins() == before
    assert await _admin_events(console) == []
