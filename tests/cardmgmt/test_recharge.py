"""The recharge core against real card databases (both backends) and the stand-in marketing database."""

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from cardmgmt import lockouts, sales, stock
from cardmgmt.context import Permission
from cardmgmt.errors import InvalidInput
from cardmgmt.models import Card, PinFailure, Quote, Recharge
from cardmgmt.recharge import Outcome, Policy, RechargeService
from marketing_iface.sql import SqlMarketing
from marketing_iface.standin import create_standin
from testkit.lifecycle import issued_batch, read_pins, sold_batch

ACCOUNT = "3100000001"  # 张三明 in the stand-in's sample accounts


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def marketing(tmp_path):
    url = f"sqlite:///{tmp_path / 'marketing.db'}"
    create_standin(url)
    m = SqlMarketing(url)
    yield m
    m.close()


@pytest.fixture
def world(bench, marketing):
    pins = sold_batch(bench, "B1", 12)
    clock = Clock()
    service = RechargeService(bench.system.db, marketing, bench.system.keys().pin_key, Policy(hold_seconds=120), clock)
    return bench, service, clock, list(pins.items())


def quote(service, pin, call="c1", seq=1, account=ACCOUNT, caller="13800000001"):
    return service.quote(call_id=call, seq=seq, account_no=account, pin=pin, caller=caller)


def card_state(bench, serial):
    with bench.system.db.transaction() as s:
        return s.execute(select(Card.state).where(Card.serial == serial)).scalar_one()


def test_quote_then_commit(world):
    bench, service, _clock, cards = world
    serial, pin = cards[0]
    q = quote(service, pin)
    assert q.to_dict() == {"outcome": "ok", "account_no": ACCOUNT, "holder": "张*明", "balance": 12850,
                           "amount": 5000, "serial_tail": serial[-4:], "hold_seconds": 120}
    assert quote(service, pin) == q, "a repeated quote gives the same answer"
    c = service.commit(call_id="c1", seq=1)
    assert c.outcome is Outcome.OK and c.data["amount"] == 5000 and len(c.data["recharge_ref"]) == 14
    assert card_state(bench, serial) == "redeemed"
    assert service.commit(call_id="c1", seq=1) == c, "a repeated commit gives the first answer"
    other_server = RechargeService(bench.system.db, service.marketing, service.pin_key, service.policy, service.clock)
    assert other_server.commit(call_id="c1", seq=1) == c, "so does the other server"
    assert quote(service, pin) == c, "a quote repeated after the commit returns the commit"
    with bench.system.db.transaction() as s:
        r = s.execute(select(Recharge)).scalar_one()
        assert (r.account_no, r.amount, r.post_status, r.card_serial) == (ACCOUNT, 5000, "pending", serial)
    again = quote(service, pin, call="c2")
    assert again.outcome is Outcome.CARD_USED


def test_two_cards_in_one_call(world):
    _bench, service, _clock, cards = world
    for seq, (_serial, pin) in enumerate(cards[:2], 1):
        assert quote(service, pin, seq=seq).outcome is Outcome.OK
        assert service.commit(call_id="c1", seq=seq).outcome is Outcome.OK


def test_hold_blocks_other_calls_until_it_lapses(world):
    bench, service, clock, cards = world
    serial, pin = cards[0]
    assert quote(service, pin, call="a").outcome is Outcome.OK
    assert quote(service, pin, call="b").outcome is Outcome.CARD_HELD
    clock.advance(121)
    assert quote(service, pin, call="b").outcome is Outcome.OK
    assert service.commit(call_id="a", seq=1).outcome is Outcome.HOLD_EXPIRED
    assert service.commit(call_id="b", seq=1).outcome is Outcome.OK


def test_expire_holds_job(world):
    bench, service, clock, cards = world
    quote(service, cards[0][1], call="a")
    clock.advance(200)
    assert service.expire_holds() == 1
    with bench.system.db.transaction() as s:
        assert s.get(Quote, "a#1").state == "expired"
    assert quote(service, cards[0][1], call="b").outcome is Outcome.OK


