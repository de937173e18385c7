"""The console's request cycle, apart from Twisted: an ``Incoming`` request in, an ``Outgoing`` answer out.

``Console.handle`` runs in a worker thread (``console.resource`` puts it
there); it never raises.  Per request:

- the language: ``?lang=zh|en`` (remembered in a cookie), else the cookie,
  else Mandarin;
- ``GET /signin`` and ``POST /signin``: the sign-in form, guarded by a form
  token bound to a cookie of its own (``__Host-console-signin``), since there
  is no session yet; a success sets the session cookie and goes to the
  first page;
- every other page needs the session cookie (``__Host-console``); each
  request opens its unit of work with ``CardSystem.unit_by`` and
  ``console_sessions.authenticate``, so the operator, role and permission
  are checked against the database every time, and a session that ended
  (sign-out in any tab), expired or was tampered with gets the sign-in page
  and one line;
- every POST carries the session's form token (``csrf``), checked before
  any unit of work is opened: missing or wrong, nothing is touched;
- a refused action (any ``CardError``) shows the page again with one line
  in the operator's language and the domain's own line, under the status
  its kind has in ``cardmgmt.errors``; a database failure or a bug shows
  one line and logs only its kind and the page's path, never a form's
  values, a cookie or a traceback.

Cookies are ``Secure; HttpOnly; SameSite=Strict``; every answer carries a
strict content-security policy (no script at all, styles from this origin
only, no framing), ``X-Frame-Options: DENY``, ``nosniff``,
``Referrer-Policy: no-referrer`` and ``Cache-Control: no-store``.
"""

# test-case-name: tests.console.test_web

import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from typing import Any

import jinja2
from sqlalchemy.exc import SQLAlchemyError

from cardmgmt import approvals, console_sessions
from cardmgmt.context import Actor, Permission
from cardmgmt.errors import AuthenticationFailed, CardError
from cardmgmt.models import utcnow
from cardmgmt.system import CardSystem
from console import i18n
from console.pages import PAGES, Done, Env, Page, View
from console.tables import to_csv

log = logging.getLogger("console")

SESSION_COOKIE = "__Host-console"
SIGNIN_COOKIE = "__Host-console-signin"
LANG_COOKIE = "console-lang"
LANG_COOKIE_AGE = 365 * 24 * 3600
MAX_BODY = 64 * 1024

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=31536000",
}


@dataclass(frozen=True)
class Incoming:
    """What the console reads of a request; nothing else of it reaches the worker thread."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)
    body_too_large: bool = False


@dataclass(frozen=True)
class Cookie:
    name: str
    value: str
    max_age: int | None = None  # None: for this browser session; 0: delete


@dataclass
class Outgoing:
    """The answer: status, body, content type, cookies to set, where to go (a 303)."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    cookies: list[Cookie] = field(default_factory=list)
    location: str | None = None
    filename: str | None = None  # a download's name

    def headers(self) -> dict[str, str]:
        out = dict(SECURITY_HEADERS)
        out["Content-Type"] = self.content_type
        if self.location:
            out["Location"] = self.location
        if self.filename:
            out["Content-Disposition"] = f'attachment; filename="{self.filename}"'
        return out


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


