"""The recharge server's HTTP API: signed JSON requests in, the recharge core's answers out.

``POST /v1/account|quote|commit|cancel`` each pass the same gate, cheapest
check first: the body's size (413), the signature under the key of the
channel client the request names and its freshness (401, via
``ivr.protocol``), the client's standing in the server's snapshot of the
client table (401 ``unknown_client``, 403 ``client_revoked``, 503 when the
snapshot is too old to tell; see ``cardmgmt.channel_clients``), the body as
a JSON object with exactly the endpoint's fields (400).  A refused client is
logged once a minute per name, not once per request.  A quote records the
client's channel and name.  Then the ``RechargeService`` call runs in the server's thread
pool, never on the reactor, under a time limit (503 ``{"outcome":
"service_unavailable"}``); it records the request's nonce in its own
transaction, so a captured request is refused when replayed on *either*
server (409).
A domain answer, good or bad for the caller, is HTTP 200 with the answer.

Admission control: the work in flight (requests queued for the pool or
running in it) is bounded by ``max_in_flight``; a signed request that comes
when the bound is reached is refused at once, before its signature is even
checked, with 503 ``{"outcome": "service_unavailable", "error": "busy"}``
and ``Retry-After``, and so is one that waited in the pool's queue longer
than ``shed_after`` (its caller is about to give up on this server).  A
busy answer means "nothing was done": the client tries the other server,
or backs off and tries again within its own deadline (``ivr.client``).
Without the bound an overloaded server queues work past every caller's
deadline, its callers time out and re-send, and nothing useful gets done.

``POST /v1/sales`` is the sales-point API: a POS terminal (a channel client
of channel ``pos``, bound to a hall) sells its hall's cards.  It passes the
same gate (a client of another channel is refused, 403); its body is checked
by ``recharge_server.sales_point``; the sale runs in the same thread pool as
a ``cardmgmt.terminals.SalesPoint`` call, under its own, longer time limit
(a terminal waits longer than a caller, and a repeat with the same key is
always safe).  A sale is HTTP 200 with the sale; a refusal by the card domain
is the status its kind has in ``cardmgmt.errors``, with nothing changed.

``GET /v1/health`` (unsigned) says who this server is, its role and whether
its database answers, and nothing more: what a peer or a load balancer
needs.  The operator's view (the lease token, the peer's last answer) and
``GET /metrics`` (the Prometheus page) are served only by the *ops* instance
of this resource, which ``service`` puts on its own listener bound to the
loopback address, so nobody on the network reads them; that instance
serves no signed endpoint.

No request can crash the server: anything unexpected becomes a 500 with a
one-line body and a log entry that names the call id, never the PIN.
"""

# test-case-name: tests.recharge_server.test_api

import datetime as dt
import io
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from cardmgmt import errors
from cardmgmt.channel_clients import POS, ClientEntry, ClientRevoked, RegistryStale, UnknownClient
from cardmgmt.errors import CardError
from cardmgmt.nonces import Replayed
from ivr import protocol
from recharge_server import sales_point
from recharge_server.metrics import CONTENT_TYPE, Metrics

log = Logger(namespace="recharge_server.api")

UTC = dt.UTC

SALES = "sales"  # the sales-point API's endpoint, for POS terminals
ENDPOINTS = (*protocol.REQUESTS, SALES)  # account, quote, commit, cancel; sales

# Every error body is {"error": code, "message": one line}; the code fixes the status.
ERRORS = {
    "bad_request": 400,
    "invalid_input": 400,
    "missing_headers": 401,
    "bad_signature": 401,
    "stale_request": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "replay": 409,
    "too_large": 413,
    "internal_error": 500,
    # Every refusal of the card domain, with the status cardmgmt.errors gives
    # its kind; the kinds with a 5xx say "not now, try the other server" and
    # are answered like an unavailable database instead.
    **{kind.code: kind.http_status for kind in errors.kinds() if kind.http_status < 500},
}

_AUTH_ERRORS: dict[type[protocol.ProtocolError], str] = {
    protocol.MissingHeaders: "missing_headers",
    protocol.BadSignature: "bad_signature",
    protocol.StaleRequest: "stale_request",
}

