"""The sales-point API (``POST /v1/sales``) through the real Twisted HTTP stack over TLS, with the real sale.

A POS terminal, a channel client of channel ``pos`` bound to hall H01, sells
H01's issued cards: one card, a box, a range.  The card database is real:
each test runs on SQLite and on PostgreSQL, the races (200 terminals'
requests at once) on PostgreSQL only.  The servers are ``RechargeAPI``
listeners on loopback ports (``testkit.pos.serve_sales``); the last test
goes through a server built by ``makeService``.
"""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from cardmgmt import channel_clients, context, operator_requests, operators, sales
from cardmgmt.context import Actor, Context, Permission, Role
from cardmgmt.errors import InvalidInput
from cardmgmt.models import Card, ChannelClient, LogEntry, Operator, Sale
from ivr import protocol
from marketing_iface.null import NullMarketing
from recharge_server.sales_point import KEY, PATH, SalesPointClient
from recharge_server.service import makeService
from testkit.lifecycle import issued_batch
from testkit.live_api import TLS, assert_error, send
from testkit.ports import free_tcp_port
from testkit.pos import revoke, sell, serve_sales, signed_sale, terminal

PG_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def shop(bench: Any) -> Any:
    """Batch B1 (40 cards of 50 yuan, boxes of 10) issued to H01; hall H02; terminals pos-h01 and pos-h02."""
    serials = sorted(issued_batch(bench, "B1", 40))
    bench.add_hall("H02")
    keys = {name: terminal(bench, name, hall) for name, hall in (("pos-h01", "H01"), ("pos-h02", "H02"))}
    return bench, serials, keys


@pytest.fixture
def live(shop: Any, live_reactor: Any) -> Any:
    with serve_sales(live_reactor, shop[0]) as served:
        yield served


def snapshot(bench: Any) -> tuple[dict[str, int], list[tuple[Any, ...]]]:
    """Card states and every sale row: what a refused sale must leave as it found."""
    with bench.system.db.transaction() as s:
        rows = s.execute(select(Sale.id, Sale.quantity, Sale.amount, Sale.seller, Sale.key).order_by(Sale.id)).all()
    return bench.states("B1"), [tuple(r) for r in rows]


def test_a_terminal_sells_one_card_a_box_and_a_range_of_its_hall(shop: Any, live: Any) -> None:
    bench, serials, keys = shop
    key = keys["pos-h01"]
    status, one = sell(live.port, key, "pos-h01", {"key": "t1-0001", "serial": serials[0]})
    assert status == 200, one
    assert one == {"outcome": "ok", "sale": one["sale"], "hall": "H01", "cards": 1, "first_serial": serials[0],
                   "last_serial": serials[0], "amount": 5000, "day": one["day"], "repeated": False}
    status, box = sell(live.port, key, "pos-h01", {"key": "t1-0002", "batch": "B1", "box": 2})
    assert status == 200 and (box["cards"], box["first_serial"], box["last_serial"]) == (10, serials[10], serials[19])
    assert box["amount"] == 50_000
    status, run = sell(live.port, key, "pos-h01", {"key": "t1-0003", "first_serial": serials[1], "last_serial": serials[5]})
    assert status == 200 and (run["cards"], run["amount"]) == (5, 25_000)
    assert bench.states("B1") == {"issued": 24, "sold": 16}
    with bench.system.db.transaction() as s:
        rows = s.execute(select(Sale.channel, Sale.seller, Sale.key).order_by(Sale.id)).all()
        actors = s.scalars(select(LogEntry.operator).where(LogEntry.action == "card.sell")).all()
    assert rows == [("pos", "pos-h01", f"t1-000{i}") for i in (1, 2, 3)]
    assert actors == ["pos-h01"] * 3


