"""Customer service's look-ups on real recharges (both backends) made through the real recharge core."""

import datetime as dt

import pytest

from cardmgmt import issuing, lookups, sales, stock
from cardmgmt.context import Permission, Role
from cardmgmt.errors import InvalidInput, NotFound
from cardmgmt.fields import mask_account
from cardmgmt.serials import make_serial, parse_serial
from marketing_iface.standin import create_standin
from testkit.lifecycle import issued_batch
from testkit.recharges import post, recharge_cards

UTC = dt.UTC
A, B = "3100000001", "3100000002"


@pytest.fixture
def world(bench, tmp_path):
    """Four recharges: two on the business day 2026-11-23, two on the 24th (one 30 minutes past midnight Beijing time)."""
    pins = list(issued_batch(bench, "B1", 12).items())
    with bench.unit(Permission.SELL_CARDS) as ctx:  # the four to be recharged; the rest stay unsold at H01
        sales.sell(ctx, "H01", stock.Selection(first_serial=pins[0][0], last_serial=pins[3][0]))
    marketing = f"sqlite:///{tmp_path / 'marketing.db'}"
    create_standin(marketing)
    jobs = [
        (*pins[0], A, dt.datetime(2026, 11, 23, 2, 0, tzinfo=UTC), "hotline"),
        (*pins[1], B, dt.datetime(2026, 11, 23, 15, 59, 59, tzinfo=UTC), "hotline"),  # 23:59:59 in Beijing
        (*pins[2], A, dt.datetime(2026, 11, 23, 16, 30, tzinfo=UTC), "pos"),  # 00:30 on the 24th in Beijing
        (*pins[3], A, dt.datetime(2026, 11, 24, 3, 0, tzinfo=UTC), "hotline"),
    ]
    made = recharge_cards(bench.system.settings.database_url, marketing, bench.system.keys().pin_key, jobs)
    return bench, made, [serial for serial, _ in pins], marketing


def find(bench, **kw):
    with bench.unit(Permission.VIEW, who="bob") as ctx:
        return lookups.find_recharges(ctx, lookups.RechargeQuery(**kw))


def test_every_criterion_alone_and_combined_newest_first(world):
    bench, made, serials, _ = world
    refs = [m.ref for m in made]
    assert [r["ref"] for r in find(bench)] == refs[::-1], "newest first"
    assert [r["ref"] for r in find(bench, account=A)] == [refs[3], refs[2], refs[0]]
    assert [r["ref"] for r in find(bench, serial=serials[1])] == [refs[1]]
    assert find(bench, serial=serials[5]) == [], "an issued card not yet redeemed has no recharge"
    assert [r["ref"] for r in find(bench, ref=refs[2])] == [refs[2]]
    assert [r["ref"] for r in find(bench, day="2026-11-23")] == [refs[1], refs[0]], "the day is Beijing's"
    assert [r["ref"] for r in find(bench, day=dt.date(2026, 11, 24))] == [refs[3], refs[2]]
    assert [r["ref"] for r in find(bench, channel="pos")] == [refs[2]]
    assert [r["ref"] for r in find(bench, account=A, day="2026-11-24", channel="hotline")] == [refs[3]]
    assert find(bench, account=B, day="2026-11-24") == []
    assert [r["ref"] for r in find(bench, account=A, limit=2)] == [refs[3], refs[2]]


def test_a_row_says_what_a_caller_can_check(world):
    bench, made, serials, marketing = world
    (row,) = find(bench, ref=made[2].ref)
    assert row == {"ref": made[2].ref, "at": "2026-11-24T00:30:00+08:00", "account": "31****0001", "amount": 5000,
                   "serial": serials[2], "channel": "pos", "post_status": "pending", "posted_at": ""}
    assert made[2].ref.startswith("261124"), "the reference carries the Beijing day"
    assert post(bench.system.settings.database_url, marketing, dt.datetime(2026, 11, 24, 4, 0, tzinfo=UTC)) == 4
    (row,) = find(bench, ref=made[2].ref)
    assert (row["post_status"], row["posted_at"]) == ("posted", "2026-11-24T12:00:00+08:00")


def test_a_reference_is_checked_against_its_day(world):
    bench, made, _, _ = world
    ref = made[1].ref  # made at 23:59:59 on the 23rd, Beijing time
    day, record = lookups.parse_ref(ref)
    assert (day, f"{record:08d}") == (dt.date(2026, 11, 23), ref[6:])
    assert find(bench, ref="261124" + ref[6:]) == [], "the record's number with another day names no recharge"
    assert find(bench, ref=ref[:6] + "99999999") == []
    assert lookups.parse_ref("261124123456789") == (dt.date(2026, 11, 24), 123456789), "past 99,999,999 records"


