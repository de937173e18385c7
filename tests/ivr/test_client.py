"""Tests for ivr.client: failover between real servers on loopback, kept-alive connections, broken answers.

The failover tests use stand-in servers (tiny, threaded, HTTP/1.0, so every
request has a connection of its own).  Each verifies the signature as a
recharge server would, and records what it was sent.  A server that "hangs"
waits on an event that the test sets when it ends, so nothing is left sleeping.

The keep-alive tests run the real Twisted recharge API (``serve_api``, with a
stub recharge core) and count the connections it accepted.  The tests about
broken answers use a raw socket server that sends scripted bytes.
"""

import json
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.threads import blockingCallFromThread

from cardmgmt import tls
from ivr import client as client_module
from ivr import protocol
from ivr.client import RechargeClient
from testkit.live_api import StubRecharge, client_tls, serve_api, tls_test_certificates

TLS = client_tls()

KEY = b"k" * 32
PIN = "918273645546372819"


@dataclass
class Stub:
    """What one stand-in server does and what it saw."""

    behaviour: str = "ok"  # ok | hang | 500 | 503 | 400 | garbage
    hits: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        return ("127.0.0.1", self.server.server_address[1])


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, obj: Any, raw: bytes | None = None) -> None:
            body = raw if raw is not None else json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _serve(self, body: bytes) -> None:
            headers = {k: v for k, v in self.headers.items()}
            hit: dict[str, Any] = {"path": self.path, "body": body, "nonce": headers.get("X-Nonce")}
            if self.command == "POST":
                protocol.verify(KEY, "POST", self.path, body, headers, time.time())
                hit["json"] = json.loads(body)
            stub.hits.append(hit)
            if stub.behaviour == "hang":
                stub.release.wait(5)
                return self._answer(200, {"outcome": "ok", "late": True})
            if stub.behaviour in ("500", "503"):
                return self._answer(int(stub.behaviour), {"outcome": "service_unavailable"})
            if stub.behaviour == "400":
                return self._answer(400, {"error": "bad_request", "message": "unknown field 'x'"})
            if stub.behaviour == "garbage":
                return self._answer(200, None, raw=b"<html>oops")
            if self.path == "/v1/health":
                return self._answer(200, {"name": f"stub{stub.address[1]}", "role": "standby", "db": "ok"})
            return self._answer(200, {"outcome": "ok", "served_by": stub.address[1]})

        def do_POST(self) -> None:
            self._serve(self.rfile.read(int(self.headers.get("Content-Length", 0))))

        def do_GET(self) -> None:
            self._serve(b"")

    return Handler


def server_tls() -> ssl.SSLContext:
    """The stand-in servers speak TLS with the test CA's server certificate, as the real ones do."""
    d = tls_test_certificates()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / tls.SERVER_CERT, d / tls.SERVER_KEY)
    return context


@pytest.fixture
def stubs() -> Iterator[Any]:
    made: list[Stub] = []

    def make(behaviour: str = "ok") -> Stub:
        stub = Stub(behaviour)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
        server.socket = server_tls().wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        stub.server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        made.append(stub)
        return stub

    yield make
    for stub in made:
        stub.release.set()
        assert stub.server is not None
        stub.server.shutdown()
        stub.server.server_close()