def test_a_repeat_of_a_key_answers_the_first_sale_on_either_server(shop: Any, live: Any, live_reactor: Any) -> None:
    bench, serials, keys = shop
    payload = {"key": "t1-0042", "batch": "B1", "box": 3}
    status, first = sell(live.port, keys["pos-h01"], "pos-h01", payload)
    assert status == 200 and first["repeated"] is False
    with serve_sales(live_reactor, bench, name="B") as other:
        for port in (live.port, other.port):
            status, again = sell(port, keys["pos-h01"], "pos-h01", payload)
            assert status == 200 and again == first | {"repeated": True}
    # The same key for other cards is another sale under a used key: refused, nothing changed.
    before = snapshot(bench)
    status, raw, _ = send(live.port, "POST", PATH, *signed_sale(keys["pos-h01"], "pos-h01", payload | {"box": 4}))
    assert "already used" in assert_error(status, raw, 409, "conflict")["message"]
    assert snapshot(bench) == before and before[0] == {"issued": 30, "sold": 10}


def test_another_terminals_key_is_not_its_sale(shop: Any, live: Any) -> None:
    bench, serials, keys = shop
    assert sell(live.port, keys["pos-h01"], "pos-h01", {"key": "shared-1", "serial": serials[0]})[0] == 200
    key_h01b = terminal(bench, "pos-h01-b", "H01")
    live.refresh()
    before = snapshot(bench)
    status, raw, _ = send(live.port, "POST", PATH, *signed_sale(key_h01b, "pos-h01-b", {"key": "shared-1", "serial": serials[0]}))
    assert_error(status, raw, 409, "conflict")
    assert snapshot(bench) == before


def test_a_terminal_cannot_sell_another_halls_cards(shop: Any, live: Any) -> None:
    bench, serials, keys = shop
    before = snapshot(bench)
    for payload in ({"key": "t2-1", "serial": serials[0]}, {"key": "t2-2", "batch": "B1", "box": 1},
                    {"key": "t2-3", "first_serial": serials[0], "last_serial": serials[39]}):
        status, raw, _ = send(live.port, "POST", PATH, *signed_sale(keys["pos-h02"], "pos-h02", payload))
        body = assert_error(status, raw, 403, "permission_denied")
        assert "another hall" in body["message"]
    assert snapshot(bench) == before


@pytest.mark.parametrize(
    ("setup", "pick", "status", "code"),
    [
        ("sold", lambda s: {"serial": s[0]}, 409, "illegal_transition"),
        ("partly sold", lambda s: {"batch": "B1", "box": 1}, 409, "illegal_transition"),
        ("in stock", lambda s: {"batch": "W1", "box": 1}, 409, "illegal_transition"),
        ("none", lambda s: {"batch": "B1", "box": 9}, 404, "not_found"),
        ("none", lambda s: {"batch": "NOPE", "box": 1}, 404, "not_found"),
        ("none", lambda s: {"first_serial": s[5], "last_serial": s[2]}, 400, "invalid_input"),
    ],
)
def test_cards_that_cannot_be_sold_are_refused_and_nothing_changes(
    shop: Any, live: Any, setup: str, pick: Any, status: int, code: str
) -> None:
    bench, serials, keys = shop
    if setup in ("sold", "partly sold"):
        assert sell(live.port, keys["pos-h01"], "pos-h01", {"key": "first", "serial": serials[0]})[0] == 200
    if setup == "in stock":
        bench.stocked_batch("W1", 10)
    before = (snapshot(bench), bench.states("W1") if setup == "in stock" else None)
    got, raw, _ = send(live.port, "POST", PATH, *signed_sale(keys["pos-h01"], "pos-h01", {"key": "second", **pick(serials)}))
    assert_error(got, raw, status, code)
    assert (snapshot(bench), bench.states("W1") if setup == "in stock" else None) == before


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"serial": "000000000018"}, "missing field 'key'"),
        ({"key": "k", "serial": "000000000018", "extra": 1}, "unknown field 'extra'"),
        ({"key": "k"}, "names its cards by"),
        ({"key": "k", "serial": "000000000018", "batch": "B1", "box": 1}, "names its cards by"),
        ({"key": "k", "first_serial": "000000000018"}, "names its cards by"),
        ({"key": "k", "batch": "B1"}, "names its cards by"),
        ({"key": "k", "serial": "18"}, "'serial' must be"),
        ({"key": "k", "batch": "B1", "box": 0}, "'box' must be from 1"),
        ({"key": "k", "batch": "B1", "box": "1"}, "'box' must be a whole number"),
        ({"key": "k" * 81, "serial": "000000000018"}, "'key' must be at most 80"),
        ({"key": "a key", "serial": "000000000018"}, "'key' must be"),
        ({"key": 7, "serial": "000000000018"}, "'key' must be a string"),
        ([{"key": "k"}], "JSON object"),
    ],
)
def test_a_malformed_sale_is_a_400_in_one_line(shop: Any, live: Any, payload: Any, words: str) -> None:
    bench, _, keys = shop
    before = snapshot(bench)
    status, raw, _ = send(live.port, "POST", PATH, *signed_sale(keys["pos-h01"], "pos-h01", payload))
    assert words in assert_error(status, raw, 400, "bad_request")["message"]
    status, raw, _ = send(live.port, "POST", PATH, *signed_sale(keys["pos-h01"], "pos-h01", None, raw=b"{not json"))
    assert_error(status, raw, 400, "bad_request")
    assert snapshot(bench) == before


