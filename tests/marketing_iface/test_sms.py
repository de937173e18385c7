"""SMS notices (短信告知): queued once per acknowledged posting, handed to the SMS platform once, never the full name.

Card databases on SQLite and on the real PostgreSQL server (the ``system``
fixture); the marketing side is ``NullMarketing`` for most tests, the
stand-in and the second schema through ``SqlMarketing`` (SQLite and
PostgreSQL) for the real interface tables, and parallel threads on
PostgreSQL for workers draining at once.
"""

import datetime as dt
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from cardmgmt.context import Permission
from cardmgmt.db import make_engine
from cardmgmt.marketing import Account, MarketingUnavailable, Posting, Receipt, SmsMessage
from cardmgmt.models import SmsNotice
from cardmgmt.notices import notice_text
from marketing_iface import outbox, sms
from marketing_iface.outbox import DrainResult, drain, posting_for
from marketing_iface.sms import SmsDrainResult
from marketing_iface.sql import SqlMarketing
from marketing_iface.standin import SAMPLE_ACCOUNTS, create_standin, sms_outbox
from testkit.marketing import (
    billing_mapping_file,
    create_billing,
    reset_billing,
    reset_standin,
    sample_null_marketing,
)

UTC = dt.UTC
T0 = dt.datetime(2024, 3, 1, 2, 0, tzinfo=UTC)
LATER = T0 + dt.timedelta(minutes=1)
HAN = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture
def null():
    return sample_null_marketing()


def notices(system) -> list[SmsNotice]:  # type: ignore[no-untyped-def]
    with system.db.transaction() as s:
        return list(s.scalars(select(SmsNotice).order_by(SmsNotice.id)))


# The words.


@pytest.mark.parametrize("sample", SAMPLE_ACCOUNTS, ids=lambda a: a.account_no)
def test_the_text_never_holds_the_full_name(sample):
    account = sample.account()
    for reverses in (None, "24030100000001"):
        text = notice_text(ref="24030100000002", account_no=account.account_no, amount=-5000 if reverses else 5000,
                           balance=account.balance, masked_name=account.masked_name, reverses=reverses)
        assert account.holder_name not in text
        assert account.masked_name in text
        assert account.account_no not in text and account.account_no[-4:] in text  # the tail only
        assert len(HAN.findall(text)) > 20  # Mandarin


def test_a_recharge_notice_says_amount_balance_and_reference():
    text = notice_text(ref="24030100000007", account_no="3100000001", amount=5000, balance=17_850, masked_name="张*明")
    assert text == "【电费充值】尊敬的张*明用户，您尾号0001的电费账户已充值50.00元，当前余额178.50元。充值流水号24030100000007。"


def test_arrears_and_reversals_are_said_so():
    text = notice_text(ref="V1", account_no="3100000002", amount=-5000, balance=-4620, masked_name="李*",
                       reverses="24030100000007")
    assert "已冲正，扣回50.00元，当前欠费46.20元" in text and "流水号24030100000007" in text and "冲正流水号V1" in text


# Queued once, with the outbox's mark.


def test_each_acknowledged_recharge_queues_one_notice_and_each_is_sent_once(system, ledger, null):
    ids = [ledger.add("3100000001", 5000, T0), ledger.add("3100000002", 10_000, T0), ledger.add("3100000001", 2000, T0)]
    assert drain(system.db, null, LATER) == DrainResult(posted=3)
    queued = notices(system)
    assert [(n.recharge_id, n.posting_ref, n.status) for n in queued] == [
        (i, ledger.get(i).ref, "pending") for i in ids]
    # The balance each notice states is the one its own posting left.
    assert "当前余额178.50元" in queued[0].text and "当前余额198.50元" in queued[2].text
    assert "当前余额53.80元" in queued[1].text
    assert queued[0].phone == "13803150001"
    for _ in range(3):  # more drains queue nothing more
        assert drain(system.db, null, LATER) == DrainResult()
    assert sms.drain(system.db, null, LATER) == SmsDrainResult(sent=3)
    assert sms.drain(system.db, null, LATER) == SmsDrainResult()
    assert sorted(null.sms) == sorted(n.posting_ref for n in queued)
    assert null.sms[queued[1].posting_ref] == SmsMessage(queued[1].posting_ref, "13903150002", queued[1].text, LATER)
    assert [n.status for n in notices(system)] == ["sent"] * 3
    assert all(n.sent_at is not None and n.attempts == 1 for n in notices(system))


def test_an_account_without_a_phone_is_skipped_with_the_reason(system, ledger, null):
    ledger.add("3100000006", 5000, T0)
    drain(system.db, null, LATER)
    [n] = notices(system)
    assert (n.status, n.phone, n.last_error) == ("skipped", None, sms.NO_PHONE)
    assert sms.drain(system.db, null, LATER) == SmsDrainResult()
    assert null.sms == {}