@pytest.fixture
def refused() -> tuple[str, int]:
    """An address where nothing listens: the connection is refused at once."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return ("127.0.0.1", port)


def commit(client: RechargeClient) -> dict[str, Any]:
    return client.commit(call_id="1700000000.7", seq=2)


def test_the_primary_answers_when_it_is_up(stubs: Any) -> None:
    a, b = stubs(), stubs()
    client = RechargeClient([a.address, b.address], KEY, tls=TLS)
    assert commit(client) == {"outcome": "ok", "served_by": a.address[1]}
    assert len(a.hits) == 1 and not b.hits
    assert a.hits[0]["json"] == {"call_id": "1700000000.7", "seq": 2}


def test_a_refused_connection_moves_to_the_standby(stubs: Any, refused: tuple[str, int]) -> None:
    b = stubs()
    client = RechargeClient([refused, b.address], KEY, tls=TLS)
    started = time.monotonic()
    assert commit(client)["served_by"] == b.address[1]
    assert time.monotonic() - started < 0.5
    assert client.current == 1


def test_a_hung_primary_is_left_within_the_bound(stubs: Any) -> None:
    a, b = stubs("hang"), stubs()
    client = RechargeClient([a.address, b.address], KEY, tls=TLS, timeout=0.5)
    started = time.monotonic()
    answer = commit(client)
    elapsed = time.monotonic() - started
    assert answer["served_by"] == b.address[1]
    assert 0.45 <= elapsed < 1.0
    assert len(a.hits) == 1 and len(b.hits) == 1


@pytest.mark.parametrize("status", ["500", "503"])
def test_a_5xx_repeats_the_same_request_on_the_standby_with_a_new_nonce(stubs: Any, status: str) -> None:
    a, b = stubs(status), stubs()
    client = RechargeClient([a.address, b.address], KEY, tls=TLS)
    assert commit(client)["served_by"] == b.address[1]
    assert a.hits[0]["body"] == b.hits[0]["body"]
    assert a.hits[0]["nonce"] != b.hits[0]["nonce"]


def test_an_answer_that_is_not_json_moves_to_the_standby(stubs: Any) -> None:
    a, b = stubs("garbage"), stubs()
    assert commit(RechargeClient([a.address, b.address], KEY, tls=TLS))["served_by"] == b.address[1]


def test_the_client_sticks_to_the_server_that_answered_last(stubs: Any) -> None:
    a, b = stubs("500"), stubs()
    client = RechargeClient([a.address, b.address], KEY, tls=TLS)
    commit(client)
    a.behaviour = "ok"  # the primary is back, but this call stays where it is
    for _ in range(3):
        assert commit(client)["served_by"] == b.address[1]
    assert len(a.hits) == 1 and len(b.hits) == 4


def test_a_sticky_client_goes_back_to_the_primary_when_the_standby_fails(stubs: Any) -> None:
    a, b = stubs("500"), stubs()
    client = RechargeClient([a.address, b.address], KEY, tls=TLS)
    commit(client)
    a.behaviour, b.behaviour = "ok", "500"
    assert commit(client)["served_by"] == a.address[1]
    assert client.current == 0


def test_all_servers_refusing_gives_service_unavailable(refused: tuple[str, int]) -> None:
    client = RechargeClient([refused, refused], KEY, tls=TLS)
    assert commit(client) == {"outcome": "service_unavailable"}


def test_all_servers_hanging_gives_service_unavailable_within_the_bound(stubs: Any) -> None:
    a, b = stubs("hang"), stubs("hang")
    client = RechargeClient([a.address, b.address], KEY, tls=TLS, timeout=0.25, total_timeout=0.5)
    started = time.monotonic()
    assert commit(client) == {"outcome": "service_unavailable"}
    assert time.monotonic() - started < 0.6
    assert len(a.hits) == 1 and len(b.hits) == 1


def test_the_total_bound_holds_with_more_servers_than_time(stubs: Any) -> None:
    hung = [stubs("hang") for _ in range(3)]
    client = RechargeClient([s.address for s in hung], KEY, tls=TLS, timeout=0.25, total_timeout=0.4)
    started = time.monotonic()
    assert commit(client)["outcome"] == "service_unavailable"
    assert time.monotonic() - started < 0.5
    assert not hung[2].hits


def test_a_4xx_is_not_retried_elsewhere_and_reads_as_unavailable(stubs: Any) -> None:
    a, b = stubs("400"), stubs()
    answer = commit(RechargeClient([a.address, b.address], KEY, tls=TLS))
    assert answer == {"outcome": "service_unavailable", "error": "bad_request"}
    assert not b.hits


def test_each_method_posts_its_own_fields(stubs: Any) -> None:
    a = stubs()
    client = RechargeClient([a.address], KEY, tls=TLS)
    client.account(call_id="c1", account_no="3100000001")
    client.quote(call_id="c1", seq=1, account_no="3100000001", pin=PIN, caller="13800000000")
    client.commit(call_id="c1", seq=1)
    client.cancel(call_id="c1", seq=1)
    assert [(h["path"], sorted(h["json"])) for h in a.hits] == [
        ("/v1/account", ["account_no", "call_id"]),
        ("/v1/quote", ["account_no", "call_id", "caller", "pin", "seq"]),
        ("/v1/commit", ["call_id", "seq"]),
        ("/v1/cancel", ["call_id", "seq"]),
    ]


def test_health_fails_over_too(stubs: Any, refused: tuple[str, int]) -> None:
    b = stubs()
    assert RechargeClient([refused, b.address], KEY, tls=TLS).health()["role"] == "standby"
    assert b.hits[0]["path"] == "/v1/health" and b.hits[0]["nonce"] is None


def test_log_lines_name_the_call_and_never_the_pin(stubs: Any, caplog: pytest.LogCaptureFixture) -> None:
    a, b = stubs("500"), stubs()
    client = RechargeClient([a.address, b.address], KEY, tls=TLS)
    with caplog.at_level(logging.DEBUG, logger="ivr.client"):
        client.quote(call_id="1700000000.9", seq=1, account_no="3100000001", pin=PIN, caller="13800000000")
    assert caplog.records
    for record in caplog.records:
        line = record.getMessage()
        assert "1700000000.9" in line
        assert PIN not in line


def test_a_client_needs_a_server() -> None:
    with pytest.raises(ValueError):
        RechargeClient([], KEY, tls=TLS)


def test_the_client_and_the_protocol_name_unavailability_alike() -> None:
    from recharge_server import api

    assert client_module.SERVICE_UNAVAILABLE == protocol.SERVICE_UNAVAILABLE
    assert client_module.BUSY == api.BUSY
    assert client_module.MAX_BACKOFF <= int(api.RETRY_AFTER), "the longest pause is within what the servers ask for"


# --- kept-alive connections to the real Twisted API ------------------------------------


@dataclass
class Accepted:
    """The connections one Twisted site accepted (their transports, in order)."""

    reactor: Any
    transports: list[Any] = field(default_factory=list)
    channels: list[Any] = field(default_factory=list)  # the HTTP channel of each (inside Twisted's generic wrapper)

    @property
    def count(self) -> int:
        return int(blockingCallFromThread(self.reactor, lambda: len(self.transports)))

    def open_count(self) -> int:
        return int(blockingCallFromThread(self.reactor, lambda: len(self._open())))

    def _open(self) -> list[Any]:
        # A TLS connection being closed has sent its close_notify and waits for the client's: closed, as far as
        # the server is concerned.
        return [t for t in self.transports if not (t.disconnected or getattr(t, "disconnecting", False))]

    def drop_all(self, abort: bool = False) -> None:
        """Close every connection from the server's side (``abort``: with a reset) and wait until they are gone."""

        def drop() -> None:
            for t, channel in zip(self.transports, self.channels, strict=True):
                if t in self._open():
                    # As the server's own idle timeout does: through the channel, which lets its TLS layer close.
                    (t.abortConnection if abort else channel._channel.loseConnection)()

        blockingCallFromThread(self.reactor, drop)
        assert wait_for(lambda: self.open_count() == 0)
        settle()