def test_unsigned_forged_and_stale_sales_are_refused(shop: Any, live: Any) -> None:
    bench, serials, keys = shop
    before = snapshot(bench)
    payload = {"key": "t3-1", "serial": serials[0]}
    status, raw, _ = send(live.port, "POST", PATH, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    assert_error(status, raw, 401, "missing_headers")
    # Signed with pos-h02's key but naming pos-h01; and pos-h01's request with its body altered.
    status, raw, _ = send(live.port, "POST", PATH, *signed_sale(keys["pos-h02"], "pos-h01", payload))
    assert_error(status, raw, 401, "bad_signature")
    body, headers = signed_sale(keys["pos-h01"], "pos-h01", payload)
    status, raw, _ = send(live.port, "POST", PATH, body.replace(serials[0].encode(), serials[1].encode()), headers)
    assert_error(status, raw, 401, "bad_signature")
    stale = protocol.sign(keys["pos-h01"], "POST", PATH, body, time.time() - 120, client="pos-h01")
    status, raw, _ = send(live.port, "POST", PATH, body, stale)
    assert_error(status, raw, 401, "stale_request")
    assert snapshot(bench) == before
    # A signed request is accepted once, on either server.
    assert send(live.port, "POST", PATH, body, headers)[0] == 200
    status, raw, _ = send(live.port, "POST", PATH, body, headers)
    assert_error(status, raw, 409, "replay")


def test_only_a_registered_unrevoked_pos_terminal_with_a_hall_sells(shop: Any, live: Any) -> None:
    bench, serials, keys = shop
    keyring = bench.system.keys()
    hotline = keyring.channel_client_key(channel_clients.HOTLINE)
    partner = terminal(bench, "partner-x", None, channel="partner")
    hall_less = terminal(bench, "pos-old", None)
    revoke(bench, "pos-h02")
    live.refresh()
    before = snapshot(bench)
    cases = [
        (hotline, "hotline", 403, "permission_denied"),
        (partner, "partner-x", 403, "permission_denied"),
        (hall_less, "pos-old", 403, "permission_denied"),
        (keys["pos-h02"], "pos-h02", 403, "client_revoked"),
        (keyring.channel_client_key("pos-ghost"), "pos-ghost", 401, "unknown_client"),
    ]
    for key, name, status, code in cases:
        got, raw, _ = send(live.port, "POST", PATH, *signed_sale(key, name, {"key": f"k-{name}", "serial": serials[0]}))
        assert_error(got, raw, status, code)
    assert snapshot(bench) == before


def test_a_revocation_the_server_has_not_reloaded_yet_still_refuses_the_sale(shop: Any, live: Any) -> None:
    """The sale reads the terminal's row again in its own transaction: no window after a revocation."""
    bench, serials, keys = shop
    revoke(bench, "pos-h01")  # the server's copy of the client table still has it unrevoked
    before = snapshot(bench)
    status, raw, _ = send(live.port, "POST", PATH, *signed_sale(keys["pos-h01"], "pos-h01", {"key": "late", "serial": serials[0]}))
    assert_error(status, raw, 403, "client_revoked")
    assert snapshot(bench) == before


def test_a_terminal_is_bound_to_a_real_hall_and_no_operator_gets_its_role(bench: Any) -> None:
    bench.add_hall("H01")
    with pytest.raises(InvalidInput, match="only a pos client"), bench.unit(Permission.MANAGE_CLIENTS) as ctx:
        channel_clients.add(ctx, "hot-2", "hotline", hall="H01")
    with pytest.raises(Exception, match="does not exist"), bench.unit(Permission.MANAGE_CLIENTS) as ctx:
        channel_clients.add(ctx, "pos-x", "pos", hall="H99")
    terminal(bench, "pos-h01", "H01")
    with bench.system.db.transaction() as s:
        assert [(r["name"], r["hall"]) for r in channel_clients.listing(s)] == [("hotline", None), ("pos-h01", "H01")]
    for attempt in (
        lambda ctx: operators.create(ctx.session, "till", Role.TERMINAL, "a long password"),
        lambda ctx: operator_requests.file_add(ctx, "till", Role.TERMINAL, "needs it"),
        lambda ctx: operator_requests.file_role(ctx, "bob", Role.TERMINAL, "needs it"),
        lambda ctx: operators.parse_role("terminal"),
    ):
        with pytest.raises(InvalidInput, match="terminal"), bench.unit(Permission.MANAGE_OPERATORS) as ctx:
            attempt(ctx)
    # Nor behind the services' back: the database holds operators to the operators' roles.
    with pytest.raises(Exception, match="ck_operators_role|CHECK constraint"), bench.system.db.transaction() as s:
        s.add(Operator(name="till", role="terminal", password_hash="!"))
        s.flush()
    # The terminal's role sells and does nothing else.
    assert context.PERMISSIONS[Role.TERMINAL] == {Permission.SELL_CARDS}
    with bench.system.db.transaction() as s:
        ctx = Context(s, bench.system.keys(), Actor("pos-h01", Role.TERMINAL))
        for permission in set(Permission) - {Permission.SELL_CARDS}:
            with pytest.raises(Exception, match="may not"):
                ctx.require(permission)


def test_the_sale_key_limit_is_the_tables(bench: Any) -> None:
    assert KEY.max_length == sales.KEY_MAX


def test_cli_client_sell_sells_as_the_terminal(shop: Any, live: Any, tmp_path: Any) -> None:
    from cardmgmt.channel_clients import write_key_file
    from testkit.commandline import invoke
    from testkit.live_api import tls_test_certificates

    bench, serials, keys = shop
    key_file = tmp_path / "pos-h01.key"
    write_key_file(key_file, keys["pos-h01"])
    settings = bench.system.settings
    base = ["--db", settings.database_url, "--key-dir", settings.key_dir, "client", "sell", "pos-h01",
            "--key-file", key_file, "--server", f"https://127.0.0.1:{live.port}",
            "--ca", tls_test_certificates() / "tls-ca.pem"]
    done = invoke(*base, "--sale-key", "R-1", "--batch", "B1", "--box", "1")
    assert done.exit_code == 0, done.output
    assert f"sold: sale {done.output.split()[2]}" in done.output and "10 cards" in done.output
    again = invoke(*base, "--sale-key", "R-1", "--batch", "B1", "--box", "1", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["repeated"] is True
    refused = invoke(*base, "--sale-key", "R-2", "--serial", serials[0])
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1 and "illegal_transition" in refused.stderr
    assert bench.states("B1") == {"issued": 30, "sold": 10}
    help_text = invoke("client", "sell", "--help")
    assert "Example: cli.py client sell" in help_text.output


# --- races, on PostgreSQL ---------------------------------------------------------------------


def _at_once(jobs: list[Any], workers: int = 200) -> list[Any]:
    """Run every job in a thread of its own, all released together."""
    start = threading.Barrier(len(jobs))

    def run(job: Any) -> Any:
        start.wait()
        return job()

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, jobs))