# How each endpoint's validated fields (the request's nonce, its client) become a RechargeService call.
_CALLS: dict[str, Callable[[Any, dict[str, Any], str, ClientEntry], Any]] = {
    "account": lambda svc, f, nonce, c: svc.account(f["account_no"], nonce=nonce),
    "quote": lambda svc, f, nonce, c: svc.quote(
        call_id=f["call_id"], seq=f["seq"], account_no=f["account_no"], pin=f["pin"], caller=f["caller"], nonce=nonce,
        channel=c.channel, client=c.name,
    ),
    "commit": lambda svc, f, nonce, c: svc.commit(call_id=f["call_id"], seq=f["seq"], nonce=nonce),
    "cancel": lambda svc, f, nonce, c: svc.cancel(call_id=f["call_id"], seq=f["seq"], nonce=nonce),
}

CLIENT_LOG_EVERY = 60.0  # seconds between log lines about one refused client

# A blocking function run off the reactor: deferToThreadPool(reactor, pool, ...) in a server.
RunBlocking = Callable[..., defer.Deferred[Any]]


class Overloaded(Exception):
    """The request waited in the queue longer than its caller will wait for it."""


BUSY = "busy"  # the error code of a refusal by admission control (503, nothing done)
RETRY_AFTER = b"1"  # seconds, HTTP's unit; a client with a deadline of its own backs off less (ivr.client)


