"""The console on twisted.web: each request's parts are read on the reactor, answered in the thread pool.

``ConsoleResource`` reads only what ``console.web.Incoming`` carries (the
path, the query, a URL-encoded form of at most ``MAX_BODY`` bytes, the
cookies), hands it to ``Console.handle`` in the pool (the database work
never runs on the reactor) and writes the ``Outgoing`` back with its
headers and cookies.  The site's access log names the method, the path
without its query, and the status: no form, no cookie, no query value.
"""

# test-case-name: tests.console.test_web

import urllib.parse
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from console.web import MAX_BODY, Console, Incoming, Outgoing

log = Logger(namespace="console")

RunBlocking = Callable[..., defer.Deferred[Any]]


def _pairs(text: str) -> dict[str, str]:
    """The first value of each name in a URL-encoded string; undecodable bytes become U+FFFD, never an error."""
    out: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(text, keep_blank_values=True, errors="replace", max_num_fields=100):
        out.setdefault(name, value)
    return out


def _cookies(request: server.Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for header in request.requestHeaders.getRawHeaders(b"cookie") or []:
        for part in header.decode("latin-1").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name not in out:
                out[name] = value
    return out


def read_incoming(request: server.Request) -> Incoming:
    """What the console needs of a Twisted request."""
    uri = request.uri.decode("latin-1")
    path, _, query = uri.partition("?")
    path = urllib.parse.unquote(path, errors="replace")
    method = request.method.decode("latin-1")
    form: dict[str, str] = {}
    too_large = False
    if method == "POST":
        body = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        too_large = len(body) > MAX_BODY
        ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if not too_large and ctype == b"application/x-www-form-urlencoded":
            form = _pairs(body.decode("utf-8", "replace"))
    return Incoming(method=method, path=path, query=_pairs(query), form=form, cookies=_cookies(request),
                    body_too_large=too_large)


class ConsoleResource(Resource):
    """The whole console at the root of a site; every request goes through ``Console.handle``."""

    isLeaf = True

    def __init__(self, console: Console, run_blocking: RunBlocking) -> None:
        super().__init__()
        self.console, self.run_blocking = console, run_blocking

    def render(self, request: server.Request) -> Any:
        incoming = read_incoming(request)
        d = self.run_blocking(self.console.handle, incoming)
        finished = [False]
        request.notifyFinish().addBoth(lambda _: finished.__setitem__(0, True))
        d.addCallback(self._write, request, finished)
        d.addErrback(self._crashed, request, finished)
        return server.NOT_DONE_YET

    def _write(self, out: Outgoing, request: server.Request, finished: list[bool]) -> None:
        if finished[0]:
            return  # the browser went away
        request.setResponseCode(out.status)
        for name, value in out.headers().items():
            request.setHeader(name, value)
        for c in out.cookies:
            request.addCookie(c.name, c.value, path="/", secure=True, httpOnly=True, sameSite="strict",
                              max_age=str(c.max_age) if c.max_age is not None else None)
        request.setHeader(b"content-length", str(len(out.body)).encode())
        if request.method != b"HEAD":
            request.write(out.body)
        request.finish()

    def _crashed(self, failure: Failure, request: server.Request, finished: list[bool]) -> None:
        # Console.handle never raises; this is the pool itself failing.  One line, no traceback to the browser.
        log.error("console request failed: {kind}", kind=type(failure.value).__name__)
        if not finished[0]:
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.write(b"internal error; nothing was changed\n")
            request.finish()


class ConsoleSite(server.Site):
    """A site whose access log names the method, the path without its query, and the status."""

    def log(self, request: server.Request) -> None:
        path = request.uri.split(b"?", 1)[0].decode("latin-1")[:100]
        log.info("{method} {path} {status}", method=request.method.decode("latin-1"), path=path, status=request.code)
