"""A whole card life through the services, on SQLite and PostgreSQL."""

from cardmgmt import issuing
from cardmgmt.context import Permission


def test_card_life(bench):
    bench.stocked_batch("B1", 40)
    bench.add_hall()
    rid = bench.approved_request(15)
    with bench.unit() as ctx:
        runs = issuing.collect(ctx, rid)
    assert sum(n for _, _, n in runs) == 15
    assert bench.states("B1") == {"issued": 15, "in_stock": 25}
    with bench.unit(Permission.VERIFY_LOG) as ctx:
        from cardmgmt import audit
        assert audit.verify(ctx.session, ctx.keys.audit_key).ok