def test_cancel_releases_the_card(world):
    _bench, service, _clock, cards = world
    pin = cards[0][1]
    quote(service, pin, call="a")
    assert service.cancel(call_id="a", seq=1).outcome is Outcome.OK
    assert service.commit(call_id="a", seq=1).outcome is Outcome.NO_QUOTE
    assert quote(service, pin, call="b").outcome is Outcome.OK


def test_commit_without_quote(world):
    assert world[1].commit(call_id="nobody", seq=1).outcome is Outcome.NO_QUOTE


def test_card_states_each_have_an_outcome(world):
    bench, service, _clock, cards = world
    with bench.unit() as ctx:
        stock.void(ctx, stock.Selection.serial(cards[0][0]), "damaged at hall")
        stock.freeze(ctx, stock.Selection.serial(cards[1][0]), "stolen")
    assert quote(service, cards[0][1]).outcome is Outcome.CARD_VOIDED
    assert quote(service, cards[1][1], call="c2").outcome is Outcome.CARD_FROZEN


def test_not_issued_and_expired_cards(bench, marketing):
    bench.stocked_batch("S1", 5)
    in_stock = list(read_pins(bench, "S1").values())
    soon = sold_batch(bench, "E1", 5, expiry=dt.date.today() + dt.timedelta(days=1))
    clock = Clock()
    clock.now = dt.datetime.now(dt.UTC)
    service = RechargeService(bench.system.db, marketing, bench.system.keys().pin_key, clock=clock)
    assert quote(service, in_stock[0]).outcome is Outcome.CARD_NOT_ISSUED
    clock.advance(3 * 86400)
    assert quote(service, next(iter(soon.values())), call="c2").outcome is Outcome.CARD_EXPIRED


def test_unknown_account_and_marketing_down(world):
    bench, service, clock, cards = world
    assert quote(service, cards[0][1], account="9999999999").outcome is Outcome.UNKNOWN_ACCOUNT
    down = SqlMarketing("postgresql://postgres@127.0.0.1:1/nowhere")
    blind = RechargeService(bench.system.db, down, service.pin_key, clock=clock)
    assert quote(blind, cards[0][1]).outcome is Outcome.SERVICE_UNAVAILABLE
    assert blind.account(ACCOUNT).outcome is Outcome.SERVICE_UNAVAILABLE
    down.close()
    with bench.system.db.transaction() as s:
        assert s.execute(select(func.count()).select_from(Card).where(Card.hold_key.is_not(None))).scalar_one() == 0


class CountingMarketing:
    """Counts the account look-ups that reach the marketing system."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.lookups = inner, 0

    def lookup_account(self, account_no):  # type: ignore[no-untyped-def]
        self.lookups += 1
        return self.inner.lookup_account(account_no)


def test_an_account_summary_is_reused_for_the_cache_time(world):
    bench, service, clock, cards = world
    counting = CountingMarketing(service.marketing)
    svc = RechargeService(bench.system.db, counting, service.pin_key, Policy(account_cache_seconds=60), clock)
    assert svc.account(ACCOUNT).outcome is Outcome.OK
    assert quote(svc, cards[0][1]).outcome is Outcome.OK  # the dialog's quote a moment later
    assert counting.lookups == 1
    clock.advance(61)
    assert svc.account(ACCOUNT).outcome is Outcome.OK
    assert counting.lookups == 2
    # An unknown account is asked about every time.
    assert svc.account("3199999999").outcome is Outcome.UNKNOWN_ACCOUNT
    assert svc.account("3199999999").outcome is Outcome.UNKNOWN_ACCOUNT
    assert counting.lookups == 4


def test_commit_works_while_marketing_is_down(world):
    """The commit never needs the marketing system: posting is the outbox's job."""
    bench, service, clock, cards = world
    assert quote(service, cards[0][1]).outcome is Outcome.OK
    service.marketing = SqlMarketing("postgresql://postgres@127.0.0.1:1/nowhere")
    assert service.commit(call_id="c1", seq=1).outcome is Outcome.OK
    service.marketing.close()


