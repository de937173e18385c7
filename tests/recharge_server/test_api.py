"""Tests for recharge_server.api through the real Twisted HTTP stack on an ephemeral loopback port.

The recharge core is a stub here (these tests are about HTTP: the gate every
request passes, the error bodies, staying up); the nonce store is the real
one, on SQLite (the replay test also on PostgreSQL).  ``test_service`` runs
the real core.
"""

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from cardmgmt.channel_clients import ClientEntry
from cardmgmt.db import Database
from cardmgmt.errors import InvalidInput, SchemaError
from ivr import protocol
from ivr.client import RechargeClient
from testkit.live_api import (
    COMMIT,
    TLS,
    LiveAPI,
    StubRecharge,
    assert_error,
    other_client_key,
    post,
    send,
    serve_api,
    signed,
)

PIN = "918273645546372819"
QUOTE = {"call_id": "1700000000.43", "seq": 1, "account_no": "3100000001", "pin": PIN, "caller": ""}


def still_serving(live: LiveAPI, key: bytes) -> None:
    status, answer = post(live, key, "/v1/commit", COMMIT)
    assert status == 200 and answer["outcome"] == "ok"


@pytest.fixture
def live(live_reactor: Any, sqlite_db: Database, api_key: bytes) -> Any:
    with serve_api(live_reactor, sqlite_db, StubRecharge(), api_key) as api:
        yield api


def test_a_good_request_gets_the_answer(live: LiveAPI, api_key: bytes) -> None:
    status, answer = post(live, api_key, "/v1/commit", COMMIT)
    assert status == 200
    assert answer == {"outcome": "ok", "recharge_ref": "26112300000001", "amount": 5000, "account_no": "3100000001", "serial_tail": "0001"}
    assert live.recharge.calls == [("commit", {"call_id": "1700000000.42", "seq": 1})]


def test_each_endpoint_reaches_its_service_call(live: LiveAPI, api_key: bytes) -> None:
    client = RechargeClient([live.address], api_key, tls=TLS)
    assert client.account(call_id="c1", account_no="3100000001")["holder"] == "张*明"
    assert client.quote(call_id="c1", seq=1, account_no="3100000001", pin="1" * 18, caller="")["outcome"] == "ok"
    assert client.cancel(call_id="c1", seq=1)["outcome"] == "ok"
    assert [name for name, _ in live.recharge.calls] == ["account", "quote", "cancel"]
    assert live.recharge.calls[1][1] == {"call_id": "c1", "seq": 1, "account_no": "3100000001", "pin": "1" * 18, "caller": "",
                                         "channel": "hotline", "client": "hotline"}


def test_bad_json_is_a_400_and_the_server_keeps_serving(live: LiveAPI, api_key: bytes) -> None:
    for raw in (b"{not json", b"\xff\xfe", b"[" * 3000):
        body, headers = signed(api_key, "/v1/commit", None, raw=raw)
        status, answer, _ = send(live.port, "POST", "/v1/commit", body, headers)
        assert_error(status, answer, 400, "bad_request")
    still_serving(live, api_key)
    assert live.recharge.calls == [("commit", COMMIT)]


@pytest.mark.parametrize(
    "payload,words",
    [
        (COMMIT | {"extra": 1}, "unknown field 'extra'"),
        ({"call_id": "1700000000.42"}, "missing field 'seq'"),
        (COMMIT | {"seq": "1"}, "'seq' must be a whole number"),
        (COMMIT | {"seq": True}, "'seq' must be a whole number"),
        (COMMIT | {"call_id": 17}, "'call_id' must be a string"),
        ([COMMIT], "JSON object"),
    ],
)
def test_malformed_requests_are_refused_in_one_line(live: LiveAPI, api_key: bytes, payload: Any, words: str) -> None:
    body, headers = signed(api_key, "/v1/commit", payload)
    status, raw, _ = send(live.port, "POST", "/v1/commit", body, headers)
    assert words in assert_error(status, raw, 400, "bad_request")["message"]
    assert live.recharge.calls == []
    still_serving(live, api_key)


def test_a_wrong_key_is_refused(live: LiveAPI, api_key: bytes) -> None:
    body, headers = signed(b"x" * 32, "/v1/commit", COMMIT)
    status, raw, _ = send(live.port, "POST", "/v1/commit", body, headers)
    assert_error(status, raw, 401, "bad_signature")
    still_serving(live, api_key)