def _client(live: Any, keys: dict[str, bytes], name: str = "pos-h01") -> SalesPointClient:
    return SalesPointClient([("127.0.0.1", live.port)], keys[name], client=name, tls=TLS, timeout=60.0, rounds=5)


@PG_ONLY
def test_two_hundred_terminal_requests_for_overlapping_cards_sell_each_card_once(shop: Any, live: Any) -> None:
    bench, serials, keys = shop
    client = _client(live, keys)
    jobs = []
    for i in range(200):
        first, last = serials[i % 38], serials[i % 38 + (i % 3)]
        jobs.append(lambda i=i, a=first, b=last: client.sell(f"race-{i}", first_serial=a, last_serial=b))
    answers = _at_once(jobs)
    # Every request got an answer: a sale, or a refusal because another terminal's sale took a card first.
    assert {status for status, _ in answers} <= {200, 409}, [a for a in answers if a[0] not in (200, 409)][:3]
    assert {a["error"] for status, a in answers if status == 409} <= {"illegal_transition", "conflict"}
    sold_by_answers = sum(a["cards"] for status, a in answers if status == 200)
    with bench.system.db.transaction() as s:
        sold = s.scalar(select(func.count()).select_from(Card).where(Card.state == "sold"))
        in_sales = s.scalar(select(func.coalesce(func.sum(Sale.quantity), 0)))
        owed = s.scalar(select(func.coalesce(func.sum(Sale.amount), 0)))
        per_sale = dict(s.execute(select(Card.sale_id, func.count()).where(Card.state == "sold").group_by(Card.sale_id)).all())
        quantities = dict(s.execute(select(Sale.id, Sale.quantity)).all())
    assert sold > 0 and sold == in_sales == sold_by_answers and owed == sold * 5000
    assert per_sale == quantities
    assert sorted(a["sale"] for status, a in answers if status == 200) == sorted(quantities)