class InFlight:
    """How many requests are queued for the pool or running in it, bounded by ``limit``.

    ``enter`` is called on the reactor when a request is handed to the pool
    (False: the bound is reached, refuse it); ``leave`` by the pool thread
    when the work is really over, which may be after the request's time
    limit has answered the caller: work still running is still in flight.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.count = 0
        self.refused = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.limit is not None and self.count >= self.limit:
                self.refused += 1
                return False
            self.count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.count -= 1


class LimitedRequest(server.Request):
    """A request whose body is kept only up to ``MAX_BODY`` bytes; past that it is marked and dropped."""

    max_body = protocol.MAX_BODY
    too_large = False
    _body_seen = 0

    def gotLength(self, length: int | None) -> None:
        # Always memory: the body is small or it is thrown away.
        self.content = io.BytesIO()
        if length is not None and length > self.max_body:
            self.too_large = True

    def handleContentChunk(self, data: bytes) -> None:
        self._body_seen += len(data)
        if self._body_seen > self.max_body:
            self.too_large = True
        if not self.too_large:
            self.content.write(data)


def _now_utc(clock: IReactorTime) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock.seconds(), UTC)


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


def _first_line(failure: Failure) -> str:
    text = str(failure.value).strip()
    return _one_line(text.splitlines()[0]) if text else type(failure.value).__name__


class _LogBudget:
    """At most ``per_second`` refusal lines a second; the rest are counted and reported in the next line.

    Refused requests cost their sender nothing, so without a budget a flood of
    them (bad signatures, bad bytes) would turn into a flood of log lines.
    """

    def __init__(self, clock: IReactorTime, per_second: int = 20) -> None:
        self.clock, self.per_second = clock, per_second
        self.second, self.used, self.dropped = -1, 0, 0

    def take(self) -> int | None:
        """``None`` to stay silent; else how many lines were dropped since the last one written."""
        now = int(self.clock.seconds())
        if now != self.second:
            self.second, self.used = now, 0
        if self.used >= self.per_second:
            self.dropped += 1
            return None
        self.used += 1
        dropped, self.dropped = self.dropped, 0
        return dropped


class BadHeader(Exception):
    """A header the signature covers is not plain ASCII."""


def signed_headers(request: server.Request) -> dict[str, str]:
    """The headers the signature covers, as text; refuses bytes that are not ASCII (``BadHeader``)."""
    headers: dict[str, str] = {}
    for name in protocol.SIGNED_HEADERS:
        values = request.requestHeaders.getRawHeaders(name.encode("ascii"))
        if values:
            try:
                headers[name] = values[-1].decode("ascii")
            except UnicodeDecodeError:
                raise BadHeader(f"header {name} is not ASCII") from None
    return headers


class _Exchange:
    """One request being answered: its timing, its call id for the log, and whether its client is still there."""

    def __init__(self, api: "RechargeAPI", request: server.Request, endpoint: str) -> None:
        self.api, self.request, self.endpoint = api, request, endpoint
        self.started = api.reactor.seconds()
        self.call_id = "-"
        self.detail = ""
        self.quiet = False
        self.gone = False
        self.answered = False
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, _reason: Failure) -> None:
        self.gone = True

    def _finish(self, status: int, body: bytes, content_type: str, outcome: str) -> None:
        if self.answered:
            return
        self.answered = True
        elapsed = self.api.reactor.seconds() - self.started
        self.api.metrics.observe(self.endpoint, outcome, elapsed)
        self._log(status, outcome, elapsed)
        if self.gone:
            return
        self.request.setResponseCode(status)
        self.request.setHeader(b"content-type", content_type.encode("ascii"))
        self.request.setHeader(b"cache-control", b"no-store")
        self.request.setHeader(b"content-length", str(len(body)).encode("ascii"))
        if status == 413:
            # Twisted decides from the request's headers whether to keep the connection: make it close
            # it, so a client still sending a large body is dropped after the answer.
            self.request.requestHeaders.setRawHeaders(b"connection", [b"close"])
        self.request.write(body)
        self.request.finish()

    def _log(self, status: int, outcome: str, elapsed: float) -> None:
        """One line per answer; refusals (4xx) within the refusal budget, with why."""
        fields = dict(endpoint=self.endpoint, call_id=self.call_id, status=status, outcome=outcome, ms=elapsed * 1000)
        if 400 <= status < 500 or outcome == BUSY:
            if self.quiet:
                return
            dropped = self.api.refusal_log.take()
            if dropped is None:
                return
            log.warn(
                "{endpoint} call_id={call_id} status={status} refused: {outcome}: {detail} ms={ms:.1f}{more}",
                detail=self.detail, more=f" ({dropped} more refusals not logged)" if dropped else "", **fields,
            )
            return
        # The peer asks for /v1/health every second: those lines would drown the calls.
        emit = log.debug if self.endpoint in ("health", "metrics") and status == 200 else log.info
        emit("{endpoint} call_id={call_id} status={status} outcome={outcome} ms={ms:.1f}", **fields)

    def json(self, status: int, obj: Mapping[str, Any], outcome: str) -> None:
        body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._finish(status, body, "application/json; charset=utf-8", outcome)

    def error(self, code: str, message: str, status: int | None = None, *, logged: bool = True) -> None:
        """Refuse the request with ``{"error": code, "message": one line}``; ``logged=False`` when the caller logs it."""
        self.detail, self.quiet = _one_line(message), not logged
        self.json(status or ERRORS[code], {"error": code, "message": self.detail}, code)

    def unavailable(self, reason: str) -> None:
        self.json(503, {"outcome": protocol.SERVICE_UNAVAILABLE}, reason)

    def busy(self, message: str) -> None:
        """Refused by admission control, nothing done: 503 with ``Retry-After``; logged within the refusal budget."""
        self.detail = message
        self.request.setHeader(b"retry-after", RETRY_AFTER)
        self.json(503, {"outcome": protocol.SERVICE_UNAVAILABLE, "error": BUSY, "message": message}, BUSY)

    def text(self, status: int, text: str, content_type: str, outcome: str) -> None:
        self._finish(status, text.encode("utf-8"), content_type, outcome)


class RechargeAPI(Resource):
    """Routes every path itself (a leaf), so that every answer, even a 404, is JSON in one line."""

    isLeaf = True

    def __init__(
        self,
        *,
        name: str,
        client_key: Callable[[str], bytes],
        clients: Callable[[str], ClientEntry],
        recharge: Any,
        run_blocking: RunBlocking,
        reactor: IReactorTime,
        metrics: Metrics | None = None,
        status: Callable[[], Mapping[str, Any]] | None = None,
        db_ping: Callable[[], object] | None = None,
        backlog: Callable[[], Mapping[str, object]] | None = None,
        request_timeout: float = 2.0,
        shed_after: float = 0.2,
        max_in_flight: int | None = None,
        max_skew: float = protocol.DEFAULT_MAX_SKEW,
        ops: bool = False,
        sales: Any = None,
        sale_timeout: float = 10.0,
    ) -> None:
        """
        ``client_key(name)`` is channel client ``name``'s signing key
        (``KeyRing.channel_client_key``); ``clients(name)`` its entry, or
        ``UnknownClient``, ``ClientRevoked``, ``RegistryStale``
        (``ClientRegistry.lookup``), asked on the reactor.
        ``recharge`` is a ``cardmgmt.recharge.RechargeService`` (or a stand-in with
        its four methods, taking the request's ``nonce``); ``status()`` adds this server's role, lease and peer to
        the ops health answer; ``db_ping()`` and ``backlog()`` are blocking and run in
        the pool.  ``ops`` makes this the operator's instance: full health and
        metrics, no signed endpoints (see the module docstring).
        ``sales`` is a ``cardmgmt.terminals.SalesPoint`` (or a stand-in with its
        ``sell``); without one ``/v1/sales`` is a 404.  ``sale_timeout`` bounds a
        sale as ``request_timeout`` bounds a recharge request; a sale still queued
        after half of it is shed (503: the terminal repeats it, same key).
        """
        super().__init__()
        self.name = name
        self._client_key = client_key
        self._clients = clients
        self._client_logged: dict[tuple[str, str], list[float]] = {}  # (code, client) -> [last line, refusals since]
        self.recharge = recharge
        self.run_blocking = run_blocking
        self.reactor = reactor
        self.metrics = metrics or Metrics()
        self.status = status or (lambda: {"role": "standby"})
        self.db_ping = db_ping
        self.backlog = backlog
        self.request_timeout = request_timeout
        self.shed_after = shed_after
        self.in_flight = InFlight(max_in_flight)
        self.max_skew = max_skew
        self.refusal_log = _LogBudget(reactor)
        self.ops = ops
        self.sales = sales
        self.sale_timeout = sale_timeout

    def render(self, request: server.Request) -> Any:
        request.setHeader(b"server", b"recharge")
        path = request.path
        method = request.method
        if path.startswith(b"/v1/") and path[4:].decode("ascii", "replace") in ENDPOINTS and not self.ops:
            endpoint = path[4:].decode("ascii")
            expected = b"POST"
        elif path == b"/v1/health":
            endpoint, expected = "health", b"GET"
        elif path == b"/metrics" and self.ops:
            endpoint, expected = "metrics", b"GET"
        else:
            endpoint, expected = "other", b""
        ex = _Exchange(self, request, endpoint)
        try:
            if not expected:
                ex.error("not_found", "no such path; see recharge_server/openapi.yaml")
            elif method != expected:
                request.setHeader(b"allow", expected)
                ex.error("method_not_allowed", f"use {expected.decode()} for this path")
            elif endpoint == "health":
                self._health(ex)
            elif endpoint == "metrics":
                self._metrics(ex)
            else:
                self._post(ex, request, endpoint)
        except Exception:
            log.failure("{endpoint} call_id={call_id} failed unexpectedly", endpoint=endpoint, call_id=ex.call_id)
            ex.error("internal_error", "internal error; it has been logged")
        return server.NOT_DONE_YET

    # --- the signed endpoints ----------------------------------------------------------

    def _post(self, ex: _Exchange, request: server.Request, endpoint: str) -> None:
        if getattr(request, "too_large", False):
            ex.error("too_large", f"the body is larger than {protocol.MAX_BODY} bytes")
            return
        # Admission first: a refusal must cost next to nothing, and says nothing about the request.
        if not self.in_flight.enter():
            ex.busy(f"{self.in_flight.limit} requests in progress; try the other server or again shortly")
            return
        try:
            started = self._post_admitted(ex, request, endpoint)
        except BaseException:
            self.in_flight.leave()
            raise
        if not started:
            self.in_flight.leave()

    def _post_admitted(self, ex: _Exchange, request: server.Request, endpoint: str) -> bool:
        """The request, admitted: check it and hand it to the pool (True), or answer it here (False)."""
        body = request.content.read()
        try:
            headers = signed_headers(request)
        except BadHeader as e:
            ex.error("bad_request", str(e))
            return False
        try:
            # The key is derived for whatever name is given, so an unknown name fails like a wrong key.
            client = protocol.client_of(headers)
            nonce = protocol.verify(
                self._client_key(client), request.method.decode("ascii"), request.uri.decode("latin-1"), body,
                headers, now=self.reactor.seconds(), max_skew=self.max_skew,
            )
        except protocol.ProtocolError as e:
            ex.error(_AUTH_ERRORS.get(type(e), "bad_signature"), str(e))
            return False
        try:
            entry = self._clients(client)
        except (UnknownClient, ClientRevoked) as e:
            self._log_refused_client(e.code, client, e.message)
            ex.error(e.code, e.message, logged=False)
            return False
        except RegistryStale as e:
            self._log_refused_client(e.code, "-", e.message)
            ex.unavailable(e.code)
            return False
        if endpoint == SALES:
            return self._sale(ex, entry, nonce, body)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            ex.error("bad_request", "the body is not JSON")
            return False
        if isinstance(payload, dict) and isinstance(payload.get("call_id"), str):
            if protocol.CALL_ID.problem(payload["call_id"]) is None:
                ex.call_id = payload["call_id"]
        try:
            fields = protocol.validate_request(endpoint, payload)
        except protocol.InvalidRequest as e:
            ex.error("bad_request", str(e))
            return False
        d = self.run_blocking(self._serve, endpoint, nonce, fields, entry, time.monotonic())
        d.addTimeout(self.request_timeout, self.reactor)
        d.addCallbacks(lambda answer: ex.json(200, answer, str(answer.get("outcome", "-"))), self._failed, errbackArgs=(ex,))
        d.addErrback(self._crashed, ex)
        return True

    def _sale(self, ex: _Exchange, client: ClientEntry, nonce: str, body: bytes) -> bool:
        """A signed request of a known, unrevoked client to ``/v1/sales``: check it is a terminal's sale, then sell (True)."""
        if self.sales is None:
            ex.error("not_found", "this server has no sales-point API")
            return False
        if client.channel != POS:
            ex.error("permission_denied", f"channel client {client.name!r} is a {client.channel} client; "
                                          "only a POS terminal sells cards")
            return False
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            ex.error("bad_request", "the body is not JSON")
            return False
        try:
            key, selection = sales_point.validate_sale(payload)
        except protocol.InvalidRequest as e:
            ex.error("bad_request", str(e))
            return False
        ex.call_id = f"sale:{client.name}:{key}"
        d = self.run_blocking(self._sell, client.name, key, selection, nonce, time.monotonic())
        d.addTimeout(self.sale_timeout, self.reactor)
        d.addCallbacks(lambda answer: ex.json(200, answer, "repeated" if answer.get("repeated") else "ok"),
                       self._failed, errbackArgs=(ex,))
        d.addErrback(self._crashed, ex)
        return True

    def _sell(self, terminal: str, key: str, selection: Any, nonce: str, queued_at: float) -> dict[str, Any]:
        """In the pool: shed a sale that waited too long (the terminal repeats it), else sell."""
        try:
            if time.monotonic() - queued_at > self.sale_timeout / 2:
                raise Overloaded()
            return dict(self.sales.sell(terminal=terminal, key=key, selection=selection, nonce=nonce))
        finally:
            self.in_flight.leave()

    def _log_refused_client(self, code: str, client: str, message: str) -> None:
        """One line per refused client a minute, however many requests it sends: a revoked device may retry hard."""
        now = self.reactor.seconds()
        seen = self._client_logged.setdefault((code, client), [-CLIENT_LOG_EVERY, 0])
        seen[1] += 1
        if now - seen[0] >= CLIENT_LOG_EVERY:
            log.warn("refused {code}: {message} ({count} request(s) since the last such line)",
                     code=code, message=message, count=seen[1])
            seen[0], seen[1] = now, 0

    def _serve(
        self, endpoint: str, nonce: str, fields: dict[str, Any], client: ClientEntry, queued_at: float
    ) -> dict[str, Any]:
        """In the pool: shed a request that waited too long, else ask the recharge core."""
        # The client gives up on a server after SHED_AFTER-ish; work started
        # after that is work nobody waits for (and a commit nobody hears), so
        # under overload the queue is drained quickly with 503s instead.
        try:
            if time.monotonic() - queued_at > self.shed_after:
                raise Overloaded()
            return dict(_CALLS[endpoint](self.recharge, fields, nonce, client).to_dict())
        finally:
            self.in_flight.leave()

    def _failed(self, failure: Failure, ex: _Exchange) -> None:
        if failure.check(Replayed):
            ex.error("replay", failure.value.message)
        elif failure.check(Overloaded):
            ex.busy("queued too long; try the other server or again shortly")
        elif failure.check(defer.TimeoutError):
            log.warn(
                "{endpoint} call_id={call_id} timed out after {seconds}s",
                endpoint=ex.endpoint, call_id=ex.call_id,
                seconds=self.sale_timeout if ex.endpoint == SALES else self.request_timeout,
            )
            ex.unavailable("timeout")
        elif isinstance(failure.value, CardError) and failure.value.http_status < 500:
            # A refusal: the status is the one cardmgmt.errors gives this kind of error.
            ex.error(failure.value.code, failure.value.message, failure.value.http_status)
        elif failure.check(OperationalError, InterfaceError) or isinstance(failure.value, CardError):
            # The database is down or not ours (a 5xx kind: schema, keys): the
            # other server may do better, so 503, not 500.
            log.error(
                "{endpoint} call_id={call_id} database unavailable: {reason}",
                endpoint=ex.endpoint, call_id=ex.call_id, reason=_first_line(failure),
            )
            ex.unavailable("database_unavailable")
        else:
            self._crashed(failure, ex)

    def _crashed(self, failure: Failure, ex: _Exchange) -> None:
        log.failure(
            "{endpoint} call_id={call_id} failed unexpectedly ({code})",
            failure, endpoint=ex.endpoint, call_id=ex.call_id, code=type(failure.value).__name__,
        )
        ex.error("internal_error", "internal error; it has been logged")

    # --- health and metrics ---------------------------------------------------------------

    def _ping(self) -> defer.Deferred[str]:
        if self.db_ping is None:
            return defer.succeed("unknown")
        d = self.run_blocking(self.db_ping)
        d.addTimeout(1.0, self.reactor)
        d.addCallbacks(lambda _: "ok", lambda f: "down")
        return d

    def _health(self, ex: _Exchange) -> None:
        def answer(db: str) -> None:
            status = {"role": "standby", **self.status()}
            if not self.ops:
                # Who and whether, for a peer or a load balancer; the lease token and the peer stay on the ops listener.
                status = {"role": status["role"]}
            ex.json(
                200,
                {"name": self.name, **status, "db": db, "time": _now_utc(self.reactor).isoformat(timespec="milliseconds")},
                "ok",
            )

        self._ping().addCallback(answer).addErrback(self._crashed, ex)

    def _metrics(self, ex: _Exchange) -> None:
        if self.backlog is None:
            d: defer.Deferred[Any] = defer.succeed(None)
        else:
            d = self.run_blocking(self.backlog)
            d.addTimeout(1.0, self.reactor)

            def unknown(f: Failure) -> None:
                log.warn("metrics: outbox backlog unavailable: {reason}", reason=_one_line(f.getErrorMessage()))
                return None

            d.addErrback(unknown)
        d.addCallback(
            lambda backlog: ex.text(
                200,
                self.metrics.render(leader=self.status().get("role") == "leader", backlog=backlog),
                CONTENT_TYPE,
                "ok",
            )
        )
        d.addErrback(self._crashed, ex)


class RechargeSite(server.Site):
    def log(self, request: server.Request) -> None:
        """No access log: ``RechargeAPI`` logs every answer itself, with the call id."""


def make_site(api: RechargeAPI, reactor: IReactorTime, idle_timeout: float = 60) -> server.Site:
    """The HTTP factory for ``api``: bodies capped, idle connections dropped, no tracebacks shown."""
    # JSON only: no HTML-form parsing of POST bodies, which would run the
    # e-mail header parser over every request's Content-Type.
    site = RechargeSite(
        api, requestFactory=LimitedRequest, timeout=idle_timeout, reactor=reactor, parsePOSTFormSubmission=False
    )
    site.displayTracebacks = False
    site.noisy = False
    return site