def test_a_tampered_body_or_path_is_refused(live: LiveAPI, api_key: bytes) -> None:
    body, headers = signed(api_key, "/v1/commit", COMMIT)
    status, raw, _ = send(live.port, "POST", "/v1/commit", body.replace(b"1}", b"2}"), headers)
    assert_error(status, raw, 401, "bad_signature")
    status, raw, _ = send(live.port, "POST", "/v1/cancel", body, headers)
    assert_error(status, raw, 401, "bad_signature")
    assert live.recharge.calls == []


def test_missing_signature_headers_are_refused(live: LiveAPI, api_key: bytes) -> None:
    status, raw, _ = send(live.port, "POST", "/v1/commit", json.dumps(COMMIT).encode(), {"Content-Type": "application/json"})
    assert_error(status, raw, 401, "missing_headers")


def test_a_stale_request_is_refused(live: LiveAPI, api_key: bytes) -> None:
    body, headers = signed(api_key, "/v1/commit", COMMIT, now=time.time() - 120)
    status, raw, _ = send(live.port, "POST", "/v1/commit", body, headers)
    assert_error(status, raw, 401, "stale_request")


def test_a_replayed_request_is_refused_on_either_server(live_reactor: Any, db: Database, api_key: bytes) -> None:
    with serve_api(live_reactor, db, StubRecharge(), api_key, name="A") as a, serve_api(
        live_reactor, db, StubRecharge(), api_key, name="B"
    ) as b:
        body, headers = signed(api_key, "/v1/commit", COMMIT)
        assert send(a.port, "POST", "/v1/commit", body, headers)[0] == 200
        for server in (a, b):
            status, raw, _ = send(server.port, "POST", "/v1/commit", body, headers)
            assert_error(status, raw, 409, "replay")
        assert len(a.recharge.calls) == 1 and b.recharge.calls == []
        still_serving(b, api_key)


def test_an_oversized_body_is_a_413(live: LiveAPI, api_key: bytes) -> None:
    big = json.dumps(COMMIT | {"pad": "x" * protocol.MAX_BODY}).encode()
    body, headers = signed(api_key, "/v1/commit", None, raw=big)
    status, raw, _ = send(live.port, "POST", "/v1/commit", body, headers)
    assert_error(status, raw, 413, "too_large")
    still_serving(live, api_key)


def test_an_oversized_chunked_body_is_a_413(live: LiveAPI, api_key: bytes) -> None:
    big = b"x" * (protocol.MAX_BODY + 1)
    headers = protocol.sign(api_key, "POST", "/v1/commit", big, time.time(), client="hotline")
    conn = http.client.HTTPSConnection("127.0.0.1", live.port, timeout=5, context=TLS)
    try:
        conn.request("POST", "/v1/commit", body=iter([big[:1000], big[1000:]]), headers=headers, encode_chunked=True)
        response = conn.getresponse()
        assert_error(response.status, response.read(), 413, "too_large")
    finally:
        conn.close()
    still_serving(live, api_key)


def test_unknown_paths_and_methods(live: LiveAPI, api_key: bytes) -> None:
    status, raw, _ = send(live.port, "GET", "/v1/nothing")
    assert_error(status, raw, 404, "not_found")
    status, raw, headers = send(live.port, "GET", "/v1/commit")
    assert_error(status, raw, 405, "method_not_allowed")
    assert headers["allow"] == "POST"
    status, raw, _ = send(live.port, "POST", "/v1/health", b"{}")
    assert_error(status, raw, 405, "method_not_allowed")


def test_invalid_input_from_the_core_is_a_400_with_its_code(live_reactor: Any, sqlite_db: Database, api_key: bytes) -> None:
    stub = StubRecharge(raise_=InvalidInput("seq must be a whole number from 1 to 99"))
    with serve_api(live_reactor, sqlite_db, stub, api_key) as live:
        status, answer = post(live, api_key, "/v1/commit", COMMIT)
    assert status == 400 and answer == {"error": "invalid_input", "message": "seq must be a whole number from 1 to 99"}