def test_a_presented_number_is_locked_out_and_the_owner_is_not(world):
    bench, service, clock, cards = world
    good = cards[0][1]
    for left in (4, 3, 2, 1):
        a = quote(service, "1" * 18, call=f"w{left}")
        assert (a.outcome, a.data["attempts_left"]) == (Outcome.WRONG_PIN, left)
    assert quote(service, "12", call="w0").outcome is Outcome.LOCKED_OUT, "the fifth wrong PIN locks out"
    assert quote(service, good, call="g1").outcome is Outcome.LOCKED_OUT, "the right PIN is not even tested"
    same_number = quote(service, good, call="g1b", caller="+8613800000001")
    assert same_number.outcome is Outcome.LOCKED_OUT, "another spelling of the number is the same number"
    owner = quote(service, good, call="g2", caller="13900000000")
    assert owner.outcome is Outcome.OK, "a stranger's wrong PINs do not lock the account's owner out"
    service.cancel(call_id="g2", seq=1)
    clock.advance(24 * 3600 + 1)
    assert quote(service, cards[1][1], call="g4").outcome is Outcome.OK, "the window passes"


def test_withheld_numbers_share_the_accounts_budget(world):
    _bench, service, _clock, cards = world
    for i in range(4):
        assert quote(service, "1" * 18, call=f"w{i}", caller="").outcome is Outcome.WRONG_PIN
    assert quote(service, "1" * 18, call="w4", caller="").outcome is Outcome.LOCKED_OUT, "the fifth locks out"
    assert quote(service, cards[0][1], call="a1", caller="").outcome is Outcome.LOCKED_OUT
    assert quote(service, cards[0][1], call="a2", caller="", account="3100000002").outcome is Outcome.OK
    assert quote(service, cards[1][1], call="a3", caller="13900000000").outcome is Outcome.OK, "a presented number still gets through"


def test_the_service_wide_guard_stops_testing_pins(bench, marketing):
    cards = list(sold_batch(bench, "B1", 3).items())
    clock = Clock()
    service = RechargeService(bench.system.db, marketing, bench.system.keys().pin_key,
                              Policy(guard_failures=6, guard_minutes=10), clock)
    for i in range(6):  # six strangers, one wrong PIN each: no caller's own budget is spent
        assert quote(service, "1" * 18, call=f"w{i}", caller=f"1390000000{i}").outcome is Outcome.WRONG_PIN
    blocked = quote(service, cards[0][1], call="ok1", caller="13800000009")
    assert blocked.outcome is Outcome.SERVICE_UNAVAILABLE, "past the guard no PIN is tested"
    with bench.system.db.transaction() as s:
        assert s.execute(select(func.count()).select_from(PinFailure)).scalar_one() == 6
    clock.advance(10 * 60 + 1)
    assert quote(service, cards[0][1], call="ok2", caller="13800000009").outcome is Outcome.OK, "the window moves on"


def test_a_correct_pin_of_a_card_not_yet_issued_costs_an_attempt(bench, marketing):
    bench.stocked_batch("B9", 2)
    (serial, pin), _ = read_pins(bench, "B9").items()
    service = RechargeService(bench.system.db, marketing, bench.system.keys().pin_key, Policy(), Clock())
    a = quote(service, pin, call="s1")
    assert (a.outcome, a.data["attempts_left"]) == (Outcome.CARD_NOT_ISSUED, 4)
    with bench.system.db.transaction() as s:
        assert s.execute(select(func.count()).select_from(PinFailure)).scalar_one() == 1
    assert card_state(bench, serial) == "in_stock"


def test_a_card_at_a_hall_is_worth_nothing_until_the_hall_sells_it(bench, marketing):
    """A box taken from a hall: its PINs are refused (and cost attempts) until a sale is recorded."""
    (serial, pin), *_ = sorted(issued_batch(bench, "H9", 10).items())
    service = RechargeService(bench.system.db, marketing, bench.system.keys().pin_key, Policy(), Clock())
    a = quote(service, pin, call="s1")
    assert (a.outcome, a.data["attempts_left"]) == (Outcome.CARD_NOT_SOLD, 4)
    assert card_state(bench, serial) == "issued"
    with bench.unit(Permission.SELL_CARDS) as ctx:
        sales.sell(ctx, "H01", stock.Selection.serial(serial))
    assert quote(service, pin, call="s2").outcome is Outcome.OK
    assert service.commit(call_id="s2", seq=1).outcome is Outcome.OK
    assert card_state(bench, serial) == "redeemed"


