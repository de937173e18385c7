"""Issue requests, finance approval and collection (real databases; the race runs on both)."""

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from cardmgmt import issuing
from cardmgmt.context import Permission, Role
from cardmgmt.errors import (
    ConflictError,
    IllegalTransition,
    InsufficientStock,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from cardmgmt.models import Card
from cardmgmt.serials import make_serial


@pytest.fixture
def stocked(bench):
    bench.stocked_batch("B1", 40)
    bench.add_hall("H01")
    return bench


def test_requester_cannot_approve_own_request(stocked):
    stocked.add_operator("dave", Role.ADMIN)
    with stocked.unit() as ctx:
        rid = issuing.file_request(ctx, face_value=5000, quantity=5, hall_code="H01", reason="x").id
    with pytest.raises(PermissionDenied), stocked.unit(Permission.DECIDE_REQUESTS) as ctx:
        issuing.decide(ctx, rid, approve=True, comment="mine")
    with stocked.system.db.transaction() as s:
        assert issuing.get(s, rid).status == "pending"


def test_finance_who_filed_cannot_decide(stocked):
    """Separation of duties is by person, not only by role."""
    with stocked.unit() as ctx:
        rid = issuing.file_request(ctx, face_value=5000, quantity=5, hall_code="H01", reason="x").id
    with stocked.system.db.transaction() as s:
        issuing.get(s, rid).requested_by = "bob"
    with pytest.raises(PermissionDenied, match="filed request"), stocked.unit(Permission.DECIDE_REQUESTS, who="bob") as ctx:
        issuing.decide(ctx, rid, approve=True, comment="ok")


def test_reject_then_no_collection(stocked):
    with stocked.unit() as ctx:
        rid = issuing.file_request(ctx, face_value=5000, quantity=5, hall_code="H01", reason="x").id
    with stocked.unit(Permission.DECIDE_REQUESTS, who="bob") as ctx:
        assert issuing.decide(ctx, rid, approve=False, comment="not now").status == "rejected"
    with pytest.raises(IllegalTransition), stocked.unit() as ctx:
        issuing.collect(ctx, rid)
    with pytest.raises(IllegalTransition), stocked.unit(Permission.DECIDE_REQUESTS, who="bob") as ctx:
        issuing.decide(ctx, rid, approve=True, comment="changed my mind")
    assert stocked.states("B1") == {"in_stock": 40}


def test_collect_picks_earliest_expiry_first(stocked):
    soon = dt.date.today() + dt.timedelta(days=30)
    stocked.stocked_batch("B2", 10, expiry=soon)
    rid = stocked.approved_request(15)
    with stocked.unit() as ctx:
        runs = issuing.collect(ctx, rid)
    assert stocked.states("B2") == {"issued": 10}
    assert stocked.states("B1") == {"issued": 5, "in_stock": 35}
    assert runs[0] == (make_serial(1), make_serial(5), 5)
    with stocked.system.db.transaction() as s:
        assert issuing.get(s, rid).status == "collected"
        halls = set(s.execute(select(Card.hall_id).where(Card.state == "issued")).scalars())
        assert len(halls) == 1


def test_expired_and_frozen_cards_are_not_issued(stocked):
    from cardmgmt import stock

    with stocked.unit() as ctx:
        stock.freeze(ctx, stock.Selection(batch_no="B1", box_no=1), "lost")
    with stocked.unit() as ctx:
        assert issuing.available(ctx.session, 5000, dt.date.today()) == 30
        assert issuing.available(ctx.session, 5000, dt.date.today() + dt.timedelta(days=3650)) == 0


def test_bad_requests(stocked):
    cases = [
        (dict(quantity=41), InsufficientStock),
        (dict(quantity=0), InvalidInput),
        (dict(hall_code="H99"), NotFound),
        (dict(face_value=10000), InsufficientStock),
        (dict(reason=" "), InvalidInput),
    ]
    for change, error in cases:
        kw = dict(face_value=5000, quantity=5, hall_code="H01", reason="x") | change
        with pytest.raises(error), stocked.unit() as ctx:
            issuing.file_request(ctx, **kw)
    with stocked.system.db.transaction() as s:
        assert issuing.listing(s) == []


def test_cancel(stocked):
    rid = stocked.approved_request(5)
    with stocked.unit() as ctx:
        issuing.cancel(ctx, rid, "hall closed")
    with pytest.raises(IllegalTransition), stocked.unit() as ctx:
        issuing.collect(ctx, rid)


def test_stock_gone_by_collection_time(stocked):
    rid = stocked.approved_request(35)
    from cardmgmt import stock

    with stocked.unit() as ctx:
        stock.void(ctx, stock.Selection(batch_no="B1", box_no=1), "flood")
    with pytest.raises(InsufficientStock), stocked.unit() as ctx:
        issuing.collect(ctx, rid)
    assert stocked.states("B1") == {"in_stock": 30, "voided": 10}


def test_concurrent_collections_never_share_a_card(stocked):
    """Two administrators collect two requests at the same moment: every card goes out once."""
    stocked.add_operator("dave", Role.ADMIN)
    first, second = stocked.approved_request(20), stocked.approved_request(20)
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def collect(who, rid):
        barrier.wait()
        try:
            with stocked.unit(who=who) as ctx:
                outcomes.append(sum(n for _, _, n in issuing.collect(ctx, rid)))
        except (ConflictError, InsufficientStock) as e:
            outcomes.append(e)
        except Exception as e:  # SQLite may report its write lock as a database error
            outcomes.append(e)

    threads = [threading.Thread(target=collect, args=a) for a in (("alice", first), ("dave", second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with stocked.system.db.transaction() as s:
        issued = s.execute(select(func.count()).select_from(Card).where(Card.state == "issued")).scalar_one()
        per_request = dict(s.execute(select(Card.issue_request_id, func.count()).where(Card.state == "issued").group_by(Card.issue_request_id)).all())
    succeeded = [o for o in outcomes if o == 20]
    assert issued == 20 * len(succeeded) and all(n == 20 for n in per_request.values())
    if stocked.system.db.engine.dialect.name == "postgresql":
        assert len(succeeded) == 2, outcomes


# --- reservation at approval --------------------------------------------------------------


def carried(bench, request_id):
    """Serial → state of every card carrying ``request_id``."""
    with bench.system.db.transaction() as s:
        return dict(s.execute(select(Card.serial, Card.state).where(Card.issue_request_id == request_id)).all())


def free(bench, face_value=5000):
    with bench.system.db.transaction() as s:
        return issuing.available(s, face_value, dt.date.today())


def file(bench, quantity, face_value=5000):
    with bench.unit() as ctx:
        return issuing.file_request(ctx, face_value=face_value, quantity=quantity, hall_code="H01", reason="supply").id


def approve(bench, rid, **kw):
    with bench.unit(Permission.DECIDE_REQUESTS, who="bob") as ctx:
        return issuing.decide(ctx, rid, approve=True, comment="ok", **kw)


def test_approval_reserves_the_exact_cards_earliest_expiry_first(stocked):
    stocked.stocked_batch("B2", 10, expiry=dt.date.today() + dt.timedelta(days=30))
    rid = stocked.approved_request(15)
    cards = carried(stocked, rid)
    assert set(cards.values()) == {"in_stock"} and len(cards) == 15
    assert sorted(cards)[:5] == [make_serial(n) for n in range(1, 6)], "then B1's first five"
    assert stocked.states("B2") == {"in_stock": 10} and free(stocked) == 35
    with stocked.system.db.transaction() as s:
        assert issuing.runs_of_request(s, rid) == [(make_serial(1), make_serial(5), 5), (make_serial(41), make_serial(50), 10)]
        assert issuing.reservations(s) == {rid: 15}
        assert issuing.reserved_count(s, 5000) == 15
    with stocked.unit() as ctx:
        runs = issuing.collect(ctx, rid)
    assert runs == [(make_serial(1), make_serial(5), 5), (make_serial(41), make_serial(50), 10)]
    assert set(carried(stocked, rid).values()) == {"issued"} and free(stocked) == 35


def test_an_approval_stock_cannot_cover_is_refused_and_changes_nothing(stocked):
    first, second = file(stocked, 30), file(stocked, 30)
    approve(stocked, first)
    with stocked.unit(Permission.VERIFY_LOG) as ctx:
        from cardmgmt import audit

        logged = len(audit.entries(ctx.session))
    with pytest.raises(InsufficientStock, match=r"only 10 usable cards of 50.00 yuan are in stock \(30 more are reserved"):
        approve(stocked, second)
    with stocked.system.db.transaction() as s:
        assert issuing.get(s, second).status == "pending" and issuing.get(s, second).decided_by is None
    assert carried(stocked, second) == {} and len(carried(stocked, first)) == 30
    with stocked.unit(Permission.VERIFY_LOG) as ctx:
        assert len(audit.entries(ctx.session)) == logged
    # A request filed now sees only the free cards.
    with pytest.raises(InsufficientStock, match="only 10 usable"):
        file(stocked, 11)


def test_rejection_reserves_nothing_and_cancellation_releases(stocked):
    rejected = file(stocked, 10)
    with stocked.unit(Permission.DECIDE_REQUESTS, who="bob") as ctx:
        issuing.decide(ctx, rejected, approve=False, comment="no")
    assert carried(stocked, rejected) == {} and free(stocked) == 40
    rid = stocked.approved_request(25)
    assert free(stocked) == 15
    with stocked.unit() as ctx:
        issuing.cancel(ctx, rid, "hall closed")
    assert carried(stocked, rid) == {} and free(stocked) == 40


def test_freezing_a_reserved_card_keeps_the_reservation_and_blocks_collection(stocked):
    from cardmgmt import stock

    rid = stocked.approved_request(12)
    with stocked.unit() as ctx:
        stock.freeze(ctx, stock.Selection.serial(make_serial(3)), "reported lost")
    assert carried(stocked, rid)[make_serial(3)] == "frozen"
    with pytest.raises(InsufficientStock, match=f"of its 12 reserved cards 1 frozen \\({make_serial(3)}\\); nothing was issued"):
        with stocked.unit() as ctx:
            issuing.collect(ctx, rid)
    assert stocked.states("B1") == {"in_stock": 39, "frozen": 1}
    with stocked.system.db.transaction() as s:
        assert issuing.get(s, rid).status == "approved"
    assert free(stocked) == 28, "the frozen card is neither free nor lost to the request"
    with stocked.unit() as ctx:
        stock.unfreeze(ctx, stock.Selection.serial(make_serial(3)), "found")
    with stocked.unit() as ctx:
        assert sum(n for _, _, n in issuing.collect(ctx, rid)) == 12
    assert set(carried(stocked, rid).values()) == {"issued"}


def test_reserved_cards_whose_batch_expired_are_not_collected(stocked):
    rid = stocked.approved_request(5)
    later = dt.date.today() + dt.timedelta(days=3650)
    with pytest.raises(InsufficientStock, match="of its 5 reserved cards 5 expired"), stocked.unit() as ctx:
        issuing.collect(ctx, rid, today=later)
    assert stocked.states("B1") == {"in_stock": 40}


def test_a_request_approved_before_reservations_reserves_at_collection(stocked):
    rid = stocked.approved_request(8)
    with stocked.system.db.transaction() as s:  # as an installation upgraded with this request approved would have it
        s.execute(Card.__table__.update().where(Card.issue_request_id == rid).values(issue_request_id=None))
    with stocked.unit() as ctx:
        assert issuing.collect(ctx, rid) == [(make_serial(1), make_serial(8), 8)]
    assert stocked.states("B1") == {"issued": 8, "in_stock": 32}


def _race(bench, jobs):
    """Run ``jobs`` (callables) in real threads released together; their results or the exceptions they raised."""
    barrier = threading.Barrier(len(jobs))
    results: list[object] = [None] * len(jobs)

    def run(i, job):
        barrier.wait()
        try:
            results[i] = job()
        except Exception as e:  # SQLite may refuse a concurrent writer outright
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return results


def test_concurrent_approvals_beyond_stock_exactly_the_ones_that_fit_succeed(stocked):
    """Three approvals at once for 30 + 30 + 10 cards against 40: on PostgreSQL they reserve in turn."""
    stocked.add_operator("carol", Role.FINANCE)
    stocked.add_operator("dave", Role.FINANCE)
    rids = [file(stocked, n) for n in (30, 30, 10)]

    def approver(who, rid):
        def job():
            with stocked.unit(Permission.DECIDE_REQUESTS, who=who) as ctx:
                return issuing.decide(ctx, rid, approve=True, comment="ok").quantity
        return job

    results = _race(stocked, [approver(w, r) for w, r in zip(("bob", "carol", "dave"), rids, strict=True)])
    reserved = {r: len(carried(stocked, r)) for r in rids}
    with stocked.system.db.transaction() as s:
        status = {r: issuing.get(s, r).status for r in rids}
    for r, wanted in zip(rids, (30, 30, 10), strict=True):
        assert reserved[r] == (wanted if status[r] == "approved" else 0), (status, reserved)
        assert status[r] in ("approved", "pending")
    assert free(stocked) == 40 - sum(reserved.values())
    if stocked.system.db.engine.dialect.name == "postgresql":
        assert all(isinstance(r, int | InsufficientStock) for r in results), results
        # In whatever order they ran: one 30 and the 10 fit, the other 30 could not.
        assert sorted(reserved.values()) == [0, 10, 30] and free(stocked) == 0, (results, reserved)


def test_200_concurrent_approvals_and_collections_against_limited_stock(stocked):
    """200 requests approved and collected at once against 40 + 260 cards: no card goes to two requests, counts add up."""
    import random

    from cardmgmt.context import Actor, Context
    from cardmgmt.db import Database

    stocked.stocked_batch("B2", 260)
    rng = random.Random(5)
    quantities = [rng.randint(1, 3) for _ in range(200)]  # about 400 wanted, 300 there
    rids = [file(stocked, q) for q in quantities]
    postgres = stocked.system.db.engine.dialect.name == "postgresql"
    db = Database(stocked.system.settings.database_url, pool_size=40) if postgres else stocked.system.db
    keys = stocked.system.keys()

    def job(rid):
        def run():
            # Signed in as the CLI would be (sign-in itself is not what races here).
            with db.transaction() as s:
                issuing.decide(Context(s, keys, Actor("bob", Role.FINANCE)), rid, approve=True, comment="ok")
            with db.transaction() as s:
                return sum(n for _, _, n in issuing.collect(Context(s, keys, Actor("alice", Role.ADMIN)), rid))
        return run

    try:
        results = _race(stocked, [job(r) for r in rids])
    finally:
        if postgres:
            db.dispose()
    with stocked.system.db.transaction() as s:
        status = {r: issuing.get(s, r).status for r in rids}
        per_request = dict(s.execute(select(Card.issue_request_id, func.count()).where(Card.issue_request_id.is_not(None))
                                     .group_by(Card.issue_request_id)).all())
        states = dict(s.execute(select(Card.state, func.count()).group_by(Card.state)).all())
    want = dict(zip(rids, quantities, strict=True))
    for r in rids:
        if status[r] in ("approved", "collected"):
            assert per_request.get(r) == want[r], f"request {r} holds exactly its cards"
        else:
            assert status[r] == "pending" and r not in per_request
    collected = sum(want[r] for r in rids if status[r] == "collected")
    reserved = sum(want[r] for r in rids if status[r] == "approved")
    assert states.get("issued", 0) == collected
    assert states.get("in_stock", 0) == 300 - collected and sum(states.values()) == 300
    assert free(stocked) == 300 - collected - reserved
    if postgres:
        refused = [q for q, res in zip(quantities, results, strict=True) if isinstance(res, Exception)]
        assert all(isinstance(res, int | InsufficientStock) for res in results), [r for r in results if not isinstance(r, int)][:5]
        assert reserved == 0, "every approval that succeeded was collected"
        assert refused and all(q > free(stocked) for q in refused), "refused only for want of stock"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite has a single writer anyway
def test_an_approval_waits_for_one_under_way_instead_of_passing_its_cards_over(stocked):
    """An approval that is going to fail must not make a concurrent one that fits fail too (PostgreSQL)."""
    import time

    from sqlalchemy import text

    rid = file(stocked, 40)
    outcome: list[object] = []

    def approve_in_thread():
        try:
            outcome.append(approve(stocked, rid).status)
        except Exception as e:
            outcome.append(e)

    class Undo(Exception):
        pass

    with pytest.raises(Undo), stocked.system.db.transaction() as s:
        # Another approval of 50-yuan cards, half way through: its lock taken, every free card picked and locked.
        s.execute(text("SELECT pg_advisory_xact_lock(:k, :v)"), {"k": issuing.RESERVE_LOCK, "v": 5000})
        s.execute(select(Card.id).with_for_update()).all()
        thread = threading.Thread(target=approve_in_thread)
        thread.start()
        deadline = time.monotonic() + 60
        waiting = 0
        while not waiting and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.05)
            waiting = s.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND wait_event_type = 'Lock' AND wait_event = 'advisory'")).scalar_one()
        assert waiting == 1, f"the approval should queue behind the one under way: {outcome}"
        raise Undo  # that approval fails and rolls back, releasing its cards
    thread.join()
    assert outcome == ["approved"] and len(carried(stocked, rid)) == 40
