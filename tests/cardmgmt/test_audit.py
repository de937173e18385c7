"""The operation log's hash chain finds edited, inserted and deleted entries (real databases)."""

import pytest
from sqlalchemy import delete, select, update

from cardmgmt import audit
from cardmgmt.models import LogEntry, Setting
from cardmgmt.operators import Permission


def _fill(system, n=5):
    for i in range(n):
        with system.unit(Permission.MANAGE_CARDS) as ctx:
            ctx.log("test.action", f"object {i}", before={"i": i}, after={"i": i + 1})


def _verify(system):
    with system.unit(Permission.VERIFY_LOG) as ctx:
        return audit.verify(ctx.session, ctx.keys.audit_key)


def _tamper(system, stmt):
    with system.db.transaction() as s:
        s.execute(stmt)


def test_intact_chain(system):
    _fill(system)
    result = _verify(system)
    assert result.ok and result.entries == 6  # the installation's own entry plus five


def test_edited_entry(system):
    _fill(system)
    _tamper(system, update(LogEntry).where(LogEntry.seq == 3).values(operator="mallory"))
    assert _verify(system).problems == ["entry 3 (test.action) has been altered"]


def test_deleted_entry(system):
    _fill(system)
    _tamper(system, delete(LogEntry).where(LogEntry.seq == 3))
    problems = _verify(system).problems
    assert "entries 3..3 are missing (deleted)" in problems


def test_deleted_tail(system):
    _fill(system)
    _tamper(system, delete(LogEntry).where(LogEntry.seq == 6))
    assert any("entries deleted" in p for p in _verify(system).problems)


def test_inserted_entry(system):
    _fill(system)
    with system.db.transaction() as s:
        rows = s.execute(select(LogEntry).where(LogEntry.seq >= 4).order_by(LogEntry.seq.desc())).scalars().all()
        for e in rows:  # shift entries up to make room, as an attacker would
            e.seq += 1
            s.flush()
        fake = LogEntry(seq=4, at="2026-01-01T00:00:00", operator="mallory", action="card.void", object="x",
                        before="{}", after="{}", prev_hash=rows[-1].prev_hash, hash="0" * 64)
        s.add(fake)
    problems = _verify(system).problems
    assert any("entry 4" in p for p in problems)


def test_head_record_altered(system):
    _fill(system)
    _tamper(system, update(Setting).where(Setting.name == audit.HEAD_SETTING).values(value="6:" + "0" * 64))
    assert _verify(system).problems == ["the log's head record has been altered"]


def test_a_failed_unit_leaves_no_entry(system):
    with pytest.raises(RuntimeError), system.unit(Permission.MANAGE_CARDS) as ctx:
        ctx.log("test.action", "doomed")
        raise RuntimeError("boom")
    assert _verify(system).entries == 1