def test_administrator_lists_and_clears_lockouts(world):
    bench, service, clock, cards = world
    for i in range(5):
        quote(service, "2" * 18, call=f"w{i}", caller="")
    with bench.unit(Permission.VIEW) as ctx:
        rows = lockouts.active(ctx, service.policy, now=clock.now)
    assert [(r["kind"], r["value"], r["failures"]) for r in rows] == [("account", ACCOUNT, 5)], "anonymous callers are counted by account only"
    with bench.unit() as ctx:
        assert lockouts.clear(ctx, "account", ACCOUNT, "customer called the office") == 5
    assert quote(service, cards[0][1], call="ok").outcome is Outcome.OK
    with bench.system.db.transaction() as s:
        assert s.execute(select(func.count()).select_from(PinFailure).where(PinFailure.cleared_by == "alice")).scalar_one() == 5


@pytest.mark.parametrize(
    "kw",
    [
        dict(call_id="", seq=1, account_no=ACCOUNT, pin="1", caller=""),
        dict(call_id="c1", seq=0, account_no=ACCOUNT, pin="1", caller=""),
        dict(call_id="c1", seq=True, account_no=ACCOUNT, pin="1", caller=""),
        dict(call_id="c1", seq=1, account_no="123", pin="1", caller=""),
        dict(call_id="c1", seq=1, account_no=ACCOUNT, pin=12, caller=""),
        dict(call_id="c1", seq=1, account_no=ACCOUNT, pin="1", caller="abc"),
        dict(call_id="c 1", seq=1, account_no=ACCOUNT, pin="1", caller=""),
    ],
)
def test_malformed_requests(world, kw):
    with pytest.raises(InvalidInput):
        world[1].quote(**kw)


def test_racing_commits_of_one_call_spend_once(world):
    bench, service, clock, cards = world
    quote(service, cards[0][1])
    servers = [RechargeService(bench.system.db, service.marketing, service.pin_key, service.policy, clock) for _ in range(8)]
    answers, barrier = [], threading.Barrier(8)

    def go(svc):
        barrier.wait()
        answers.append(svc.commit(call_id="c1", seq=1))

    threads = [threading.Thread(target=go, args=(s,)) for s in servers]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len({a.data["recharge_ref"] for a in answers}) == 1 and all(a.outcome is Outcome.OK for a in answers)
    with bench.system.db.transaction() as s:
        assert s.execute(select(func.count()).select_from(Recharge)).scalar_one() == 1


def test_racing_calls_for_one_pin_hold_it_once(world):
    bench, service, clock, cards = world
    answers, barrier = [], threading.Barrier(8)

    def go(i):
        barrier.wait()
        try:
            answers.append(quote(service, cards[0][1], call=f"call{i}").outcome)
        except Exception as e:  # SQLite may refuse a concurrent writer outright
            answers.append(type(e).__name__)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert answers.count(Outcome.OK) == 1, answers


def test_the_guard_alert_is_logged_once_a_window_and_anchored(bench, marketing):
    from cardmgmt import audit
    from cardmgmt.lockouts import GUARD_ALERT, watch_guard

    clock = Clock()
    policy = Policy(guard_failures=3, guard_minutes=10)
    service = RechargeService(bench.system.db, marketing, bench.system.keys().pin_key, policy, clock)
    keys, anchor_file = bench.system.keys(), bench.system.settings.audit_anchor_file

    def look():
        return watch_guard(bench.system.db, keys, policy, anchor_file, "server A", clock.now)

    assert not look().tripped
    for i in range(3):
        quote(service, "1" * 18, call=f"w{i}", caller=f"1390000000{i}")
    first, again = look(), look()
    assert (first.recent, first.tripped, first.alerted) == (3, True, True)
    assert (again.tripped, again.alerted) == (True, False), "one alert per window"
    with bench.unit(Permission.VERIFY_LOG) as ctx:
        alerts = audit.entries(ctx.session, action=GUARD_ALERT)
        assert [(e.operator, e.object) for e in alerts] == [("server A", "recharge service")]
        assert audit.verify_installation(ctx.session, ctx.keys, anchor_file).ok, "the alert's entry is anchored"
    clock.advance(10 * 60 + 1)
    assert not look().tripped
