"""A recharge API on a live reactor, for tests that must go through the real HTTP stack.

``running_reactor`` runs a fresh, uninstalled reactor in a background thread;
``serve_api`` puts a ``RechargeAPI`` on an ephemeral loopback TLS port of it,
with a certificate from ``tls_test_certificates`` (one test CA per process) and
the hotline as its one channel client; a ``StubRecharge`` stands in for the
recharge core in tests about HTTP alone.
Every call into the reactor goes through ``blockingCallFromThread``.  Tests
about timing (leases, heartbeats, job schedules) use ``Clock`` and ``run_now``
and run no reactor at all.
"""

# test-case-name: tests.recharge_server.test_api, tests.ivr.test_client

import datetime as dt
import functools
import hashlib
import hmac
import http.client
import json
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.threads import blockingCallFromThread, deferToThreadPool
from twisted.python.threadpool import ThreadPool

from cardmgmt import nonces, tls
from cardmgmt.channel_clients import ClientEntry, ClientRegistry
from cardmgmt.db import Database
from cardmgmt.recharge import Answer, Outcome
from ivr import protocol


@contextmanager
def running_reactor() -> Iterator[SelectReactor]:
    """A reactor of its own, running in a daemon thread while the block runs."""
    reactor = SelectReactor()
    thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, name="test-reactor", daemon=True)
    thread.start()
    blockingCallFromThread(reactor, lambda: None)  # it is running
    try:
        yield reactor
    finally:
        reactor.callFromThread(reactor.stop)
        thread.join(10)
        if thread.is_alive():
            raise RuntimeError("the test reactor did not stop")


def run_now(f: Any, *a: Any, **kw: Any) -> defer.Deferred[Any]:
    """A ``run_blocking`` that runs the work at once, on the caller's thread (tests with ``Clock``)."""
    return defer.maybeDeferred(f, *a, **kw)


@dataclass
class StubRecharge:
    """A ``RechargeService`` stand-in for tests about HTTP, recording its calls.

    Like the real one it records each request's nonce in the card database
    (``db``, set by ``serve_api``), so replays are refused the same way.
    """

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    raise_: BaseException | None = None
    gate: threading.Event | None = None  # if set, every call waits for it
    db: Database | None = None

    def _call(self, name: str, nonce: str | None = None, **kw: Any) -> Answer:
        if nonce is not None and self.db is not None:
            with self.db.engine.begin() as conn:
                nonces.record(conn, nonce, dt.datetime.now(dt.UTC))
        self.calls.append((name, kw))
        if self.gate is not None:
            self.gate.wait(5)
        if self.raise_ is not None:
            raise self.raise_
        if name == "account":
            return Answer(Outcome.OK, {"account_no": kw["account_no"], "holder": "张*明", "balance": 12850})
        if name == "commit":
            return Answer(Outcome.OK, {"recharge_ref": "26112300000001", "amount": 5000, "account_no": "3100000001", "serial_tail": "0001"})
        return Answer(Outcome.OK, {"seq": kw.get("seq")})

    def account(self, account_no: str, nonce: str | None = None) -> Answer:
        return self._call("account", nonce, account_no=account_no)

    def quote(self, **kw: Any) -> Answer:
        return self._call("quote", **kw)

    def commit(self, **kw: Any) -> Answer:
        return self._call("commit", **kw)

    def cancel(self, **kw: Any) -> Answer:
        return self._call("cancel", **kw)

    def expire_holds(self) -> int:
        return 0


@functools.cache
def tls_test_certificates() -> Path:
    """A key directory holding a test CA and a server certificate for the loopback names (made once per process)."""
    d = Path(tempfile.mkdtemp(prefix="recharge-test-tls-"))
    tls.create_authority(d, "tests")
    tls.issue_server_certificate(d)
    return d


def client_tls(ca_dir: Path | None = None) -> ssl.SSLContext:
    """A client context trusting the test CA (or the installation whose key directory is ``ca_dir``)."""
    from ivr.client import tls_context

    return tls_context(str((ca_dir or tls_test_certificates()) / tls.CA_CERT))


