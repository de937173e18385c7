"""``cardmgmt.terminals.SalesPoint``: a POS terminal's sale without HTTP, on SQLite and PostgreSQL.

The HTTP side (signing, the gate, the races through the server) is in
``tests/recharge_server/test_sales_api.py``.
"""

import json
from typing import Any

import pytest
from sqlalchemy import select

from cardmgmt import audit, stock
from cardmgmt.channel_clients import ClientRevoked, UnknownClient
from cardmgmt.errors import PermissionDenied
from cardmgmt.models import LogEntry, Sale
from cardmgmt.nonces import Replayed
from cardmgmt.terminals import SalesPoint
from testkit.lifecycle import issued_batch
from testkit.pos import revoke, terminal


@pytest.fixture
def point(bench: Any) -> Any:
    serials = sorted(issued_batch(bench, "B1", 20))
    bench.add_hall("H02")
    terminal(bench, "pos-h01", "H01")
    settings = bench.system.settings
    return bench, serials, SalesPoint(bench.system.db, bench.system.keys(), settings.audit_anchor_file)


def test_a_sale_is_the_terminals_logged_and_anchored(point: Any) -> None:
    bench, serials, sp = point
    done = sp.sell(terminal="pos-h01", key="k1", selection=stock.Selection(batch_no="B1", box_no=1), nonce="a" * 32)
    assert (done["cards"], done["amount"], done["hall"], done["repeated"]) == (10, 50_000, "H01", False)
    with bench.system.db.transaction() as s:
        sale = s.scalars(select(Sale)).one()
        entry = s.scalars(select(LogEntry).order_by(LogEntry.seq.desc()).limit(1)).one()
        report = audit.verify_installation(s, bench.system.keys(), bench.system.settings.audit_anchor_file)
    assert (sale.channel, sale.seller, sale.key) == ("pos", "pos-h01", "k1")
    assert entry.operator == "pos-h01" and entry.action == "card.sell" and json.loads(entry.after)["channel"] == "pos"
    assert report.ok, report.problems
    again = sp.sell(terminal="pos-h01", key="k1", selection=stock.Selection(batch_no="B1", box_no=1))
    assert again == done | {"repeated": True}


@pytest.mark.parametrize(
    ("who", "error"),
    [("pos-h02", None), ("pos-gone", ClientRevoked), ("partner-x", PermissionDenied), ("pos-none", PermissionDenied),
     ("nobody", UnknownClient)],
)
def test_who_may_not_sell_here_changes_nothing(point: Any, who: str, error: Any) -> None:
    bench, serials, sp = point
    terminal(bench, "pos-h02", "H02")
    terminal(bench, "pos-gone", "H01")
    revoke(bench, "pos-gone")
    terminal(bench, "partner-x", None, channel="partner")
    terminal(bench, "pos-none", None)
    with pytest.raises(error or PermissionDenied, match="another hall" if error is None else None):
        sp.sell(terminal=who, key=f"k-{who}", selection=stock.Selection.serial(serials[0]))
    assert bench.states("B1") == {"issued": 20}


def test_a_nonce_is_accepted_once(point: Any) -> None:
    bench, serials, sp = point
    sp.sell(terminal="pos-h01", key="k1", selection=stock.Selection.serial(serials[0]), nonce="b" * 32)
    with pytest.raises(Replayed):
        sp.sell(terminal="pos-h01", key="k2", selection=stock.Selection.serial(serials[1]), nonce="b" * 32)
    assert bench.states("B1") == {"issued": 19, "sold": 1}