@PG_ONLY
def test_two_hundred_repeats_of_one_key_make_one_sale(shop: Any, live: Any) -> None:
    bench, serials, keys = shop
    client = _client(live, keys)
    answers = _at_once([lambda: client.sell("one-key", batch="B1", box=3)] * 200)
    assert {status for status, _ in answers} == {200}, [a for s, a in answers if s != 200][:3]
    assert len({a["sale"] for _, a in answers}) == 1
    assert sum(not a["repeated"] for _, a in answers) == 1
    assert bench.states("B1") == {"issued": 30, "sold": 10}
    with bench.system.db.transaction() as s:
        assert s.execute(select(Sale.quantity, Sale.seller)).all() == [(10, "pos-h01")]


# --- a real server ------------------------------------------------------------------------------


def test_a_server_made_by_make_service_sells_for_terminals(shop: Any, live_reactor: Any) -> None:
    from twisted.internet.threads import blockingCallFromThread

    bench, serials, keys = shop
    settings = bench.system.settings
    server = makeService(settings, "A", "127.0.0.1", free_tcp_port(), None, live_reactor, marketing=NullMarketing())
    blockingCallFromThread(live_reactor, server.startService)
    try:
        from ivr.client import tls_context

        client = SalesPointClient([("127.0.0.1", server.port)], keys["pos-h01"], client="pos-h01",
                                  tls=tls_context(str(settings.key_dir / "tls-ca.pem")))
        status, answer = client.sell("real-1", batch="B1", box=4)
        assert status == 200 and answer["cards"] == 10 and answer["hall"] == "H01"
        assert client.sell("real-1", batch="B1", box=4) == (200, answer | {"repeated": True})
    finally:
        blockingCallFromThread(live_reactor, server.stopService)
    with bench.system.db.transaction() as s:
        assert s.scalar(select(ChannelClient.hall_id).where(ChannelClient.name == "pos-h01")) is not None
    # The sale's log entries are anchored outside the database, like any operator's: the log verifies.
    from cardmgmt import audit

    with bench.system.db.transaction() as s:
        head = s.scalar(select(func.max(LogEntry.seq)))
        report = audit.verify_installation(s, bench.system.keys(), settings.audit_anchor_file)
    assert report.ok, report.problems
    anchors, _ = audit.read_anchors(settings.audit_anchor_file, bench.system.keys().system_public,
                                    bench.system.keys().fingerprint)
    assert anchors[-1].seq == head
