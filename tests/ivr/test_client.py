"""Tests for ivr.client: failover between real (tiny, threaded) HTTP servers on loopback.

Each stand-in server verifies the signature as a recharge server would, and
records what it was sent.  A server that "hangs" waits on an event that the
test sets when it ends, so nothing is left sleeping.
"""

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ivr import protocol
from ivr.client import RechargeClient

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


@pytest.fixture
def stubs() -> Iterator[Any]:
    made: list[Stub] = []

    def make(behaviour: str = "ok") -> Stub:
        stub = Stub(behaviour)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
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
    client = RechargeClient([a.address, b.address], KEY)
    assert commit(client) == {"outcome": "ok", "served_by": a.address[1]}
    assert len(a.hits) == 1 and not b.hits
    assert a.hits[0]["json"] == {"call_id": "1700000000.7", "seq": 2}


def test_a_refused_connection_moves_to_the_standby(stubs: Any, refused: tuple[str, int]) -> None:
    b = stubs()
    client = RechargeClient([refused, b.address], KEY)
    started = time.monotonic()
    assert commit(client)["served_by"] == b.address[1]
    assert time.monotonic() - started < 0.5
    assert client.current == 1


def test_a_hung_primary_is_left_within_the_bound(stubs: Any) -> None:
    a, b = stubs("hang"), stubs()
    client = RechargeClient([a.address, b.address], KEY, timeout=0.5)
    started = time.monotonic()
    answer = commit(client)
    elapsed = time.monotonic() - started
    assert answer["served_by"] == b.address[1]
    assert 0.45 <= elapsed < 1.0
    assert len(a.hits) == 1 and len(b.hits) == 1


@pytest.mark.parametrize("status", ["500", "503"])
def test_a_5xx_repeats_the_same_request_on_the_standby_with_a_new_nonce(stubs: Any, status: str) -> None:
    a, b = stubs(status), stubs()
    client = RechargeClient([a.address, b.address], KEY)
    assert commit(client)["served_by"] == b.address[1]
    assert a.hits[0]["body"] == b.hits[0]["body"]
    assert a.hits[0]["nonce"] != b.hits[0]["nonce"]


def test_an_answer_that_is_not_json_moves_to_the_standby(stubs: Any) -> None:
    a, b = stubs("garbage"), stubs()
    assert commit(RechargeClient([a.address, b.address], KEY))["served_by"] == b.address[1]


def test_the_client_sticks_to_the_server_that_answered_last(stubs: Any) -> None:
    a, b = stubs("500"), stubs()
    client = RechargeClient([a.address, b.address], KEY)
    commit(client)
    a.behaviour = "ok"  # the primary is back, but this call stays where it is
    for _ in range(3):
        assert commit(client)["served_by"] == b.address[1]
    assert len(a.hits) == 1 and len(b.hits) == 4


def test_a_sticky_client_goes_back_to_the_primary_when_the_standby_fails(stubs: Any) -> None:
    a, b = stubs("500"), stubs()
    client = RechargeClient([a.address, b.address], KEY)
    commit(client)
    a.behaviour, b.behaviour = "ok", "500"
    assert commit(client)["served_by"] == a.address[1]
    assert client.current == 0


def test_all_servers_refusing_gives_service_unavailable(refused: tuple[str, int]) -> None:
    client = RechargeClient([refused, refused], KEY)
    assert commit(client) == {"outcome": "service_unavailable"}


def test_all_servers_hanging_gives_service_unavailable_within_the_bound(stubs: Any) -> None:
    a, b = stubs("hang"), stubs("hang")
    client = RechargeClient([a.address, b.address], KEY, timeout=0.25, total_timeout=0.5)
    started = time.monotonic()
    assert commit(client) == {"outcome": "service_unavailable"}
    assert time.monotonic() - started < 0.6
    assert len(a.hits) == 1 and len(b.hits) == 1


def test_the_total_bound_holds_with_more_servers_than_time(stubs: Any) -> None:
    hung = [stubs("hang") for _ in range(3)]
    client = RechargeClient([s.address for s in hung], KEY, timeout=0.25, total_timeout=0.4)
    started = time.monotonic()
    assert commit(client)["outcome"] == "service_unavailable"
    assert time.monotonic() - started < 0.5
    assert not hung[2].hits


def test_a_4xx_is_not_retried_elsewhere_and_reads_as_unavailable(stubs: Any) -> None:
    a, b = stubs("400"), stubs()
    answer = commit(RechargeClient([a.address, b.address], KEY))
    assert answer == {"outcome": "service_unavailable", "error": "bad_request"}
    assert not b.hits


def test_each_method_posts_its_own_fields(stubs: Any) -> None:
    a = stubs()
    client = RechargeClient([a.address], KEY)
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
    assert RechargeClient([refused, b.address], KEY).health()["role"] == "standby"
    assert b.hits[0]["path"] == "/v1/health" and b.hits[0]["nonce"] is None


def test_log_lines_name_the_call_and_never_the_pin(stubs: Any, caplog: pytest.LogCaptureFixture) -> None:
    a, b = stubs("500"), stubs()
    client = RechargeClient([a.address, b.address], KEY)
    with caplog.at_level(logging.DEBUG, logger="ivr.client"):
        client.quote(call_id="1700000000.9", seq=1, account_no="3100000001", pin=PIN, caller="13800000000")
    assert caplog.records
    for record in caplog.records:
        line = record.getMessage()
        assert "1700000000.9" in line
        assert PIN not in line


def test_a_client_needs_a_server() -> None:
    with pytest.raises(ValueError):
        RechargeClient([], KEY)