@pytest.mark.parametrize(("kw", "error", "line"), [
    (dict(serial="12345"), InvalidInput, "a serial is 12 digits"),
    (dict(serial="731904468215530927"), InvalidInput, "a serial is 12 digits; that was 18 characters"),
    (dict(serial=make_serial(9999)[:-1] + "0"), InvalidInput, "wrong check digit"),
    (dict(serial=make_serial(9999)), NotFound, f"card {make_serial(9999)} does not exist"),
    (dict(ref="2611241"), InvalidInput, "a recharge reference is at least 14 digits"),
    (dict(ref="26113200000001"), InvalidInput, "does not start with a day"),
    (dict(ref="26-11-2400000001"), InvalidInput, "not a reference"),
    (dict(day="2026-11-31"), InvalidInput, "'2026-11-31' is not a day like 2026-11-30"),
    (dict(day="yesterday"), InvalidInput, "not a day"),
    (dict(account="731904468215530927"), InvalidInput, "an account number is 10 digits; that was 18 characters"),
    (dict(channel="fax"), InvalidInput, "channel 'fax' is not one of hotline, pos, web, partner"),
    (dict(limit=0), InvalidInput, "the limit must be between 1 and 1000"),
    (dict(limit=1001), InvalidInput, "the limit must be between 1 and 1000"),
])
def test_bad_criteria_are_one_line_and_never_echo_a_secret(world, kw, error, line):
    bench = world[0]
    with pytest.raises(error) as e:
        find(bench, **kw)
    assert line in e.value.message and "\n" not in e.value.message
    assert "731904468215530927" not in e.value.message and "7319044682" not in e.value.message


def test_card_shows_its_recharge_reservation_and_request(world):
    bench, made, serials, _ = world
    with bench.unit(Permission.VIEW, who="bob") as ctx:
        redeemed = lookups.card(ctx, serials[2])
        issued = lookups.card(ctx, serials[5])
    assert (redeemed["state"], redeemed["recharge_ref"], redeemed["recharged_at"], redeemed["account"],
            redeemed["channel"], redeemed["post_status"]) == ("redeemed", made[2].ref, "2026-11-24T00:30:00+08:00",
                                                              "31****0001", "pos", "pending")
    assert (issued["state"], issued["recharge_ref"], issued["account"], issued["reserved_for"]) == ("issued", "", "", "")
    assert (redeemed["sale_hall"], redeemed["sold_by"], redeemed["sale_channel"]) == ("H01", "alice", "counter")
    assert redeemed["sold_at"].endswith("+08:00") and isinstance(redeemed["sale"], int)
    assert issued["sale"] == issued["sale_hall"] == issued["sold_at"] == ""
    assert isinstance(issued["issue_request"], int)
    bench.stocked_batch("B2", 10)
    rid = bench.approved_request(4)
    first = make_serial(parse_serial(serials[-1]) + 1)
    with bench.unit() as ctx:
        stock.void(ctx, stock.Selection.serial(first), "torn")
    with bench.unit(Permission.VIEW, who="bob") as ctx:
        assert (lookups.card(ctx, first)["state"], lookups.card(ctx, first)["reserved_for"]) == ("voided", rid)
    with bench.unit() as ctx:
        issuing.cancel(ctx, rid, "hall closed")
    with bench.unit(Permission.VIEW, who="bob") as ctx:
        assert lookups.card(ctx, first)["reserved_for"] == lookups.card(ctx, first)["issue_request"] == ""


def test_looking_up_needs_only_view_and_writes_nothing(world):
    from cardmgmt import audit

    bench = world[0]
    bench.add_operator("carol", Role.AUDITOR)
    with bench.unit(Permission.VERIFY_LOG, who="carol") as ctx:
        logged = len(audit.entries(ctx.session))
    with bench.unit(Permission.VIEW, who="carol") as ctx:
        assert len(lookups.find_recharges(ctx, lookups.RechargeQuery())) == 4
        assert lookups.card(ctx, world[2][0])["state"] == "redeemed"
        assert ctx.head is None, "a look-up logs nothing"
    with bench.unit(Permission.VERIFY_LOG, who="carol") as ctx:
        assert len(audit.entries(ctx.session)) == logged


def test_intakes_by_batch_and_day(bench):
    bench.stocked_batch("B1", 25)
    bench.stocked_batch("B2", 10, face_value=10000)
    with bench.unit(Permission.VIEW, who="bob") as ctx:
        rows = lookups.intakes(ctx)
        b2 = lookups.intakes(ctx, batch_no="B2")
        today = dt.datetime.now(dt.UTC).astimezone(lookups.BUSINESS_TZ).date()
        todays = lookups.intakes(ctx, first_day=today.isoformat(), last_day=today)
        tomorrow = lookups.intakes(ctx, first_day=today + dt.timedelta(days=1))
    assert [(r["batch_no"], r["box"], r["cards"]) for r in rows] == [("B1", 1, 10), ("B1", 2, 10), ("B1", 3, 5), ("B2", 1, 10)]
    assert (rows[0]["first_serial"], rows[2]["last_serial"], rows[0]["operator"]) == (make_serial(1), make_serial(25), "alice")
    assert [(r["batch_no"], r["face_value"]) for r in b2] == [("B2", 10000)]
    assert len(todays) == 4 and tomorrow == []
    with pytest.raises(NotFound), bench.unit(Permission.VIEW) as ctx:
        lookups.intakes(ctx, batch_no="B9")
    with pytest.raises(InvalidInput, match="is after"), bench.unit(Permission.VIEW) as ctx:
        lookups.intakes(ctx, first_day="2026-11-30", last_day="2026-11-01")
    with pytest.raises(InvalidInput, match="not a day"), bench.unit(Permission.VIEW) as ctx:
        lookups.intakes(ctx, first_day="30/11/2026")


def test_the_mask_keeps_both_ends():
    assert mask_account(A) == "31****0001"
    assert mask_account("12345") == "*****"