def test_a_rejected_recharge_gets_no_notice(system, ledger, null):
    ledger.add("3199999999", 5000, T0)
    assert drain(system.db, null, LATER) == DrainResult(rejected=1)
    assert notices(system) == []


class CrashAfterPosting:
    """The worker dies after the marketing system committed the postings, before the card database marks them."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner

    def post_recharges(self, postings, **kw):  # type: ignore[no-untyped-def]
        self.inner.post_recharges(postings, **kw)
        raise KeyboardInterrupt("worker killed")


def test_a_repeat_whose_mark_was_lost_still_gets_its_one_notice(system, ledger, null):
    ledger.add("3100000001", 5000, T0)
    with pytest.raises(KeyboardInterrupt):
        drain(system.db, CrashAfterPosting(null), LATER)
    assert notices(system) == []  # rolled back with the mark
    assert drain(system.db, null, LATER) == DrainResult(repeated=1)
    [n] = notices(system)
    assert "已充值50.00元" in n.text and "当前余额178.50元" in n.text


def test_a_posting_marked_twice_still_has_one_notice(system, ledger, null):
    rid = ledger.add("3100000001", 5000, T0)
    drain(system.db, null, LATER)
    posting = posting_for(ledger.get(rid))
    receipt = Receipt(balance=1, phone="13800000000", masked_name="张*明", written=False)
    with system.db.transaction() as s:
        assert sms.queue_notices(s, [(posting, receipt, rid)], LATER) == 0
    assert len(notices(system)) == 1 and "当前余额178.50元" in notices(system)[0].text


def test_a_batch_queues_one_notice_per_posting_and_skips_those_that_have_one(system, ledger, null):
    first = ledger.add("3100000001", 5000, T0)
    drain(system.db, null, LATER)  # its notice is queued
    others = [ledger.add("3100000001", 1000 * k, T0) for k in (1, 2, 3)]
    receipt = Receipt(balance=1, phone="13800000000", masked_name="张*明", written=True)
    items = [(posting_for(ledger.get(rid)), receipt, rid) for rid in [first, *others]]
    with system.db.transaction() as s:
        assert sms.queue_notices(s, items, LATER) == 3
        assert sms.queue_notices(s, items, LATER) == 0
        assert sms.queue_notices(s, [], LATER) == 0
    assert sorted(n.recharge_id for n in notices(system)) == sorted([first, *others])


def test_a_reversal_notice_is_queued_by_whoever_marks_the_reversal(system, null):
    original = Posting("24030100000001", "3100000001", 5000, "900000000001", "hotline", T0)
    reversal = Posting("V24030100000001", "3100000001", -5000, "900000000001", "hotline", LATER, reverses=original.recharge_ref)
    [_, receipt] = null.post_recharges([original, reversal], receipts=True)
    assert isinstance(receipt, Receipt) and receipt.balance == 12_850
    with system.db.transaction() as s:
        assert sms.queue_notices(s, [(reversal, receipt, None)], LATER) == 1
    [n] = notices(system)
    assert n.recharge_id is None and "扣回50.00元" in n.text
    assert sms.drain(system.db, null, LATER) == SmsDrainResult(sent=1)


# Handed over once, through outages and crashes.


class SmsDown:
    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner

    def queue_sms(self, messages):  # type: ignore[no-untyped-def]
        raise MarketingUnavailable("marketing system unavailable (SMS table)")


class CrashAfterHandOver:
    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner

    def queue_sms(self, messages):  # type: ignore[no-untyped-def]
        self.inner.queue_sms(messages)
        raise KeyboardInterrupt("worker killed")


def test_an_sms_outage_backs_off_and_loses_nothing(system, ledger, null):
    ledger.add("3100000001", 5000, T0)
    ledger.add("3100000002", 5000, T0)
    drain(system.db, null, LATER)
    assert sms.drain(system.db, SmsDown(null), LATER) == SmsDrainResult(failed=1)
    probe, other = notices(system)
    assert (probe.attempts, probe.status, other.attempts) == (1, "pending", 0)
    assert "unavailable" in probe.last_error
    assert sms.drain(system.db, null, LATER) == SmsDrainResult(sent=1)  # the probe waits out its backoff
    assert sms.drain(system.db, null, LATER + dt.timedelta(seconds=2)) == SmsDrainResult(sent=1)
    assert len(null.sms) == 2


def test_a_crash_after_the_hand_over_resends_harmlessly(system, ledger, null):
    ledger.add("3100000001", 5000, T0)
    drain(system.db, null, LATER)
    with pytest.raises(KeyboardInterrupt):
        sms.drain(system.db, CrashAfterHandOver(null), LATER)
    assert [n.status for n in notices(system)] == ["pending"]
    assert sms.drain(system.db, null, LATER) == SmsDrainResult(repeated=1)
    assert len(null.sms) == 1


def test_drain_now_hands_the_notices_over_too(system, ledger, null):
    ledger.add("3100000001", 5000, T0)
    with system.unit(Permission.MANAGE_CARDS) as ctx:
        result = outbox.drain_now(ctx, null, LATER)
    assert result.posted == 1 and result.sms == SmsDrainResult(sent=1)
    assert len(null.sms) == 1


# Through the real interface tables.


@pytest.fixture(params=["standin-sqlite", "standin-postgresql", "billing-sqlite", "billing-postgresql"])
def sql_marketing(request, tmp_path):  # type: ignore[no-untyped-def]
    kind, backend = request.param.split("-")
    mapping = billing_mapping_file(tmp_path) if kind == "billing" else None
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'marketing.db'}"
        (create_billing if kind == "billing" else create_standin)(url)
    else:
        url = request.getfixturevalue(f"pg_{'billing' if kind == 'billing' else 'standin'}_database")
        (reset_billing if kind == "billing" else reset_standin)(url)
    m = SqlMarketing(url, mapping=mapping)
    yield m
    m.close()


def sms_rows(m: SqlMarketing) -> list[tuple[str, str, str]]:
    """The SMS interface table's rows (reference, phone, text), whatever the mapping calls them."""
    table = m.layout.sms
    assert table is not None
    with m.engine.connect() as conn:
        return [(r.message_ref, r.phone, r.text) for r in conn.execute(select(table).order_by(table.c.message_ref))]


