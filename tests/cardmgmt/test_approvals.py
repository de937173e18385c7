"""``approvals.why_not`` agrees with ``issuing.decide``: what the console offers is exactly what the service allows."""

import pytest

from cardmgmt import approvals, issuing
from cardmgmt.context import Actor, Permission, Role
from cardmgmt.errors import CardError
from testkit.install import PASSWORDS


@pytest.mark.parametrize("who, role", [("alice", Role.ADMIN), ("bob", Role.FINANCE), ("carol", Role.AUDITOR)])
def test_why_not_agrees_with_decide(bench, who, role):
    if who == "carol":
        bench.add_operator("carol", Role.AUDITOR)
    bench.stocked_batch("B1", 10)
    bench.add_hall("H01")
    with bench.unit() as ctx:
        pending = issuing.file_request(ctx, face_value=5000, quantity=1, hall_code="H01", reason="r").id
        decided = issuing.file_request(ctx, face_value=5000, quantity=1, hall_code="H01", reason="r").id
    with bench.unit(Permission.DECIDE_REQUESTS, who="bob") as ctx:
        issuing.decide(ctx, decided, approve=False, comment="no")
    assert PASSWORDS[who]
    actor = Actor(who, role)
    for rid in (pending, decided):
        with bench.system.db.transaction() as s:
            why = approvals.why_not(actor, issuing.get(s, rid))
        allowed = True
        try:
            with bench.as_(who).unit(Permission.VIEW) as ctx:
                issuing.decide(ctx, rid, approve=True, comment="c")
                raise _Undo
        except _Undo:
            pass
        except CardError:
            allowed = False
        assert (why is None) == allowed, (who, rid, why)
    expected = {"alice": approvals.NotDecidable.OWN, "carol": approvals.NotDecidable.ROLE, "bob": None}[who]
    with bench.system.db.transaction() as s:
        assert approvals.why_not(actor, issuing.get(s, pending)) == expected


class _Undo(Exception):
    """Rolls the trial decision back."""