def test_an_unexpected_exception_is_a_500_in_one_line_and_is_logged(
    live_reactor: Any, sqlite_db: Database, api_key: bytes
) -> None:
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    stub = StubRecharge(raise_=KeyError("secret detail"))
    try:
        with serve_api(live_reactor, sqlite_db, stub, api_key) as live:
            body, headers = signed(api_key, "/v1/commit", COMMIT)
            status, raw, _ = send(live.port, "POST", "/v1/commit", body, headers)
            body_ = assert_error(status, raw, 500, "internal_error")
            assert "secret" not in body_["message"]
            stub.raise_ = None
            still_serving(live, api_key)
    finally:
        globalLogPublisher.removeObserver(events.append)
    failures = [e for e in events if e.get("log_failure") is not None]
    assert failures and failures[0]["call_id"] == "1700000000.42"


def test_a_database_outage_is_a_503(live_reactor: Any, sqlite_db: Database, api_key: bytes) -> None:
    stub = StubRecharge(raise_=SchemaError("database schema is at nothing"))
    with serve_api(live_reactor, sqlite_db, stub, api_key) as live:
        status, answer = post(live, api_key, "/v1/commit", COMMIT)
    assert status == 503 and answer == {"outcome": "service_unavailable"}


def test_a_request_that_takes_too_long_is_a_503_and_the_server_keeps_serving(
    live_reactor: Any, sqlite_db: Database, api_key: bytes
) -> None:
    stub = StubRecharge(gate=threading.Event())
    with serve_api(live_reactor, sqlite_db, stub, api_key, request_timeout=0.2) as live:
        started = time.monotonic()
        status, answer = post(live, api_key, "/v1/commit", COMMIT)
        assert status == 503 and answer == {"outcome": "service_unavailable"}
        assert time.monotonic() - started < 1.0
        assert stub.gate is not None
        stub.gate.set()
        still_serving(live, api_key)


def test_a_client_that_hangs_up_early_does_not_upset_the_server(live_reactor: Any, sqlite_db: Database, api_key: bytes) -> None:
    stub = StubRecharge(gate=threading.Event())
    with serve_api(live_reactor, sqlite_db, stub, api_key) as live:
        body, headers = signed(api_key, "/v1/commit", COMMIT)
        conn = http.client.HTTPSConnection("127.0.0.1", live.port, timeout=5, context=TLS)
        conn.request("POST", "/v1/commit", body=body, headers=headers)
        deadline = time.monotonic() + 5
        while not stub.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        conn.close()  # gone before the answer
        assert stub.gate is not None
        stub.gate.set()
        stub.gate = None
        still_serving(live, api_key)


def test_health_says_who_and_what(live_reactor: Any, sqlite_db: Database, api_key: bytes) -> None:
    from functools import partial

    from recharge_server.service import _ping

    status_ = {"role": "leader", "lease_token": 7, "peer": {"url": "https://127.0.0.1:8442/v1/health"}}
    with serve_api(live_reactor, sqlite_db, StubRecharge(), api_key, name="A", status=lambda: status_,
                   db_ping=partial(_ping, sqlite_db), ops=True) as live:
        status, raw, headers = send(live.port, "GET", "/v1/health")
    assert status == 200 and headers["content-type"].startswith("application/json")
    health = json.loads(raw)
    assert health["name"] == "A" and health["role"] == "leader" and health["db"] == "ok" and health["lease_token"] == 7
    assert health["peer"]["url"].startswith("https://") and health["time"].endswith("+00:00")


def test_the_public_health_says_who_and_whether_and_no_more(live_reactor: Any, sqlite_db: Database, api_key: bytes) -> None:
    """No lease token, no peer address for anyone on the network; and no metrics page at all."""
    status_ = {"role": "leader", "lease_token": 7, "peer": {"url": "https://127.0.0.1:8442/v1/health"}}
    with serve_api(live_reactor, sqlite_db, StubRecharge(), api_key, name="A", status=lambda: status_) as live:
        health = json.loads(send(live.port, "GET", "/v1/health")[1])
        metrics = send(live.port, "GET", "/metrics")
    assert set(health) == {"name", "role", "db", "time"} and health["role"] == "leader"
    assert_error(metrics[0], metrics[1], 404, "not_found")


def test_the_ops_listener_serves_no_signed_endpoint(live_reactor: Any, sqlite_db: Database, api_key: bytes) -> None:
    with serve_api(live_reactor, sqlite_db, StubRecharge(), api_key, ops=True) as ops:
        status, raw = post(ops, api_key, "/v1/commit", COMMIT)
    assert status == 404 and raw["error"] == "not_found"
    assert ops.recharge.calls == []