class Console:
    """The console's pages over one installation; ``handle`` answers one request."""

    def __init__(
        self,
        system: CardSystem,
        *,
        policy: console_sessions.Policy | None = None,
        now: Callable[[], dt.datetime] = utcnow,
        pages: tuple[Page, ...] = PAGES,
    ) -> None:
        self.system, self.policy, self.now = system, policy or console_sessions.Policy(), now
        self.pages = {p.slug: p for p in pages}
        self.templates = _environment()
        # Binds the sign-in form to its cookie; a restart only makes open sign-in forms stale.
        self._signin_key = os.urandom(32)
        self.stylesheet = resources.files("console").joinpath("static/console.css").read_bytes()

    # -- the cycle ---------------------------------------------------------------------------------------------

    def handle(self, req: Incoming) -> Outgoing:
        lang = i18n.pick(req.query.get("lang"), req.cookies.get(LANG_COOKIE))
        try:
            out = self._route(req, lang)
        except Exception as e:  # never a traceback to the operator, nor a form's values in the log
            if isinstance(e, SQLAlchemyError):
                log.error("database error on %s %s: %s", req.method, req.path[:80], type(e).__name__)
                key = "error.database"
            else:
                log.error("internal error on %s %s: %s", req.method, req.path[:80], type(e).__name__)
                key = "error.internal"
            out = self._error_page(lang, i18n.text(lang, key), "", 500 if key == "error.internal" else 503)
        if req.query.get("lang") in i18n.LANGUAGES:
            out.cookies.append(Cookie(LANG_COOKIE, lang, LANG_COOKIE_AGE))
        return out

    def _route(self, req: Incoming, lang: str) -> Outgoing:
        path = req.path
        if req.body_too_large:
            return self._error_page(lang, i18n.text(lang, "error.too_large"), "", 413)
        if path == "/static/console.css" and req.method == "GET":
            return Outgoing(body=self.stylesheet, content_type="text/css; charset=utf-8")
        if path == "/":
            return Outgoing(status=303, location="/requests")
        if path == "/signin":
            if req.method == "POST":
                return self._sign_in(req, lang)
            return self._signin_page(req, lang, done=req.query.get("done") == "signed_out")
        if path == "/signout" and req.method == "POST":
            return self._sign_out(req, lang)
        slug, _, rest = path.strip("/").partition("/")
        csv_wanted = slug.endswith(".csv") and not rest
        page = self.pages.get(slug.removesuffix(".csv") if csv_wanted else slug)
        if page is None:
            return self._error_page(lang, i18n.text(lang, "error.not_found_page"), "", 404)
        if req.method == "GET" and not rest:
            return self._csv(req, lang, page) if csv_wanted else self._page(req, lang, page)
        if req.method == "POST" and rest in page.actions:
            return self._act(req, lang, page, rest)
        return self._error_page(lang, i18n.text(lang, "error.method"), "", 405)

    # -- sessions ----------------------------------------------------------------------------------------------

    def _authenticate(self, token: str | None) -> Callable[[Any], Actor]:
        return partial(console_sessions.authenticate, token=token, policy=self.policy, now=self.now())

    def _signin_form_token(self, nonce: str) -> str:
        return hmac.new(self._signin_key, nonce.encode("utf-8", "replace"), hashlib.sha256).hexdigest()

    def _signin_page(
        self, req: Incoming, lang: str, *, error: CardError | None = None, lead: str = "", status: int = 200,
        done: bool = False, drop_session: bool = False,
    ) -> Outgoing:
        nonce = req.cookies.get(SIGNIN_COOKIE) or ""
        cookies = []
        if len(nonce) != 43:
            nonce = secrets.token_urlsafe(32)
            cookies.append(Cookie(SIGNIN_COOKIE, nonce))
        if drop_session:
            cookies.append(Cookie(SESSION_COOKIE, "", 0))
        body = self._render("signin.html", lang, None, title="page.signin", csrf=self._signin_form_token(nonce),
                            error=self._message(lang, error, lead), done=i18n.text(lang, "done.signed_out") if done else "",
                            name=req.form.get("name", "")[:64], must_change=False, path="/signin")
        return Outgoing(status=status, body=body, cookies=cookies)

    def _sign_in(self, req: Incoming, lang: str) -> Outgoing:
        nonce = req.cookies.get(SIGNIN_COOKIE) or ""
        presented = req.form.get("csrf", "")
        if not nonce or not presented or not hmac.compare_digest(self._signin_form_token(nonce), presented):
            return self._signin_page(req, lang, lead=i18n.text(lang, "error.csrf"), status=403)
        try:
            _actor, token = console_sessions.sign_in(
                self.system, req.form.get("name", ""), req.form.get("password", ""),
                new_password=req.form.get("new_password") or None, policy=self.policy, now=self.now(),
            )
        except CardError as e:
            return self._signin_page(req, lang, error=e, status=e.http_status)
        return Outgoing(status=303, location="/requests", cookies=[Cookie(SESSION_COOKIE, token)])

    def _no_session(self, req: Incoming, lang: str) -> Outgoing:
        """A form sent with no session cookie at all (signed out in another tab): the sign-in page, nothing touched."""
        return self._signin_page(req, lang, error=AuthenticationFailed(console_sessions.REFUSED), status=401)

    def _sign_out(self, req: Incoming, lang: str) -> Outgoing:
        token = req.cookies.get(SESSION_COOKIE, "")
        if not token:
            return self._no_session(req, lang)
        if not console_sessions.csrf_ok(token, req.form.get("csrf")):
            return self._error_page(lang, i18n.text(lang, "error.csrf"), "", 403)
        try:
            with self.system.unit_by(self._authenticate(token), Permission.VIEW) as ctx:
                console_sessions.end(ctx, token, self.now())
        except AuthenticationFailed as e:
            return self._signin_page(req, lang, error=e, status=401, drop_session=True)
        return Outgoing(status=303, location="/signin?done=signed_out", cookies=[Cookie(SESSION_COOKIE, "", 0)])

    # -- pages, downloads, actions -----------------------------------------------------------------------------

    def _view(self, req: Incoming, lang: str, page: Page) -> tuple[Actor, View]:
        token = req.cookies.get(SESSION_COOKIE)
        with self.system.unit_by(self._authenticate(token), page.permission) as ctx:
            env = Env(self.system.settings, self.now(), partial(i18n.text, lang))
            return ctx.actor, page.view(ctx, req.query, env)

    def _page(self, req: Incoming, lang: str, page: Page, *, error: CardError | None = None, status: int = 200) -> Outgoing:
        try:
            actor, view = self._view(req, lang, page)
        except AuthenticationFailed as e:
            return self._signin_page(req, lang, error=e, status=401, drop_session=True)
        except CardError as e:
            shown = error or e  # the page cannot be shown either: an action's refusal still comes first
            return self._error_page(lang, i18n.error_lead(lang, shown.code), shown.message, shown.http_status)
        done = ""
        done_key = req.query.get("done", "")
        if error is None and f"done.{done_key}" in i18n.CATALOGUE:
            ref = req.query.get("ref", "")
            done = i18n.text(lang, f"done.{done_key}") + (f" {ref}" if ref.isdigit() else "")
        body = self._render(page.template, lang, actor, title=page.title, view=view, page=page,
                            csrf=console_sessions.csrf_token(req.cookies.get(SESSION_COOKIE, "")),
                            error=self._message(lang, error), done=done, path=f"/{page.slug}",
                            query=urllib.parse.urlencode({k: v for k, v in req.query.items() if k not in ("lang", "done", "ref")}))
        return Outgoing(status=status, body=body)

    def _csv(self, req: Incoming, lang: str, page: Page) -> Outgoing:
        try:
            _actor, view = self._view(req, lang, page)
        except AuthenticationFailed as e:
            return self._signin_page(req, lang, error=e, status=401, drop_session=True)
        except CardError as e:
            return self._error_page(lang, i18n.error_lead(lang, e.code), e.message, e.http_status)
        table = view.table(req.query.get("table", "")) or (view.tables[0] if len(view.tables) == 1 else None)
        if table is None:
            return self._error_page(lang, i18n.text(lang, "error.not_found_page"), "", 404)
        return Outgoing(body=to_csv(table, partial(i18n.text, lang)), content_type="text/csv; charset=utf-8",
                        filename=f"{page.slug}-{table.name}.csv")

    def _act(self, req: Incoming, lang: str, page: Page, name: str) -> Outgoing:
        token = req.cookies.get(SESSION_COOKIE, "")
        if not token:
            return self._no_session(req, lang)
        if not console_sessions.csrf_ok(token, req.form.get("csrf")):
            # Checked before any unit of work: a forged form touches nothing, not even the session's timer.
            return self._error_page(lang, i18n.text(lang, "error.csrf"), "", 403)
        action = page.actions[name]
        try:
            with self.system.unit_by(self._authenticate(token), action.permission) as ctx:
                done: Done = action.run(ctx, req.form)
        except AuthenticationFailed as e:
            return self._signin_page(req, lang, error=e, status=401, drop_session=True)
        except CardError as e:
            return self._page(req, lang, page, error=e, status=e.http_status)
        ref = f"&ref={urllib.parse.quote(done.ref)}" if done.ref else ""
        also = f"&{urllib.parse.urlencode(done.query)}" if done.query else ""
        return Outgoing(status=303, location=f"/{page.slug}?done={done.key}{ref}{also}")

    # -- rendering ---------------------------------------------------------------------------------------------

    def _message(self, lang: str, error: CardError | None, lead: str = "") -> dict[str, str] | None:
        if error is None and not lead:
            return None
        if error is None:
            return {"lead": lead, "detail": ""}
        return {"lead": lead or i18n.error_lead(lang, error.code), "detail": error.message}

    def _error_page(self, lang: str, lead: str, detail: str, status: int) -> Outgoing:
        """A page with one refusal and a way back; shown where the page asked for cannot be."""
        body = self._render("error.html", lang, None, title="page.error", error={"lead": lead, "detail": detail}, path="/")
        return Outgoing(status=status, body=body)

    def _render(self, template: str, lang: str, actor: Actor | None, **values: Any) -> bytes:
        t = partial(i18n.text, lang)
        nav = [(p.slug, t(p.title)) for p in self.pages.values() if actor is not None and approvals.may(actor, p.permission)]
        values.setdefault("csrf", "")
        values.setdefault("done", "")
        values.setdefault("error", None)
        return self.templates.get_template(template).render(
            t=t, lang=lang, other_lang="en" if lang == "zh" else "zh", actor=actor, nav=nav,
            role_text=t(f"role.{actor.role.value}") if actor else "", **values,
        ).encode("utf-8")