def other_client_key(api_key: bytes, name: str) -> bytes:
    """What ``serve_api`` takes as client ``name``'s key: a key of its own, derived like the real ones."""
    return hmac.new(api_key, b"test-client:" + name.encode(), hashlib.sha256).digest()


class StaticClients:
    """A fixed client table for ``serve_api``: the hotline, and whatever a test adds or revokes."""

    def __init__(self, api_key: bytes) -> None:
        self.api_key = api_key
        self.entries = {"hotline": ClientEntry("hotline", "hotline", False)}

    def key(self, name: str) -> bytes:
        return self.api_key if name == "hotline" else other_client_key(self.api_key, name)

    def lookup(self, name: str) -> ClientEntry:
        # The real registry's rule, over the table as the test left it (never stale).
        registry = ClientRegistry(lambda: self.entries, time.monotonic, max_age=float("inf"))
        registry.refresh()
        return registry.lookup(name)


@dataclass
class LiveAPI:
    port: int
    api: Any
    recharge: Any
    clients: StaticClients | None = None
    tls: ssl.SSLContext = field(default_factory=client_tls)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


@contextmanager
def serve_api(
    reactor: Any, db: Database, recharge: Any, api_key: bytes, *, threads: int = 4, **kw: Any
) -> Iterator[LiveAPI]:
    """A ``RechargeAPI`` listening on an ephemeral loopback TLS port of ``reactor``, with its own thread pool.

    ``api_key`` is the hotline client's key; ``kw`` may replace ``client_key``
    and ``clients`` (else a ``StaticClients``, as ``LiveAPI.clients``).
    """
    from recharge_server.api import RechargeAPI, make_site
    from recharge_server.tls import server_endpoint, server_options

    pool = ThreadPool(minthreads=0, maxthreads=threads, name="test-api")
    pool.start()
    kw.setdefault("name", "A")
    if isinstance(recharge, StubRecharge) and recharge.db is None:
        recharge.db = db
    table = StaticClients(api_key)
    kw.setdefault("client_key", table.key)
    kw.setdefault("clients", table.lookup)
    api = RechargeAPI(
        recharge=recharge, run_blocking=partial(deferToThreadPool, reactor, pool), reactor=reactor, **kw,
    )
    site = make_site(api, reactor)
    # The servers' own backlog: a burst of terminals connecting at once is queued, not reset.
    endpoint = server_endpoint(reactor, "127.0.0.1", 0, server_options(tls_test_certificates()), 1024)
    port = blockingCallFromThread(reactor, lambda: endpoint.listen(site))
    try:
        yield LiveAPI(port.getHost().port, api, recharge, table)
    finally:
        blockingCallFromThread(reactor, port.stopListening)
        pool.stop()


# --- talking to a test listener -------------------------------------------------------

# A client context trusting the test CA that ``serve_api``'s listeners are certified by.
TLS = client_tls()

COMMIT = {"call_id": "1700000000.42", "seq": 1}


def send(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """One HTTPS request to a test listener; its status, body and headers (names lowercased)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=TLS)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def signed(
    key: bytes, path: str, obj: Any, now: float | None = None, raw: bytes | None = None, client: str = "hotline"
) -> tuple[bytes, dict[str, str]]:
    """A request body and the headers that sign it as channel client ``client``."""
    body = raw if raw is not None else json.dumps(obj).encode()
    headers = protocol.sign(key, "POST", path, body, time.time() if now is None else now, client=client)
    return body, headers | {"Content-Type": "application/json"}


def post(live: LiveAPI, key: bytes, path: str, obj: Any, **kw: Any) -> tuple[int, dict[str, Any]]:
    """A signed POST to ``live``; its status and JSON answer."""
    body, headers = signed(key, path, obj, **kw)
    status, raw, _ = send(live.port, "POST", path, body, headers)
    return status, json.loads(raw)


def assert_error(status: int, raw: bytes, expected_status: int, code: str) -> dict[str, Any]:
    """The answer is the one-line error ``code`` with ``expected_status``; returns its body."""
    assert status == expected_status, raw
    assert raw.count(b"\n") == 0
    body = json.loads(raw)
    assert body["error"] == code
    assert body["message"] and "\n" not in body["message"]
    return body
