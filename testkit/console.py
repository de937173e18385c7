"""The web console for tests and benchmarks: an installation to show, the console on a live reactor, an HTTPS client.

``prepare`` gives a ``testkit.lifecycle.Bench`` installation what the
console's tests need: the TLS certificate, a second administrator dave, bob
(finance, added by the bench) and carol (auditor), a hall H01 and a batch in
stock to file issue requests against.  ``running_console`` starts
``console.service.makeService`` on an ephemeral loopback port of a running
reactor (``testkit.live_api.running_reactor``) and stops it after the block.
``ConsoleClient`` speaks HTTPS to it trusting the installation's CA only,
keeps cookies as a browser does (one jar per client: a second client is a
second browser, ``clone`` a second tab holding the same cookies) and reads
the form token out of a page.
"""

# test-case-name: tests.console.test_web

from __future__ import annotations

import http.client
import re
import ssl
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.threads import blockingCallFromThread

from cardmgmt import issuing, operators, tls
from cardmgmt.config import Settings
from cardmgmt.context import Permission, Role
from testkit.install import PASSWORDS
from testkit.lifecycle import Bench

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def prepare(bench: Bench, *, cards: int = 40) -> None:
    """Certificate, operators (alice and dave admin, bob finance, carol auditor), hall H01, a batch B1 in stock."""
    key_dir = bench.system.settings.key_dir
    if not (key_dir / tls.SERVER_CERT).exists():  # a key directory made by ``create_keyring`` has one already
        tls.create_authority(key_dir, "console-tests")
        tls.issue_server_certificate(key_dir)
    with bench.unit(Permission.MANAGE_OPERATORS) as ctx:
        existing = {op.name for op in operators.listing(ctx.session)}
        for name, role in (("dave", Role.ADMIN), ("bob", Role.FINANCE), ("carol", Role.AUDITOR)):
            if name not in existing:
                operators.create(ctx.session, name, role, PASSWORDS[name])
    bench.stocked_batch("B1", cards)
    bench.add_hall("H01")


def file_request(bench: Bench, quantity: int = 1, who: str = "alice", reason: str = "weekly") -> int:
    """An issue request for ``quantity`` cards of 50 yuan for H01, filed by ``who`` (an administrator); its id."""
    with bench.unit(Permission.MANAGE_CARDS, who=who) as ctx:
        return issuing.file_request(ctx, face_value=5000, quantity=quantity, hall_code="H01", reason=reason).id


@contextmanager
def running_console(settings: Settings, reactor: Any, **options: Any) -> Iterator[Any]:
    """The console on 127.0.0.1, an ephemeral port, on ``reactor`` (running in another thread); the ``ConsoleServer``."""
    from console.service import makeService

    def start() -> Any:
        server = makeService(settings, "127.0.0.1", 0, reactor, **options)
        server.startService()
        return server

    server = blockingCallFromThread(reactor, start)
    try:
        yield server
    finally:
        blockingCallFromThread(reactor, server.stopService)


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def header(self, name: str) -> str:
        return (self.headers.get(name.lower()) or [""])[0]

    def csrf(self) -> str:
        found = _CSRF.search(self.text)
        if found is None:
            raise AssertionError("no form token on the page")
        return found.group(1)


@dataclass
class ConsoleClient:
    """One browser's worth of HTTPS requests to the console: its own cookie jar."""

    url: str
    ca_file: str
    cookies: dict[str, str] = field(default_factory=dict)

    def clone(self) -> ConsoleClient:
        """A second tab: the same cookies, copied now."""
        return ConsoleClient(self.url, self.ca_file, dict(self.cookies))

    def request(self, method: str, path: str, form: Mapping[str, str] | None = None,
                cookies: Mapping[str, str] | None = None) -> Response:
        parts = urllib.parse.urlsplit(self.url)
        context = ssl.create_default_context(cafile=self.ca_file)
        conn = http.client.HTTPSConnection(parts.hostname or "127.0.0.1", parts.port, context=context, timeout=30)
        jar = dict(self.cookies) if cookies is None else dict(cookies)
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if jar else {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            found: dict[str, list[str]] = {}
            for name, value in answer.getheaders():
                found.setdefault(name.lower(), []).append(value)
        finally:
            conn.close()
        for line in found.get("set-cookie", []):
            name, _, rest = line.partition("=")
            value = rest.split(";", 1)[0]
            if "max-age=0" in line.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return Response(answer.status, found, data)

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, path: str, form: Mapping[str, str]) -> Response:
        return self.request("POST", path, form)

    def sign_in(self, name: str, password: str | None = None, **extra: str) -> Response:
        page = self.get("/signin")
        return self.post("/signin", {"name": name, "password": password or PASSWORDS[name], "csrf": page.csrf(), **extra})
