"""The operator console in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by Selenium) against a real ``scep-ca serve`` process, with real SCEP clients.

Each test covers bullets of issue 20's "Must show": log in; create an integration and read its
five values; issue a challenge; scepclient enrolls with it; find the certificate by search; revoke
it with keyCompromise and see ``openssl ocsp`` answer revoked with that reason; approve a pending
request; delete an integration through the preview; an auditor sees no revoke button and its
forged POST gets 403; a form posted without its CSRF token gets 403; an expired session goes back
to the login page; a hostile CN renders as text and no dialog opens; an admin creates and
disables an account on the admins page, and the disabled account's session ends. Every page is saved as a
screenshot under ``$SCEP_CA_TEST_ARTIFACTS/console`` (default ``test-artifacts/console``).

A missing chromium or chromedriver fails these tests (MissingBinaryError), never skips them.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.client
import json
import os
import re
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.e2e import clients
from tests.e2e.clients import ClientResult, run_scepclient
from tests.e2e.conftest import DEFAULT_SUBJECT, ScepCaServer, ScepCaServerFactory
from tests.e2e.test_revocation_real_clients import ocsp_status

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("SCEP_CA_TEST_ARTIFACTS", "test-artifacts")) / "console"
HOSTILE_CN = "<img src=x onerror=alert(1)>"
# The stored subject is RFC 4514, which escapes < and > with a backslash: the browser still
# parses "<img" after the backslash as a tag unless the page escapes it.
HOSTILE_SUBJECT = r"CN=\<img src=x onerror=alert(1)\>"


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(scep_ca_module_server_factory: ScepCaServerFactory) -> ScepCaServer:
    return scep_ca_module_server_factory()


@pytest.fixture(scope="module")
def accounts(server: ScepCaServer) -> dict[str, str]:
    """Name -> password of one account per role, made with ``scep-ca admin create``."""
    made = {}
    for name, role in (("alice", "admin"), ("oscar", "operator"), ("audrey", "auditor")):
        out = server.cli("admin", "create", name, "--role", role).stdout
        match = re.search(r"^password \(shown only now\): (\S+)$", out, re.MULTILINE)
        assert match is not None, out
        made[name] = match.group(1)
    return made


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(binary, os.X_OK):
            raise clients.MissingBinaryError(f"{binary} not found: apt-get install {package} (scripts/system-deps.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


# -- helpers ---------------------------------------------------------------------------------


def shot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def login(driver: WebDriver, server: ScepCaServer, name: str, password: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{server.console_url}/login")
    driver.find_element(By.NAME, "name").send_keys(name)
    driver.find_element(By.NAME, "password").send_keys(password)
    navigate(driver, driver.find_element(By.ID, "sign-in"))
    assert driver.current_url == f"{server.console_url}/", driver.page_source
    assert f"{name} (" in driver.find_element(By.CLASS_NAME, "who").text


def navigate(driver: WebDriver, element: WebElement) -> None:
    """Click a link or a submit button and wait until the next page replaced this one and loaded:
    click() returns before the new page loads, and on a loaded machine the old page is still there.

    The old document is marked before the click and the wait ends only in a loaded document
    without the mark. Waiting for the clicked element to go stale, then for readyState, could end
    early: ChromeDriver may call the element stale while the old document is unloading and still
    "complete", and the next lookup then raced the new document ("Node with given id does not
    belong to the document", once in a full run under load)."""
    driver.execute_script("document.documentElement.dataset.leaving = 'yes'")
    element.click()
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script(
            "return document.readyState === 'complete' && document.documentElement.dataset.leaving === undefined"
        )
    )


def text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def create_integration(driver: WebDriver, server: ScepCaServer, name: str, *, approval: bool = False) -> str:
    driver.get(f"{server.console_url}/integrations")
    form = driver.find_element(By.ID, "create-integration")
    form.find_element(By.NAME, "name").send_keys(name)
    form.find_element(By.NAME, "subject").send_keys(DEFAULT_SUBJECT)
    if approval:
        form.find_element(By.NAME, "require_approval").click()
    navigate(driver, form.find_element(By.ID, "create"))
    match = re.search(r"/scep/([a-z0-9]+)$", text(driver, "value-scep_url"))
    assert match is not None, driver.page_source
    return match.group(1)


def issue_challenge(driver: WebDriver, server: ScepCaServer, integration_id: str) -> str:
    driver.get(f"{server.console_url}/integrations/{integration_id}")
    navigate(driver, driver.find_element(By.ID, "issue-challenge"))
    challenge = text(driver, "challenge")
    assert re.fullmatch(r"[0-9A-F]{16}", challenge), challenge
    return challenge