def test_notices_land_in_the_sms_interface_table_once(system, ledger, sql_marketing):
    ids = [ledger.add("3100000001", 5000, T0), ledger.add("3100000006", 100, T0), ledger.add("3100000012", 2000, T0)]
    assert drain(system.db, sql_marketing, LATER) == DrainResult(posted=3)
    assert sms.drain(system.db, sql_marketing, LATER) == SmsDrainResult(sent=2)
    assert sms.drain(system.db, sql_marketing, LATER) == SmsDrainResult()
    rows = sms_rows(sql_marketing)
    refs = [ledger.get(i).ref for i in ids]
    texts = {n.posting_ref: n.text for n in notices(system)}
    # The message reference is the posting's; the skipped account (no phone) has none.
    by_ref = {r[0]: r for r in rows}
    assert sorted(by_ref) == sorted([refs[0], refs[2]])
    assert by_ref[refs[0]][1:] == ("13803150001", texts[refs[0]])
    assert "欧**月" in texts[refs[2]] and "欧阳明月" not in texts[refs[2]] and "当前余额520.00元" in texts[refs[2]]
    # A second hand-over of the same messages is answered "already there".
    again = [SmsMessage(r[0], r[1], r[2], LATER) for r in rows]
    assert sql_marketing.queue_sms(again) == [False, False]


def test_a_message_too_long_for_the_sms_table_is_refused_for_good(sql_marketing):
    [refused, ok] = sql_marketing.queue_sms([SmsMessage("M1", "1" * 41, "x", T0), SmsMessage("M2", "13800000000", "x", T0)])
    assert "phone longer than the SMS table takes" in str(refused) and ok is True


# Workers at once, on PostgreSQL.


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_parallel_drains_post_notify_and_send_each_recharge_exactly_once(system, ledger, pg_standin_database):
    reset_standin(pg_standin_database)
    phoned = [a.account_no for a in SAMPLE_ACCOUNTS if a.phone]
    ids = [ledger.add(phoned[i % len(phoned)], 100 + i, T0) for i in range(120)]
    workers = [SqlMarketing(pg_standin_database) for _ in range(6)]

    def work(n: int) -> tuple[DrainResult, SmsDrainResult]:
        m = workers[n % len(workers)]
        return drain(system.db, m, LATER, limit=40), sms.drain(system.db, m, LATER, limit=40)

    try:
        for _ in range(3):  # rounds of parallel drains until everything is through
            with ThreadPoolExecutor(max_workers=6) as pool:
                results = list(pool.map(work, range(12)))
            assert sum(r[0].repeated + r[1].repeated for r in results) == 0  # SKIP LOCKED: never the same row twice
        rows = sms_rows_of(pg_standin_database)
    finally:
        for m in workers:
            m.close()
    refs = sorted(ledger.get(i).ref for i in ids)
    assert [r.post_status for r in ledger.rows()] == ["posted"] * len(ids)
    queued = notices(system)
    assert sorted(n.posting_ref for n in queued) == refs and all(n.status == "sent" for n in queued)
    assert sorted(rows) == refs  # each in the SMS table exactly once (message_ref is unique there as well)


def sms_rows_of(url: str) -> list[str]:
    engine = make_engine(url)
    with engine.connect() as conn:
        refs = list(conn.scalars(select(sms_outbox.c.message_ref)))
    engine.dispose()
    return refs


def test_the_null_sms_platform_switched_off_raises():
    m = sample_null_marketing()
    m.available = False
    with pytest.raises(MarketingUnavailable):
        m.queue_sms([SmsMessage("M1", "13800000000", "x", T0)])
    assert isinstance(Account("3100000001", "张三明", 0).masked_name, str)
