"""Issue requests, finance approval and collection (real databases; the race runs on both)."""

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from cardmgmt import issuing
from cardmgmt.errors import (
    ConflictError,
    IllegalTransition,
    InsufficientStock,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from cardmgmt.models import Card
from cardmgmt.operators import Permission, Role
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