def test_health_reports_a_database_that_does_not_answer(live_reactor: Any, sqlite_db: Database, api_key: bytes) -> None:
    def down() -> None:
        raise ConnectionError("no")

    with serve_api(live_reactor, sqlite_db, StubRecharge(), api_key, db_ping=down) as live:
        health = json.loads(send(live.port, "GET", "/v1/health")[1])
    assert health["db"] == "down" and health["role"] == "standby"


def test_metrics_count_requests_by_endpoint_and_outcome(live_reactor: Any, sqlite_db: Database, api_key: bytes) -> None:
    from recharge_server.metrics import Metrics

    shared = Metrics()  # as the server gives its API and its ops listener one
    with serve_api(live_reactor, sqlite_db, StubRecharge(), api_key, metrics=shared) as live, \
            serve_api(live_reactor, sqlite_db, StubRecharge(), api_key, metrics=shared, ops=True,
                      backlog=lambda: {"pending": 3, "rejected": 0}) as ops:
        post(live, api_key, "/v1/commit", COMMIT)
        send(live.port, "POST", "/v1/commit", b"{}")
        status, raw, headers = send(ops.port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    text = raw.decode()
    assert 'recharge_requests_total{endpoint="commit",outcome="ok"} 1' in text
    assert 'recharge_requests_total{endpoint="commit",outcome="missing_headers"} 1' in text
    assert 'recharge_request_duration_seconds_count{endpoint="commit"} 2' in text
    assert 'recharge_outbox_backlog{kind="pending"} 3' in text
    assert "recharge_leader 0" in text


def _events_during(action: Callable[[], None]) -> list[dict[str, Any]]:
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        action()
    finally:
        globalLogPublisher.removeObserver(events.append)
    return [e for e in events if e.get("log_namespace") == "recharge_server.api"]


def test_bytes_that_are_not_ascii_in_a_header_are_a_400_logged_in_one_line(live: LiveAPI, api_key: bytes) -> None:
    body, headers = signed(api_key, "/v1/commit", COMMIT)
    raw = (
        b"POST /v1/commit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Nonce: \xff\xfe\r\n"
        + f"X-Timestamp: {headers['X-Timestamp']}\r\nX-Signature: {headers['X-Signature']}\r\n".encode()
        + f"{protocol.CLIENT_HEADER}: hotline\r\n".encode()
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
    )
    answers: list[bytes] = []

    def send_raw() -> None:
        with socket.create_connection(("127.0.0.1", live.port), timeout=5) as plain:
            with TLS.wrap_socket(plain, server_hostname="127.0.0.1") as s:
                s.sendall(raw)
                answers.append(b"".join(iter(lambda: s.recv(4096), b"")))

    events = _events_during(send_raw)
    head, _, answer = answers[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert json.loads(answer) == {"error": "bad_request", "message": "header X-Nonce is not ASCII"}
    assert not [e for e in events if e.get("log_failure") is not None], "no traceback"
    assert len(events) == 1, events
    still_serving(live, api_key)


def test_a_refusal_is_one_log_line(live: LiveAPI, api_key: bytes) -> None:
    events = _events_during(lambda: send(live.port, "POST", "/v1/commit", json.dumps(COMMIT).encode()))
    assert len(events) == 1 and events[0]["status"] == 401, events


def test_refusal_lines_are_rate_limited_and_say_how_many_were_dropped() -> None:
    from twisted.internet.task import Clock

    from recharge_server.api import _LogBudget

    clock = Clock()
    budget = _LogBudget(clock, per_second=3)
    assert [budget.take() for _ in range(5)] == [0, 0, 0, None, None]
    clock.advance(1)
    assert budget.take() == 2, "the next line says two were not written"
    assert budget.take() == 0


# --- channel clients --------------------------------------------------------------------------


def test_a_request_signed_with_another_clients_key_is_refused(live: LiveAPI, api_key: bytes) -> None:
    assert live.clients is not None
    live.clients.entries["pos-1"] = ClientEntry("pos-1", "pos", False)
    pos_key = other_client_key(api_key, "pos-1")
    # pos-1's key, claiming to be the hotline; the hotline's key, claiming to be pos-1: both refused.
    for key, client in ((pos_key, "hotline"), (api_key, "pos-1")):
        body, headers = signed(key, "/v1/commit", COMMIT, client=client)
        status, raw, _ = send(live.port, "POST", "/v1/commit", body, headers)
        assert_error(status, raw, 401, "bad_signature")
    body, headers = signed(pos_key, "/v1/quote", QUOTE, client="pos-1")
    status, raw, _ = send(live.port, "POST", "/v1/quote", body, headers)
    assert status == 200, raw
    assert live.recharge.calls == [("quote", {**QUOTE, "channel": "pos", "client": "pos-1"})]


def test_a_request_naming_no_client_is_refused(live: LiveAPI, api_key: bytes) -> None:
    body, headers = signed(api_key, "/v1/commit", COMMIT)
    del headers[protocol.CLIENT_HEADER]
    status, raw, _ = send(live.port, "POST", "/v1/commit", body, headers)
    assert_error(status, raw, 401, "missing_headers")


def test_an_unregistered_client_is_refused_even_with_its_derived_key(live: LiveAPI, api_key: bytes) -> None:
    body, headers = signed(other_client_key(api_key, "ghost"), "/v1/commit", COMMIT, client="ghost")
    status, raw, _ = send(live.port, "POST", "/v1/commit", body, headers)
    assert_error(status, raw, 401, "unknown_client")
    assert live.recharge.calls == []


def test_a_revoked_client_is_refused_with_403_and_logged_once(
    live: LiveAPI, api_key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recharge_server import api as server_api

    lines: list[str] = []
    monkeypatch.setattr(server_api.log, "warn", lambda fmt, **kw: lines.append(fmt.format(**kw)))
    assert live.clients is not None
    live.clients.entries["hotline"] = ClientEntry("hotline", "hotline", True)
    for _ in range(5):
        body, headers = signed(api_key, "/v1/quote", QUOTE)
        status, raw, _ = send(live.port, "POST", "/v1/quote", body, headers)
        assert_error(status, raw, 403, "client_revoked")
    assert live.recharge.calls == []
    assert len(lines) == 1 and "client_revoked" in lines[0] and "hotline" in lines[0]
    assert all(PIN not in line and api_key.hex() not in line for line in lines)


def _wait_for_calls(stub: StubRecharge, n: int) -> None:
    deadline = time.monotonic() + 5
    while len(stub.calls) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(stub.calls) >= n


def test_work_beyond_the_bound_is_refused_at_once_with_retry_after(
    live_reactor: Any, sqlite_db: Database, api_key: bytes
) -> None:
    stub = StubRecharge(gate=threading.Event())
    with serve_api(live_reactor, sqlite_db, stub, api_key, max_in_flight=1) as live:
        first: list[tuple[int, dict[str, Any]]] = []
        waiting = threading.Thread(target=lambda: first.append(post(live, api_key, "/v1/commit", COMMIT)))
        waiting.start()
        _wait_for_calls(stub, 1)  # the one request allowed is in the pool
        started = time.monotonic()
        body, headers = signed(api_key, "/v1/quote", QUOTE)
        status, raw, answer_headers = send(live.port, "POST", "/v1/quote", body, headers)
        assert time.monotonic() - started < 0.5, "refused at once, not queued"
        assert status == 503 and answer_headers["retry-after"] == "1"
        assert json.loads(raw) == {"outcome": "service_unavailable", "error": "busy", "message": json.loads(raw)["message"]}
        assert [name for name, _ in stub.calls] == ["commit"], "the refused request reached nothing"
        assert stub.gate is not None
        stub.gate.set()
        waiting.join(5)
        assert first and first[0][0] == 200, "the admitted request completes"
        stub.gate = None
        still_serving(live, api_key)  # the bound was given back
        assert live.api.in_flight.count == 0


def test_a_request_queued_past_shed_after_is_refused_busy_unseen(
    live_reactor: Any, sqlite_db: Database, api_key: bytes
) -> None:
    stub = StubRecharge(gate=threading.Event())
    with serve_api(live_reactor, sqlite_db, stub, api_key, threads=1, shed_after=0.1) as live:
        answers: list[tuple[int, dict[str, Any]]] = []
        threads = [threading.Thread(target=lambda: answers.append(post(live, api_key, "/v1/commit", COMMIT)))
                   for _ in range(2)]
        threads[0].start()
        _wait_for_calls(stub, 1)
        threads[1].start()
        time.sleep(0.3)  # the second waits behind the first, past shed_after
        assert stub.gate is not None
        stub.gate.set()
        for t in threads:
            t.join(5)
        assert sorted(status for status, _ in answers) == [200, 503]
        assert [a for s, a in answers if s == 503][0]["error"] == "busy"
        assert len(stub.calls) == 1, "the shed request never reached the recharge core"
        assert live.api.in_flight.count == 0