def settle() -> None:
    """Let a TLS close_notify the server has just queued reach the client's socket (the reactor writes it next turn)."""
    time.sleep(0.1)


def wait_for(check: Callable[[], Any], seconds: float = 10.0) -> Any:
    """Poll ``check`` until it is true (the server's own timers set the pace)."""
    deadline = time.monotonic() + seconds
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


class TwistedAPIs:
    """Real recharge APIs on loopback (``serve_api``, stub recharge core), each with the connections it accepted."""

    def __init__(self, reactor: Any, db: Any, api_key: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reactor, self.db, self.api_key, self.monkeypatch = reactor, db, api_key, monkeypatch
        self.stack = ExitStack()
        self.gates: list[threading.Event] = []

    def start(self, idle_timeout: float = 60.0) -> tuple[Any, Accepted]:
        from recharge_server import api as server_api

        real_make_site = server_api.make_site
        accepted = Accepted(self.reactor)

        def make_site(api: Any, reactor: Any, **kw: Any) -> Any:
            site = real_make_site(api, reactor, idle_timeout=idle_timeout)
            build = site.buildProtocol

            def build_protocol(addr: Any) -> Any:
                protocol_ = build(addr)
                make_connection = protocol_.makeConnection

                def connected(transport: Any) -> None:
                    accepted.transports.append(transport)
                    accepted.channels.append(protocol_)
                    make_connection(transport)

                protocol_.makeConnection = connected
                return protocol_

            site.buildProtocol = build_protocol
            return site

        self.monkeypatch.setattr(server_api, "make_site", make_site)
        try:
            live = self.stack.enter_context(serve_api(self.reactor, self.db, StubRecharge(), self.api_key))
        finally:
            self.monkeypatch.setattr(server_api, "make_site", real_make_site)
        return live, accepted

    def hang(self, live: Any) -> None:
        """From now on this server's recharge core waits (until the test ends)."""
        gate = threading.Event()
        self.gates.append(gate)
        live.recharge.gate = gate

    def stop(self) -> None:
        for gate in self.gates:
            gate.set()
        self.stack.close()


@pytest.fixture
def apis(live_reactor: Any, sqlite_db: Any, api_key: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[TwistedAPIs]:
    made = TwistedAPIs(live_reactor, sqlite_db, api_key, monkeypatch)
    yield made
    made.stop()


def run_a_call(client: RechargeClient, call_id: str = "1700000000.11") -> list[str]:
    """The requests of one phone call with one card; their outcomes."""
    return [
        client.account(call_id=call_id, account_no="3100000001")["outcome"],
        client.quote(call_id=call_id, seq=1, account_no="3100000001", pin=PIN, caller="13800000000")["outcome"],
        client.commit(call_id=call_id, seq=1)["outcome"],
    ]


def test_one_connection_carries_a_whole_call(apis: TwistedAPIs, api_key: bytes) -> None:
    live, accepted = apis.start()
    with RechargeClient([live.address], api_key, tls=TLS) as client:
        assert run_a_call(client) == ["ok", "ok", "ok"]
        assert client.health()["name"] == "A"
        assert run_a_call(client, "1700000000.12") == ["ok", "ok", "ok"]
    assert [name for name, _ in live.recharge.calls] == ["account", "quote", "commit"] * 2
    assert accepted.count == 1
    assert wait_for(lambda: accepted.open_count() == 0)  # close() closed it


def test_close_is_safe_to_repeat_and_the_client_can_go_on(apis: TwistedAPIs, api_key: bytes) -> None:
    live, accepted = apis.start()
    client = RechargeClient([live.address], api_key, tls=TLS)
    client.close()
    assert run_a_call(client) == ["ok", "ok", "ok"]
    client.close()
    client.close()
    assert wait_for(lambda: accepted.open_count() == 0)
    assert client.commit(call_id="1700000000.11", seq=1)["outcome"] == "ok"
    assert accepted.count == 2
    client.close()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_connection_the_server_dropped_while_idle_is_replaced_once(apis: TwistedAPIs, api_key: bytes, how: str) -> None:
    a_live, a = apis.start()
    b_live, b = apis.start()
    with RechargeClient([a_live.address, b_live.address], api_key, tls=TLS) as client:
        assert client.account(call_id="1700000000.13", account_no="3100000001")["outcome"] == "ok"
        a.drop_all(abort=how == "reset")
        started = time.monotonic()
        assert client.commit(call_id="1700000000.13", seq=1)["outcome"] == "ok"
        assert time.monotonic() - started < 0.5
        assert client.current == 0
    assert a.count == 2 and b.count == 0
    assert [name for name, _ in a_live.recharge.calls] == ["account", "commit"]


def test_the_servers_idle_timeout_is_survived(apis: TwistedAPIs, api_key: bytes) -> None:
    live, accepted = apis.start(idle_timeout=0.2)
    with RechargeClient([live.address], api_key, tls=TLS) as client:
        assert client.account(call_id="1700000000.14", account_no="3100000001")["outcome"] == "ok"
        assert wait_for(lambda: accepted.open_count() == 0)  # Twisted timed the idle connection out
        settle()
        assert client.commit(call_id="1700000000.14", seq=1)["outcome"] == "ok"
    assert accepted.count == 2


def test_a_kept_connection_to_a_hung_server_fails_over_within_the_bound(apis: TwistedAPIs, api_key: bytes) -> None:
    a_live, a = apis.start()
    b_live, b = apis.start()
    with RechargeClient([a_live.address, b_live.address], api_key, tls=TLS, timeout=0.5, total_timeout=1.0) as client:
        assert client.account(call_id="1700000000.15", account_no="3100000001")["outcome"] == "ok"
        apis.hang(a_live)
        started = time.monotonic()
        assert client.quote(call_id="1700000000.15", seq=1, account_no="3100000001", pin=PIN, caller="")["outcome"] == "ok"
        elapsed = time.monotonic() - started
        assert 0.45 <= elapsed < 1.0
        assert client.current == 1
        # The call goes on over one connection to the standby; the hung server's connection is kept
        # for its late answer (a slow server's would come) and dropped when it fails to come again.
        assert client.commit(call_id="1700000000.15", seq=1)["outcome"] == "ok"
        assert client.commit(call_id="1700000000.15", seq=1)["outcome"] == "ok"
        client.current = 0  # back to the hung one: its late answer does not come either
        assert client.commit(call_id="1700000000.15", seq=1)["outcome"] == "ok"
        assert client.current == 1
        assert wait_for(lambda: a.open_count() == 0)
    assert a.count == 1 and b.count == 1


def test_a_server_that_is_gone_for_good_is_tried_once_more_then_left(apis: TwistedAPIs, api_key: bytes) -> None:
    b_live, b = apis.start()
    # The primary answers once, keeping the connection, then closes it and every later one unanswered.
    primary = RawServer([OK_ANSWER])
    try:
        with RechargeClient([primary.address, b_live.address], api_key, tls=TLS) as client:
            assert client.account(call_id="1700000000.16", account_no="3100000001")["outcome"] == "ok"
            primary.answers = []
            primary.drop_idle()
            started = time.monotonic()
            assert client.commit(call_id="1700000000.16", seq=1)["outcome"] == "ok"
            assert time.monotonic() - started < 0.5
            assert client.current == 1
        assert primary.accepted == 2 and b.count == 1
    finally:
        primary.stop()


def test_log_lines_of_a_replaced_connection_name_the_call_and_never_the_pin(
    apis: TwistedAPIs, api_key: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    live, accepted = apis.start()
    with RechargeClient([live.address], api_key, tls=TLS) as client:
        client.account(call_id="1700000000.17", account_no="3100000001")
        accepted.drop_all()
        with caplog.at_level(logging.DEBUG, logger="ivr.client"):
            client.quote(call_id="1700000000.17", seq=1, account_no="3100000001", pin=PIN, caller="13800000000")
    assert any("kept connection" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert "1700000000.17" in record.getMessage()
        assert PIN not in record.getMessage()


# --- broken answers, from a raw socket server ---------------------------------------------


def _json_answer(obj: Any, extra: bytes = b"") -> bytes:
    body = json.dumps(obj).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


OK_ANSWER = _json_answer({"outcome": "ok", "served_by": "raw"})
CLOSE = b""  # close the connection without answering
RESET = b"RESET"  # reset the connection
THEN_CLOSE = b"\0THEN-CLOSE"  # at the end of an answer: close the connection after sending it


class RawServer:
    """Answers each request with the next scripted bytes; past the script, closes connections unanswered."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.accepted = 0
        self.requests: list[bytes] = []
        self.conns: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.listener.getsockname()[1])

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        buffer = b""
        try:
            raw, conn = conn, server_tls().wrap_socket(conn, server_side=True)
            self.conns[self.conns.index(raw)] = conn
            while not self.stopping.is_set():
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + buffer[:length])
                buffer = buffer[length:]
                if not self.answers:
                    return
                answer = self.answers.pop(0)
                if answer == RESET:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if answer == CLOSE:
                    return
                conn.sendall(answer.removesuffix(THEN_CLOSE))
                if answer.endswith(THEN_CLOSE):
                    return
        except OSError:
            return
        finally:
            conn.close()

    def push(self, data: bytes) -> None:
        """Send ``data`` unasked on every connection still open."""
        for conn in self.conns:
            try:
                conn.sendall(data)
            except OSError:
                pass

    def drop_idle(self) -> None:
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        self.stopping.set()
        self.drop_idle()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def raw_servers() -> Iterator[Callable[[list[bytes]], RawServer]]:
    made: list[RawServer] = []

    def make(answers: list[bytes]) -> RawServer:
        server = RawServer(answers)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


BROKEN_ANSWERS = {
    "not http": b"<html>hello</html>\r\n\r\n",
    "bad status": b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\n{}",
    "http/2": b"HTTP/2 200\r\ncontent-length: 2\r\n\r\n{}",
    "closed unanswered": CLOSE,
    "reset unanswered": RESET,
    "cut short": b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"outcome\"" + THEN_CLOSE,
    "cut in the head": b"HTTP/1.1 200 OK\r\nContent-Len" + THEN_CLOSE,
    "cut in a chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"outc" + THEN_CLOSE,
    "bad length": b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\n{}",
    "negative length": b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\n{}",
    "two lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "huge length": b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n{}",
    "unknown coding": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n{}",
    "bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "chunk overrun": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{}\r\n0\r\n\r\n",
    "header without colon": b"HTTP/1.1 200 OK\r\nContent-Length 2\r\n\r\n{}",
    "folded header": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded\r\nContent-Length: 2\r\n\r\n{}",
    "endless line": b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 100_000,
    "endless headers": b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * 500 + b"\r\n",
    "not json": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n<html",
    "wrong shape": _json_answer(["ok"]),
    "no outcome": _json_answer({"served_by": "raw"}),
    "too large to the close": b"HTTP/1.0 200 OK\r\n\r\n" + b" " * 70_000 + b"{}",
    "5xx": _json_answer({"outcome": "ok"}).replace(b"200 OK", b"503 Service Unavailable"),
}


@pytest.mark.parametrize("answer", BROKEN_ANSWERS.values(), ids=BROKEN_ANSWERS.keys())
def test_a_broken_answer_moves_to_the_standby(raw_servers: Any, answer: bytes) -> None:
    a, b = raw_servers([answer]), raw_servers([OK_ANSWER, OK_ANSWER])
    with RechargeClient([a.address, b.address], KEY, tls=TLS) as client:
        started = time.monotonic()
        assert commit(client) == {"outcome": "ok", "served_by": "raw"}
        assert time.monotonic() - started < 0.4  # none of these is a timeout
        assert client.current == 1
        # The broken server's connection is not kept: the next request goes over the standby's kept one.
        assert commit(client) == {"outcome": "ok", "served_by": "raw"}
    assert a.accepted == 1 and len(a.requests) == 1 and b.accepted == 1


GOOD_ANSWERS = {
    "length": (OK_ANSWER, True),
    "chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"c;ext=1\r\n{\"outcome\": \r\n13\r\n\"ok\", \"served_by\": \r\n6\r\n\"raw\"}\r\n0\r\nX-Trailer: 1\r\n\r\n",
        True,
    ),
    "interim 100 first": (b"HTTP/1.1 100 Continue\r\n\r\n" + OK_ANSWER, True),
    "connection close": (_json_answer({"outcome": "ok", "served_by": "raw"}, b"Connection: close\r\n"), False),
    "http/1.0": (OK_ANSWER.replace(b"HTTP/1.1", b"HTTP/1.0"), False),
    "http/1.0 keep-alive": (
        _json_answer({"outcome": "ok", "served_by": "raw"}, b"Connection: Keep-Alive\r\n").replace(b"HTTP/1.1", b"HTTP/1.0"),
        True,
    ),
    "body to the close": (b"HTTP/1.1 200 OK\r\n\r\n{\"outcome\": \"ok\", \"served_by\": \"raw\"}" + THEN_CLOSE, False),
    "lf only": (OK_ANSWER.replace(b"\r\n", b"\n"), True),
}


@pytest.mark.parametrize(("answer", "kept"), GOOD_ANSWERS.values(), ids=GOOD_ANSWERS.keys())
def test_what_the_client_reads_and_when_it_keeps_the_connection(raw_servers: Any, answer: bytes, kept: bool) -> None:
    a = raw_servers([answer, OK_ANSWER])
    with RechargeClient([a.address], KEY, tls=TLS) as client:
        assert commit(client) == {"outcome": "ok", "served_by": "raw"}
        assert commit(client) == {"outcome": "ok", "served_by": "raw"}
    assert a.accepted == (1 if kept else 2)


def test_a_request_the_kept_connection_lost_is_sent_again_on_a_new_one(raw_servers: Any) -> None:
    a = raw_servers([OK_ANSWER, CLOSE, OK_ANSWER])  # the second request is read, then the connection closed
    b = raw_servers([OK_ANSWER])
    with RechargeClient([a.address, b.address], KEY, tls=TLS) as client:
        commit(client)
        assert commit(client) == {"outcome": "ok", "served_by": "raw"}
        assert client.current == 0
    assert a.accepted == 2 and len(a.requests) == 3 and not b.requests


def test_bytes_nobody_asked_for_are_never_taken_for_an_answer(raw_servers: Any) -> None:
    timeout_notice = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"
    a = raw_servers([OK_ANSWER + timeout_notice, OK_ANSWER, OK_ANSWER])
    with RechargeClient([a.address], KEY, tls=TLS) as client:
        assert commit(client)["outcome"] == "ok"  # bytes after the answer: that connection is not kept
        assert commit(client)["outcome"] == "ok"
        a.push(timeout_notice)  # sent while the connection is idle
        assert commit(client)["outcome"] == "ok"
    assert a.accepted == 3


def test_a_5xx_drops_the_connection(raw_servers: Any) -> None:
    a = raw_servers([BROKEN_ANSWERS["5xx"], OK_ANSWER])
    with RechargeClient([a.address], KEY, tls=TLS) as client:
        assert commit(client) == {"outcome": "service_unavailable"}
        assert commit(client) == {"outcome": "ok", "served_by": "raw"}
    assert a.accepted == 2


def test_each_attempt_is_signed_afresh(raw_servers: Any) -> None:
    a = raw_servers([OK_ANSWER, CLOSE])  # the second request finds its connection closed
    b = raw_servers([OK_ANSWER])
    with RechargeClient([a.address, b.address], KEY, tls=TLS) as client:
        commit(client)
        commit(client)
    # A: the first commit; the second on the kept connection (closed unanswered), again on a new one
    # (closed unanswered: A has failed); then B.
    nonces = [r.split(b"X-Nonce: ")[1][:32] for r in a.requests + b.requests]
    assert (len(a.requests), len(b.requests)) == (3, 1)
    assert len(set(nonces)) == 4


@settings(max_examples=40, deadline=None)
@given(answer=st.one_of(
    st.binary(max_size=300),
    st.builds(lambda head, body: b"HTTP/1.1 200 OK\r\n" + head + b"\r\n\r\n" + body, st.binary(max_size=200), st.binary(max_size=200)),
))
def test_no_answer_at_all_makes_the_client_raise(answer: bytes) -> None:
    a, b = RawServer([answer + THEN_CLOSE]), RawServer([OK_ANSWER])
    try:
        with RechargeClient([a.address, b.address], KEY, tls=TLS, timeout=0.3, total_timeout=0.6) as client:
            got = commit(client)
        assert isinstance(got, dict) and isinstance(got.get("outcome"), str)
    finally:
        a.stop()
        b.stop()


# --- TLS --------------------------------------------------------------------------------------


def test_a_client_that_does_not_trust_the_servers_ca_refuses_it(
    apis: TwistedAPIs, api_key: bytes, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    live, accepted = apis.start()
    other = tmp_path / "other-installation"
    other.mkdir(mode=0o700)
    tls.create_authority(other, "other")
    stranger = client_module.tls_context(str(other / tls.CA_CERT))
    with caplog.at_level(logging.WARNING, logger="ivr.client"), RechargeClient([live.address], api_key, tls=stranger) as client:
        assert client.quote(call_id="1700000000.18", seq=1, account_no="3100000001", pin=PIN, caller="")["outcome"] == "service_unavailable"
    assert live.recharge.calls == [], "nothing was sent to a server the client does not trust"
    assert any("TLS certificate is not trusted" in r.getMessage() for r in caplog.records)
    assert all(PIN not in r.getMessage() for r in caplog.records)


def test_the_server_is_reached_by_an_address_or_a_name_in_its_certificate(apis: TwistedAPIs, api_key: bytes) -> None:
    # (A name missing from the certificate is refused: tests.cardmgmt.test_tls.)
    live, _ = apis.start()
    for host in ("127.0.0.1", "localhost"):
        with RechargeClient([(host, live.port)], api_key, tls=TLS, client="hotline") as client:
            assert client.account(call_id="1700000000.19", account_no="3100000001")["outcome"] == "ok"


def test_plain_http_to_a_server_is_refused(apis: TwistedAPIs, api_key: bytes) -> None:
    live, _ = apis.start()
    body = json.dumps({"call_id": "1700000000.21", "seq": 1}).encode()
    headers = protocol.sign(api_key, "POST", "/v1/commit", body, time.time(), client="hotline")
    request = (f"POST /v1/commit HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode() + body
    with socket.create_connection(live.address, timeout=2) as s:
        s.sendall(request)
        try:
            answer = s.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/"), "a plain request got an HTTP answer"
    assert live.recharge.calls == []


BUSY_ANSWER = _json_answer({"outcome": "service_unavailable", "error": "busy", "message": "10 requests in progress"}).replace(
    b"200 OK", b"503 Service Unavailable\r\nRetry-After: 1"
)


def test_a_busy_server_moves_the_request_to_the_other_at_once(raw_servers: Any) -> None:
    a, b = raw_servers([BUSY_ANSWER, OK_ANSWER]), raw_servers([OK_ANSWER])
    with RechargeClient([a.address, b.address], KEY, tls=TLS) as client:
        started = time.monotonic()
        assert commit(client) == {"outcome": "ok", "served_by": "raw"}
        assert time.monotonic() - started < 0.4, "no back-off when another server answers"
        assert client.current == 1
    assert len(a.requests) == 1 and len(b.requests) == 1


def test_when_every_server_is_busy_the_client_backs_off_and_tries_again_on_the_same_connection(raw_servers: Any) -> None:
    a, b = raw_servers([BUSY_ANSWER, OK_ANSWER]), raw_servers([BUSY_ANSWER])
    with RechargeClient([a.address, b.address], KEY, tls=TLS) as client:
        assert commit(client) == {"outcome": "ok", "served_by": "raw"}
    assert len(a.requests) == 2 and a.accepted == 1, "a busy refusal keeps the connection (no new TLS handshake)"


def test_a_round_of_busy_servers_ends_within_the_deadline_with_busy(raw_servers: Any) -> None:
    a, b = raw_servers([BUSY_ANSWER] * 50), raw_servers([BUSY_ANSWER] * 50)
    with RechargeClient([a.address, b.address], KEY, tls=TLS, timeout=0.5, total_timeout=0.6) as client:
        started = time.monotonic()
        assert commit(client) == {"outcome": "service_unavailable", "error": "busy"}
        took = time.monotonic() - started
    assert took <= 0.6 + 0.05, took
    assert 2 <= len(a.requests) <= 10, "backed off between tries, not a busy loop"


def test_a_slow_servers_late_answer_is_read_and_its_connection_kept(apis: TwistedAPIs, api_key: bytes) -> None:
    a_live, a = apis.start()
    b_live, b = apis.start()
    with RechargeClient([a_live.address, b_live.address], api_key, tls=TLS, timeout=0.5, total_timeout=1.0) as client:
        assert client.account(call_id="1700000000.16", account_no="3100000001")["outcome"] == "ok"
        apis.hang(a_live)
        assert client.quote(call_id="1700000000.16", seq=1, account_no="3100000001", pin=PIN, caller="")["outcome"] == "ok"
        assert client.current == 1, "A was too slow: B answered"
        a_live.recharge.gate.set()  # A finishes: its late answer goes out on the kept connection
        a_live.recharge.gate = None
        client.current = 0
        assert client.commit(call_id="1700000000.16", seq=1)["outcome"] == "ok"
        assert client.current == 0, "A answered, on the connection that carried its late answer"
    assert a.count == 1, "no new connection (no new TLS handshake) for the slow server"