def session_cookie(driver: WebDriver) -> str:
    cookie = driver.get_cookie("scep_console")
    assert cookie is not None
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict", cookie
    return str(cookie["value"])


def post(server: ScepCaServer, path: str, fields: dict[str, str], cookie: str | None) -> tuple[int, str]:
    """A POST outside the browser (a forged or tampered form), without following redirects."""
    conn = http.client.HTTPConnection(clients.LOOPBACK, server.console_port, timeout=10)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = f"scep_console={cookie}"
    try:
        conn.request("POST", f"/console{path}", urllib.parse.urlencode(fields), headers)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def page_csrf(driver: WebDriver) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, "form.logout input[name=csrf]").get_attribute("value"))


def enroll(server: ScepCaServer, integration_id: str, challenge: str, cn: str, workdir: Path) -> ClientResult:
    workdir.mkdir(parents=True, exist_ok=True)
    result = run_scepclient(server.scep_url(integration_id), challenge, workdir, subject_cn=cn)
    assert result.issued, result.command.describe()
    return result


def serial_of(cert_path: Path) -> str:
    return format(x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number, "x")


def cert_status(server: ScepCaServer, serial: str) -> str:
    shown = server.cli("cert", "show", serial, "--json").stdout
    return str(json.loads(shown)["status"])


def no_dialog(driver: WebDriver) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - reading it is what raises


# -- the tests -------------------------------------------------------------------------------


