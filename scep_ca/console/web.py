"""The console's aiohttp handlers: decode the form, call ``ConsoleService``, render a page.

Thin on purpose. The middlewares do the rest for every route: the security headers, the
session (no session: back to the login page), the CSRF token of every POST (403 without it)
and the role errors (403). Jinja2 autoescapes every value: subjects, names and transaction
ids come from devices.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from challenge.request_client import CLIENT
from config.clock import utc_now
from scep_ca.console.accounts import Sessions, SignedIn
from scep_ca.console.audit import ConsoleEvent
from scep_ca.console.roles import Forbidden, Permission
from scep_ca.console.service import PAGE_SIZE, ActionRefused, Actor, ConsoleService, NotFound
from scep_ca.pki.cert_format import der_to_pem, effective_status
from scep_ca.pki.reasons import operator_reason_names
from scep_ca.pki.serials import colon_hex
from scep_ca.services.integrations import IntegrationInputError, IntegrationSpec, ValidatorInput
from store.base import AdminRole, CertificateSearch, CertSearchStatus

log = logging.getLogger(__name__)

SERVICE: web.AppKey[ConsoleService] = web.AppKey("console_service", ConsoleService)
SESSIONS: web.AppKey[Sessions] = web.AppKey("console_sessions", Sessions)
SECURE: web.AppKey[bool] = web.AppKey("console_secure", bool)
SIGNED_IN: web.RequestKey[SignedIn] = web.RequestKey("console_signed_in", SignedIn)

PREFIX = "/console"
COOKIE = "scep_console"
LOGIN_COOKIE = "scep_console_login"  # the login form's CSRF token (double submit: no session yet)
_HERE = Path(__file__).parent
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_OPEN_PATHS = (f"{PREFIX}/login", f"{PREFIX}/static/")
_MAX_FIELD = 4096
_SEARCH_KEYS = ("q", "integration", "status", "expiring")
_LOGIN_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup_console_routes(app: web.Application, service: ConsoleService, sessions: Sessions, *, secure: bool) -> None:
    app[SERVICE] = service
    app[SESSIONS] = sessions
    app[SECURE] = secure
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(_HERE / "templates")),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["colon_hex"] = colon_hex
    env.filters["day"] = lambda d: d.strftime("%Y-%m-%d") if d else "-"
    env.filters["minute"] = lambda d: d.strftime("%Y-%m-%d %H:%M UTC") if d else "-"
    app.middlewares.extend([headers_middleware, session_middleware])
    r = app.router
    r.add_get(PREFIX, to_dashboard)
    r.add_get(f"{PREFIX}/login", login_page)
    r.add_post(f"{PREFIX}/login", login)
    r.add_post(f"{PREFIX}/logout", logout)
    r.add_get(f"{PREFIX}/", dashboard)
    r.add_get(f"{PREFIX}/integrations", integrations)
    r.add_post(f"{PREFIX}/integrations", create_integration)
    r.add_get(f"{PREFIX}/integrations/{{id}}", integration)
    r.add_post(f"{PREFIX}/integrations/{{id}}/rotate", rotate_password)
    r.add_post(f"{PREFIX}/integrations/{{id}}/challenge", issue_challenge)
    r.add_get(f"{PREFIX}/integrations/{{id}}/delete", delete_preview)
    r.add_post(f"{PREFIX}/integrations/{{id}}/delete", delete_integration)
    r.add_get(f"{PREFIX}/certificates", certificates)
    r.add_get(f"{PREFIX}/certificates/{{serial}}", certificate)
    r.add_get(f"{PREFIX}/certificates/{{serial}}/pem", certificate_pem)
    r.add_post(f"{PREFIX}/certificates/{{serial}}/revoke", revoke)
    r.add_get(f"{PREFIX}/requests", requests)
    r.add_post(f"{PREFIX}/requests/approve", approve)
    r.add_post(f"{PREFIX}/requests/reject", reject)
    r.add_get(f"{PREFIX}/audit", audit)
    r.add_get(f"{PREFIX}/admins", admins)
    r.add_post(f"{PREFIX}/admins", create_admin)
    r.add_post(f"{PREFIX}/admins/{{name}}/disable", disable_admin)
    r.add_post(f"{PREFIX}/admins/{{name}}/reset-password", reset_admin_password)
    r.add_static(f"{PREFIX}/static/", _HERE / "static", append_version=False)


# -- middlewares -------------------------------------------------------------------------


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if isinstance(response, web.HTTPException):
        raise response
    return response


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(_OPEN_PATHS):
        return await handler(request)
    signed_in = await request.app[SESSIONS].resume(request.cookies.get(COOKIE))
    if signed_in is None:
        # Gone, expired or never there: back to the login page (a POST is not replayed).
        raise web.HTTPSeeOther(f"{PREFIX}/login")
    request[SIGNED_IN] = signed_in
    if request.method == "POST":
        form = await request.post()
        if not signed_in.csrf_ok(_field(form, "csrf")):
            log.warning("console: POST %s without a valid CSRF token from %s", request.path, _address(request))
            return _error(request, 403, "The form's security token is missing or wrong. Reload the page and retry.")
    try:
        return await handler(request)
    except Forbidden:
        return _error(request, 403, "Your role does not allow this.")
    except NotFound as exc:
        return _error(request, 404, str(exc))
    except ActionRefused as exc:
        return _error(request, 400, str(exc))


# -- helpers -----------------------------------------------------------------------------


async def to_dashboard(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther(f"{PREFIX}/")


def _address(request: web.Request) -> str:
    return request[CLIENT].address


def _actor(request: web.Request) -> Actor:
    account = request[SIGNED_IN].account
    return Actor(account.name, account.role, _address(request))


def _field(form: Mapping[str, Any], name: str) -> str | None:
    value = form.get(name)
    return value[:_MAX_FIELD] if isinstance(value, str) else None


def _render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    signed_in = request.get(SIGNED_IN)
    if signed_in is not None:
        actor = _actor(request)
        context.update(
            admin=actor,
            csrf=signed_in.session.csrf_token,
            may_operate=actor.may(Permission.OPERATE),
            may_manage=actor.may(Permission.MANAGE),
        )
    context.setdefault("now", utc_now())
    return aiohttp_jinja2.render_template(template, request, context, status=status)


def _error(request: web.Request, status: int, message: str) -> web.Response:
    return _render(request, "error.html", status=status, message=message)


# -- login -------------------------------------------------------------------------------


async def login_page(request: web.Request) -> web.Response:
    return _login_form(request)


def _login_form(request: web.Request, status: int = 200, message: str | None = None) -> web.Response:
    # The browser's token is kept while it has one: a page fetched twice (a reload, a browser's
    # second fetch) must not leave the form with a token the cookie no longer holds.
    kept = request.cookies.get(LOGIN_COOKIE, "")
    token = kept if _LOGIN_TOKEN.fullmatch(kept) else secrets.token_urlsafe(24)
    response = _render(request, "login.html", status=status, login_csrf=token, message=message)
    response.set_cookie(
        LOGIN_COOKIE, token, path=f"{PREFIX}/login", httponly=True, samesite="Strict", secure=request.app[SECURE]
    )
    return response


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    presented, expected = _field(form, "csrf"), request.cookies.get(LOGIN_COOKIE)
    if not presented or not expected or not secrets.compare_digest(presented, expected):
        return _login_form(request, 403, "The form's security token is missing or wrong. Please sign in again.")
    name, password = _field(form, "name") or "", _field(form, "password") or ""
    result = await request.app[SESSIONS].login(name, password, _address(request))
    audit = request.app[SERVICE].audit_sink
    if result.token is None:
        await audit.record(name[:64], _address(request), ConsoleEvent.CONSOLE_LOGIN_FAILED, name[:64], {})
        if result.retry_after:
            response = _login_form(request, 429, "Too many failed sign-ins. Try again later.")
            response.headers["Retry-After"] = str(max(1, int(result.retry_after)))
            return response
        return _login_form(request, 401, "Wrong name or password.")
    await audit.record(name, _address(request), ConsoleEvent.LOGIN, name, {})
    response = web.HTTPSeeOther(f"{PREFIX}/")
    response.set_cookie(
        COOKIE, result.token, path=f"{PREFIX}/", httponly=True, samesite="Strict", secure=request.app[SECURE]
    )
    response.del_cookie(LOGIN_COOKIE, path=f"{PREFIX}/login")
    raise response


async def logout(request: web.Request) -> web.Response:
    signed_in = request[SIGNED_IN]
    await request.app[SESSIONS].logout(signed_in)
    actor = _actor(request)
    await request.app[SERVICE].audit_sink.record(actor.name, actor.address, ConsoleEvent.LOGOUT, actor.name, {})
    response = web.HTTPSeeOther(f"{PREFIX}/login")
    response.del_cookie(COOKIE, path=f"{PREFIX}/")
    raise response


# -- pages -------------------------------------------------------------------------------


async def dashboard(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    board = await service.dashboard()
    events = await service.audit_reader.events(event=None, actor=None, limit=10) if service.audit_reader else None
    return _render(request, "dashboard.html", board=board, events=events)


async def integrations(request: web.Request) -> web.Response:
    return await _integrations_page(request)


async def _integrations_page(request: web.Request, status: int = 200, error: str | None = None) -> web.Response:
    listed = await request.app[SERVICE].integrations()
    return _render(request, "integrations.html", status=status, integrations=listed, error=error)


def _tristate(value: str | None) -> bool | None:
    return {"yes": True, "no": False}.get(value or "")


async def create_integration(request: web.Request) -> web.Response:
    form = await request.post()
    validity = (_field(form, "validity_days") or "").strip()
    if validity and not validity.isdigit():
        return await _integrations_page(request, 400, "validity: a whole number of days")
    spec = IntegrationSpec(
        name=_field(form, "name") or "",
        subject=(_field(form, "subject") or "").strip() or None,
        validity_days=int(validity) if validity else None,
        allow_basic=_tristate(_field(form, "basic")),
        require_approval=_field(form, "require_approval") == "on",
        revoke_superseded=_field(form, "revoke_superseded") == "on",
        validator=ValidatorInput(
            kind=_field(form, "validator") or "ndes",
            intune_tenant=_field(form, "intune_tenant") or None,
            intune_client_id=_field(form, "intune_client_id") or None,
            intune_client_secret=_field(form, "intune_client_secret") or None,
            webhook_url=_field(form, "webhook_url") or None,
            webhook_notify_url=_field(form, "webhook_notify_url") or None,
        ),
    )
    try:
        created = await request.app[SERVICE].create_integration(_actor(request), spec)
    except IntegrationInputError as exc:
        return await _integrations_page(request, 400, str(exc))
    return await _integration_page(
        request, created.integration.id, password=created.password, shown=dict(created.shown), created=True
    )


async def integration(request: web.Request) -> web.Response:
    return await _integration_page(request, request.match_info["id"])


async def _integration_page(
    request: web.Request,
    integration_id: str,
    *,
    password: str | None = None,
    challenge: str | None = None,
    shown: Mapping[str, str] | None = None,
    created: bool = False,
) -> web.Response:
    service = request.app[SERVICE]
    found = await service.integration(integration_id)
    if found is None:
        return _error(request, 404, "No such integration.")
    return _render(
        request,
        "integration.html",
        integration=found,
        values=service.mdm_values(found),
        password=password,
        challenge=challenge,
        shown=shown or {},
        created=created,
    )


async def rotate_password(request: web.Request) -> web.Response:
    integration_id = request.match_info["id"]
    password = await request.app[SERVICE].rotate_password(_actor(request), integration_id)
    return await _integration_page(request, integration_id, password=password)


async def issue_challenge(request: web.Request) -> web.Response:
    integration_id = request.match_info["id"]
    challenge = await request.app[SERVICE].issue_challenge(_actor(request), integration_id)
    return await _integration_page(request, integration_id, challenge=challenge)


async def delete_preview(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    found = await service.integration(request.match_info["id"])
    if found is None:
        return _error(request, 404, "No such integration.")
    count = await service.certificate_count(found.id)
    return _render(request, "delete.html", integration=found, count=count)


async def delete_integration(request: web.Request) -> web.Response:
    form = await request.post()
    integration_id = request.match_info["id"]
    revoked = await request.app[SERVICE].delete_integration(
        _actor(request), integration_id, _field(form, "confirm") or ""
    )
    return _render(
        request, "done.html", message=f"Integration {integration_id} deleted; {revoked} certificate(s) revoked."
    )


async def certificates(request: web.Request) -> web.Response:
    q = request.query
    now = utc_now()
    status_text = q.get("status", "")
    status = CertSearchStatus(status_text) if status_text in set(CertSearchStatus) else None
    expiring = q.get("expiring", "")
    page = int(q["page"]) if q.get("page", "").isdigit() and len(q["page"]) < 7 else 1
    search = CertificateSearch(
        now=now,
        text=q.get("q") or None,
        integration_id=q.get("integration") or None,
        status=status,
        expiring_before=now + dt.timedelta(days=int(expiring)) if expiring.isdigit() and len(expiring) < 6 else None,
        limit=PAGE_SIZE + 1,
        offset=(max(page, 1) - 1) * PAGE_SIZE,
    )
    service = request.app[SERVICE]
    rows = list(await service.search(search))

    def page_url(number: int) -> str:
        kept = {k: v for k, v in q.items() if k in _SEARCH_KEYS and v}
        return f"{PREFIX}/certificates?{urllib.parse.urlencode({**kept, 'page': str(number)})}"

    return _render(
        request,
        "certificates.html",
        rows=rows[:PAGE_SIZE],
        previous_url=page_url(page - 1) if page > 1 else None,
        next_url=page_url(page + 1) if len(rows) > PAGE_SIZE else None,
        page=page,
        query=q,
        statuses=list(CertSearchStatus),
        integrations=await service.integrations(),
        status_of=lambda r: effective_status(r, now),
    )


async def certificate(request: web.Request) -> web.Response:
    record = await request.app[SERVICE].certificate(request.match_info["serial"].lower())
    if record is None:
        return _error(request, 404, "No such certificate.")
    return _render(
        request,
        "certificate.html",
        cert=record,
        cert_status=effective_status(record, utc_now()),
        reasons=operator_reason_names(),
    )


async def certificate_pem(request: web.Request) -> web.Response:
    record = await request.app[SERVICE].certificate(request.match_info["serial"].lower())
    if record is None:
        return _error(request, 404, "No such certificate.")
    return web.Response(
        text=der_to_pem(record.der),
        content_type="application/x-pem-file",
        headers={"Content-Disposition": f'attachment; filename="{record.serial}.pem"'},
    )


async def revoke(request: web.Request) -> web.Response:
    form = await request.post()
    serial = request.match_info["serial"].lower()
    await request.app[SERVICE].revoke(_actor(request), serial, _field(form, "reason") or "")
    raise web.HTTPSeeOther(f"{PREFIX}/certificates/{serial}")


async def requests(request: web.Request) -> web.Response:
    pending = await request.app[SERVICE].pending()
    return _render(request, "requests.html", pending=pending)


async def _resolve(request: web.Request, approve: bool) -> web.Response:
    form = await request.post()
    integration_id, transaction_id = _field(form, "integration") or "", _field(form, "transaction") or ""
    service = request.app[SERVICE]
    if approve:
        record = await service.approve(_actor(request), integration_id, transaction_id)
        message = f"Approved: certificate {record.serial} issued; the device gets it on its next poll."
    else:
        await service.reject(_actor(request), integration_id, transaction_id)
        message = "Rejected: the device's next poll gets FAILURE."
    return _render(request, "done.html", message=message)


async def approve(request: web.Request) -> web.Response:
    return await _resolve(request, approve=True)


async def reject(request: web.Request) -> web.Response:
    return await _resolve(request, approve=False)


async def audit(request: web.Request) -> web.Response:
    reader = request.app[SERVICE].audit_reader
    if reader is None:
        return _render(request, "audit.html", available=False, events=[], verdict=None)
    q = request.query
    events = await reader.events(event=q.get("event") or None, actor=q.get("actor") or None, limit=200)
    verdict = await reader.verify() if q.get("verify") else None
    return _render(request, "audit.html", available=True, events=events, verdict=verdict)


async def admins(request: web.Request) -> web.Response:
    return await _admins_page(request)


async def _admins_page(
    request: web.Request,
    status: int = 200,
    *,
    error: str | None = None,
    message: str | None = None,
    password_for: str | None = None,
    password: str | None = None,
) -> web.Response:
    listed = await request.app[SERVICE].admins(_actor(request))
    return _render(
        request,
        "admins.html",
        status=status,
        accounts=listed,
        roles=list(AdminRole),
        error=error,
        message=message,
        password_for=password_for,
        password=password,
    )


async def create_admin(request: web.Request) -> web.Response:
    form = await request.post()
    try:
        name, role = _field(form, "name") or "", _field(form, "role") or ""
        account, password = await request.app[SERVICE].create_admin(_actor(request), name, role)
    except ActionRefused as exc:
        return await _admins_page(request, 400, error=str(exc))
    message = f"Admin {account.name} created ({account.role.value})."
    return await _admins_page(request, message=message, password_for=account.name, password=password)


async def disable_admin(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await request.app[SERVICE].disable_admin(_actor(request), name)
    return await _admins_page(request, message=f"Admin {name} disabled; their sessions ended.")


async def reset_admin_password(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    password = await request.app[SERVICE].reset_admin_password(_actor(request), name)
    own = name == request[SIGNED_IN].account.name
    message = f"Password of {name} replaced; " + (
        "your session ended: sign in again with it." if own else "their sessions ended."
    )
    return await _admins_page(request, message=message, password_for=name, password=password)