def test_enroll_find_revoke_with_ocsp(
    browser: WebDriver, server: ScepCaServer, accounts: dict[str, str], tmp_path: Path
) -> None:
    """Log in; create an integration and read its five values; issue a challenge; scepclient
    enrolls with it; find the certificate by search; revoke it with keyCompromise; OCSP says so."""
    browser.delete_all_cookies()
    browser.get(f"{server.console_url}/login")
    shot(browser, "login")
    login(browser, server, "alice", accounts["alice"])
    shot(browser, "dashboard")

    iid = create_integration(browser, server, "Laptops")
    shot(browser, "integration-created")
    assert text(browser, "value-scep_url") == server.scep_url(iid)
    assert text(browser, "value-subject") == DEFAULT_SUBJECT
    assert text(browser, "value-challenge_url") == server.challenge_url(iid)
    assert text(browser, "value-username") == f"scep-{iid}"
    password = text(browser, "value-password")
    assert re.fullmatch(r"[A-Z2-7]{32}", password), password
    # The password is the challenge URL's: Basic from loopback reads a challenge page with it.
    auth = base64.b64encode(f"scep-{iid}:{password}".encode()).decode()
    conn = http.client.HTTPConnection(clients.LOOPBACK, server.port, timeout=10)
    conn.request(
        "GET", urllib.parse.urlsplit(server.challenge_url(iid)).path, headers={"Authorization": f"Basic {auth}"}
    )
    page = conn.getresponse()
    assert page.status == 200 and "challenge password is" in page.read().decode("utf-16-le")
    conn.close()
    # Shown once: the integration's page afterwards does not show it.
    browser.get(f"{server.console_url}/integrations/{iid}")
    assert text(browser, "value-password") == "shown only at creation or rotation"
    browser.get(f"{server.console_url}/integrations")
    shot(browser, "integrations")

    challenge = issue_challenge(browser, server, iid)
    shot(browser, "integration-challenge")
    result = enroll(server, iid, challenge, "stolen-laptop", tmp_path / "laptop")
    serial = serial_of(result.cert_path)

    browser.get(f"{server.console_url}/certificates")
    browser.find_element(By.NAME, "q").send_keys("stolen-lap")
    navigate(browser, browser.find_element(By.ID, "search-button"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    assert len(rows) == 1 and serial in rows[0].text and "CN=stolen-laptop" in rows[0].text, rows[0].text
    shot(browser, "certificates")
    navigate(browser, rows[0].find_element(By.TAG_NAME, "a"))
    assert text(browser, "status") == "valid"

    Select(browser.find_element(By.ID, "reason")).select_by_value("keyCompromise")
    navigate(browser, browser.find_element(By.ID, "revoke"))
    assert text(browser, "status").startswith("revoked (keyCompromise"), text(browser, "status")
    assert browser.find_elements(By.ID, "revoke") == []
    shot(browser, "certificate-revoked")
    answer = ocsp_status(server, result.cert_path)
    assert (answer.status, answer.reason) == ("revoked", "keyCompromise"), answer.result.describe()

    browser.get(f"{server.console_url}/")
    row = browser.find_element(By.XPATH, f"//table[@id='counts']//tr[contains(., '{iid}')]")
    assert [c.text for c in row.find_elements(By.TAG_NAME, "td")][1:] == ["0", "1", "0", "0"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", text(browser, "crl-next-update"))
    shot(browser, "dashboard-after")
    browser.get(f"{server.console_url}/audit")
    rows = [
        [c.text for c in tr.find_elements(By.TAG_NAME, "td")]
        for tr in browser.find_elements(By.XPATH, "//table[@id='events']/tbody/tr")
    ]
    # Every action above is in the audit log with the admin's name (and, for the console's own
    # events, the address); the changes also wrote their event in their own transaction.
    seen = {(row[1], row[3]) for row in rows}
    for event in ("console.login", "integration.create", "challenge.issue", "certificate.revoke"):
        assert ("console:alice", event) in seen, rows
    for event in ("integration.created", "challenge.issued", "cert.revoked"):
        assert ("console:alice", event) in seen, rows
    assert any(row[3] == "console.login" and row[2] == "127.0.0.1" for row in rows), rows
    navigate(browser, browser.find_element(By.ID, "verify"))
    assert text(browser, "verdict").startswith("OK: "), text(browser, "verdict")
    shot(browser, "audit")


def test_operator_approves_a_pending_request(
    browser: WebDriver, server: ScepCaServer, accounts: dict[str, str], tmp_path: Path
) -> None:
    login(browser, server, "alice", accounts["alice"])
    iid = create_integration(browser, server, "Approved phones", approval=True)
    login(browser, server, "oscar", accounts["oscar"])
    # An operator issues challenges but does not manage integrations.
    browser.get(f"{server.console_url}/integrations/{iid}")
    assert browser.find_elements(By.ID, "rotate") == [] and browser.find_elements(By.ID, "delete") == []
    challenge = issue_challenge(browser, server, iid)
    # scepclient gets PENDING and polls every 30 s until the request is approved.
    done: dict[str, ClientResult] = {}
    workdir = tmp_path / "pending"
    workdir.mkdir()

    def run() -> None:
        done["result"] = run_scepclient(
            server.scep_url(iid), challenge, workdir, subject_cn="pending-phone", timeout=120
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    server.wait_log(rf"queued for approval integration={iid} ", timeout=30)
    browser.get(f"{server.console_url}/requests")
    (row,) = [r for r in browser.find_elements(By.CSS_SELECTOR, "#pending tbody tr") if iid in r.text]
    shot(browser, "requests")
    navigate(browser, row.find_element(By.CLASS_NAME, "approve"))
    assert text(browser, "message").startswith("Approved: certificate "), text(browser, "message")
    thread.join(timeout=100)
    assert not thread.is_alive(), "scepclient did not finish after the approval"
    assert done["result"].issued, done["result"].command.describe()
    listed = json.loads(server.cli("audit", "list", "--event", "request.approve", "--json").stdout)
    assert [(e["actor"], e["details"]["address"]) for e in listed] == [("console:oscar", "127.0.0.1")], listed
    assert iid in listed[0]["object"]


def test_delete_through_the_preview(
    browser: WebDriver, server: ScepCaServer, accounts: dict[str, str], tmp_path: Path
) -> None:
    login(browser, server, "alice", accounts["alice"])
    iid = create_integration(browser, server, "Kiosks")
    result = enroll(server, iid, server.challenge(iid), "kiosk-1", tmp_path / "kiosk")
    serial = serial_of(result.cert_path)
    browser.get(f"{server.console_url}/integrations/{iid}")
    navigate(browser, browser.find_element(By.ID, "delete"))
    assert "1 certificate(s) will be revoked" in text(browser, "preview")
    shot(browser, "delete-preview")
    # The wrong name typed: refused, nothing changed.
    browser.find_element(By.NAME, "confirm").send_keys("kiosks")
    navigate(browser, browser.find_element(By.ID, "confirm-delete"))
    assert "type the integration's name exactly" in text(browser, "message")
    assert cert_status(server, serial) == "valid"
    assert any(i["id"] == iid for i in json.loads(server.cli("integration", "list", "--json").stdout))
    browser.get(f"{server.console_url}/integrations/{iid}/delete")
    browser.find_element(By.NAME, "confirm").send_keys("Kiosks")
    navigate(browser, browser.find_element(By.ID, "confirm-delete"))
    assert text(browser, "message") == f"Integration {iid} deleted; 1 certificate(s) revoked."
    assert cert_status(server, serial) == "revoked"
    assert ocsp_status(server, result.cert_path).reason == "cessationOfOperation"


def test_auditor_sees_no_revoke_button_and_its_forged_post_gets_403(
    browser: WebDriver, server: ScepCaServer, accounts: dict[str, str], tmp_path: Path
) -> None:
    iid = server.create_integration("audited")["id"]
    serial = serial_of(enroll(server, iid, server.challenge(iid), "audited-1", tmp_path / "a").cert_path)
    login(browser, server, "audrey", accounts["audrey"])
    browser.get(f"{server.console_url}/certificates/{serial}")
    assert text(browser, "status") == "valid"
    assert browser.find_elements(By.ID, "revoke") == [] and browser.find_elements(By.ID, "revoke-form") == []
    shot(browser, "certificate-auditor")
    browser.get(f"{server.console_url}/integrations")
    assert browser.find_elements(By.ID, "create-integration") == []
    browser.get(f"{server.console_url}/integrations/{iid}")
    assert browser.find_elements(By.ID, "issue-challenge") == []
    # The auditor's own session and CSRF token: only the role is missing.
    cookie, csrf = session_cookie(browser), page_csrf(browser)
    for path, fields in (
        (f"/certificates/{serial}/revoke", {"reason": "keyCompromise"}),
        (f"/integrations/{iid}/challenge", {}),
        (f"/integrations/{iid}/delete", {"confirm": "audited"}),
        ("/integrations", {"name": "forged", "subject": "CN=$USERID$"}),
    ):
        status, body = post(server, path, {**fields, "csrf": csrf}, cookie)
        assert status == 403 and "Your role does not allow this." in body, (path, status)
    assert cert_status(server, serial) == "valid"
    listed = json.loads(server.cli("integration", "list", "--json").stdout)
    assert iid in {i["id"] for i in listed} and "forged" not in {i["name"] for i in listed}


def test_a_form_without_its_csrf_token_gets_403(
    browser: WebDriver, server: ScepCaServer, accounts: dict[str, str], tmp_path: Path
) -> None:
    iid = server.create_integration("csrf")["id"]
    serial = serial_of(enroll(server, iid, server.challenge(iid), "csrf-1", tmp_path / "c").cert_path)
    login(browser, server, "alice", accounts["alice"])
    browser.get(f"{server.console_url}/certificates/{serial}")
    # The admin's real form, its token removed before it is sent.
    browser.execute_script("document.querySelector('#revoke-form input[name=csrf]').remove()")
    navigate(browser, browser.find_element(By.ID, "revoke"))
    assert "security token is missing or wrong" in text(browser, "message")
    shot(browser, "error-csrf")
    cookie = session_cookie(browser)
    status, _ = post(server, f"/certificates/{serial}/revoke", {"reason": "keyCompromise"}, cookie)
    assert status == 403
    status, _ = post(server, f"/certificates/{serial}/revoke", {"reason": "keyCompromise", "csrf": "x" * 43}, cookie)
    assert status == 403
    # The login form has its token too (no session yet: a cookie and the form must agree).
    status, _ = post(server, "/login", {"name": "alice", "password": accounts["alice"]}, None)
    assert status == 403
    assert cert_status(server, serial) == "valid"


def test_admin_manages_admins_and_a_disabled_account_is_signed_out(
    browser: WebDriver, server: ScepCaServer, accounts: dict[str, str]
) -> None:
    """An admin creates an operator on the admins page and reads its one-time password; the
    operator signs in with it and has no admins page; the admin disables it; its session ends."""
    login(browser, server, "alice", accounts["alice"])
    navigate(browser, browser.find_element(By.ID, "nav-admins"))
    assert browser.current_url == f"{server.console_url}/admins"
    form = browser.find_element(By.ID, "create-admin")
    form.find_element(By.NAME, "name").send_keys("olivia")
    Select(form.find_element(By.NAME, "role")).select_by_value("operator")
    navigate(browser, form.find_element(By.ID, "create"))
    assert text(browser, "message") == "Admin olivia created (operator).", browser.page_source
    assert text(browser, "password-for") == "olivia"
    password = text(browser, "new-password")
    assert re.fullmatch(r"\S{32}", password), password
    row = browser.find_element(By.ID, "admin-olivia")
    assert "operator" in row.text and "enabled" in row.text
    shot(browser, "admins")
    # Shown once: the page afterwards does not show it.
    browser.get(f"{server.console_url}/admins")
    assert browser.find_elements(By.ID, "new-password") == [] and password not in browser.page_source

    login(browser, server, "olivia", password)
    assert browser.find_elements(By.ID, "nav-admins") == []
    browser.get(f"{server.console_url}/admins")
    assert "Your role does not allow this." in text(browser, "message")
    assert browser.find_elements(By.CSS_SELECTOR, "form[action^='/console/admins']") == []
    shot(browser, "admins-operator")
    olivia = session_cookie(browser)

    login(browser, server, "alice", accounts["alice"])
    browser.get(f"{server.console_url}/admins")
    navigate(browser, browser.find_element(By.ID, "admin-olivia").find_element(By.CLASS_NAME, "disable"))
    assert text(browser, "message") == "Admin olivia disabled; their sessions ended."
    assert "disabled" in browser.find_element(By.ID, "admin-olivia").text
    # No disable button on one's own row: an admin cannot lock themselves out.
    assert browser.find_element(By.ID, "admin-alice").find_elements(By.CLASS_NAME, "disable") == []
    shot(browser, "admins-disabled")

    # Olivia's browser, her cookie back: the next page is the login page.
    browser.delete_all_cookies()
    browser.add_cookie({"name": "scep_console", "value": olivia, "path": "/console/", "httpOnly": True})
    browser.get(f"{server.console_url}/certificates")
    assert browser.current_url == f"{server.console_url}/login"
    for event in ("admin.create", "admin.disable"):
        listed = json.loads(server.cli("audit", "list", "--event", event, "--json").stdout)
        by_console = [(e["details"]["address"], e["object"]) for e in listed if e["actor"] == "console:alice"]
        assert by_console == [("127.0.0.1", "console/admin/olivia")], listed
        assert password not in json.dumps(listed)


def _shift_sessions(server: ScepCaServer, column: str, by: datetime.timedelta) -> None:
    with contextlib.closing(sqlite3.connect(server.sqlite_path, timeout=10)) as db, db:
        db.execute(f"UPDATE console_sessions SET {column} = {column} - ?", (by // datetime.timedelta(microseconds=1),))


@pytest.mark.parametrize(("column", "age"), [("last_seen", 15 * 60 + 5), ("created_at", 8 * 3600 + 5)])
def test_an_expired_session_goes_back_to_the_login_page(
    browser: WebDriver, server: ScepCaServer, accounts: dict[str, str], column: str, age: int
) -> None:
    """Idle 15 minutes, or 8 hours after login however active: the next page is the login page."""
    login(browser, server, "alice", accounts["alice"])
    browser.get(f"{server.console_url}/certificates")
    assert browser.current_url.startswith(f"{server.console_url}/certificates")
    _shift_sessions(server, column, datetime.timedelta(seconds=age))
    browser.get(f"{server.console_url}/certificates")
    assert browser.current_url == f"{server.console_url}/login"
    assert browser.find_element(By.ID, "sign-in")


def test_hostile_cn_renders_as_text(
    browser: WebDriver, server: ScepCaServer, accounts: dict[str, str], tmp_path: Path
) -> None:
    iid = server.create_integration("hostile")["id"]
    serial = serial_of(enroll(server, iid, server.challenge(iid), HOSTILE_CN, tmp_path / "h").cert_path)
    login(browser, server, "alice", accounts["alice"])
    browser.get(f"{server.console_url}/certificates?q={urllib.parse.quote('<img src')}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    assert len(rows) == 1 and HOSTILE_SUBJECT in rows[0].text, [r.text for r in rows]
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    assert "\\&lt;img src=x onerror=alert(1)\\&gt;" in browser.page_source
    no_dialog(browser)
    shot(browser, "hostile-search")
    browser.get(f"{server.console_url}/certificates/{serial}")
    assert text(browser, "subject").startswith(HOSTILE_SUBJECT)
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    no_dialog(browser)
    shot(browser, "hostile-certificate")


def test_pages_carry_the_security_headers(server: ScepCaServer) -> None:
    status, headers, _ = clients.http_get(f"{server.console_url}/login")
    assert status == 200
    assert headers["Content-Security-Policy"].startswith("default-src 'self'; frame-ancestors 'none'")
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "no-referrer"
