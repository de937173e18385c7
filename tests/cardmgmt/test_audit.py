"""The operation log's hash chain finds edited, inserted and deleted entries (real databases)."""

import pytest
from sqlalchemy import delete, select, update

from cardmgmt import audit
from cardmgmt.context import Permission
from cardmgmt.models import LogEntry, Setting


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


# --- the head anchored outside the database ------------------------------------------


def _verify_installation(system):
    with system.unit(Permission.VERIFY_LOG) as ctx:
        return audit.verify_installation(ctx.session, ctx.keys, system.settings.audit_anchor_file)


def test_each_committed_unit_that_logs_anchors_its_head(system):
    _fill(system, 3)
    lines = system.settings.audit_anchor_file.read_text().splitlines()
    assert [int(line.split()[0]) for line in lines] == [1, 2, 3, 4]
    assert system.settings.audit_anchor_file.stat().st_mode & 0o777 == 0o600
    result = _verify_installation(system)
    assert result.ok, result.problems


def test_a_unit_that_logs_nothing_or_fails_anchors_nothing(system):
    with system.unit(Permission.MANAGE_CARDS):
        pass
    with pytest.raises(RuntimeError), system.unit(Permission.MANAGE_CARDS) as ctx:
        ctx.log("test.action", "doomed")
        raise RuntimeError("boom")
    assert len(system.settings.audit_anchor_file.read_text().splitlines()) == 1
    assert _verify_installation(system).ok


def test_a_wiped_log_fails(system):
    _fill(system)
    _tamper(system, delete(LogEntry))
    _tamper(system, delete(Setting).where(Setting.name == audit.HEAD_SETTING))
    problems = _verify_installation(system).problems
    assert any("the log is empty" in p for p in problems)
    assert any("entry 6 was anchored" in p for p in problems)
    # Even with no anchors at all, an empty log is never called intact.
    with system.unit(Permission.VERIFY_LOG) as ctx:
        assert not audit.verify(ctx.session, ctx.keys.audit_key).ok


def test_a_rolled_back_log_fails(system):
    """Entries 5 and 6 deleted and the head record of entry 4 put back, as a restored old copy would be."""
    _fill(system, 3)
    with system.db.transaction() as s:
        old_head = s.get(Setting, audit.HEAD_SETTING).value
    _fill(system, 2)
    _tamper(system, delete(LogEntry).where(LogEntry.seq >= 5))
    _tamper(system, update(Setting).where(Setting.name == audit.HEAD_SETTING).values(value=old_head))
    with system.unit(Permission.VERIFY_LOG) as ctx:
        assert audit.verify(ctx.session, ctx.keys.audit_key).ok, "the database alone cannot tell"
    problems = _verify_installation(system).problems
    assert len(problems) == 1 and "the log ends at entry 4, but entry 6 was anchored" in problems[0]


def test_a_replaced_tail_fails(system):
    """The newest entry replaced by one chained with the key (an insider holding it): its hash differs from the anchor."""
    _fill(system, 2)
    with system.db.transaction() as s:
        s.execute(delete(LogEntry).where(LogEntry.seq == 3))
    with system.unit(Permission.MANAGE_CARDS) as ctx:
        # written with the key, but not anchored: as if the anchor write were skipped
        audit.record(ctx.session, ctx.keys.audit_key, "alice", "test.action", "replacement")
    problems = _verify_installation(system).problems
    assert any("entry 3 is not the one anchored" in p for p in problems)


def test_a_missing_or_forged_anchor_file_fails(system):
    _fill(system, 2)
    anchor_file = system.settings.audit_anchor_file
    good = anchor_file.read_text()
    anchor_file.unlink()
    assert any("anchor file" in p and "missing" in p for p in _verify_installation(system).problems)
    seq, entry_hash, at, sig = good.splitlines()[-1].split()
    anchor_file.write_text(good + f"9 {entry_hash} {at} {sig}\n")  # a line whose signature does not match
    problems = _verify_installation(system).problems
    assert problems == [f"line 4 of the anchor file {anchor_file} is not a valid signed anchor"]


def test_initialising_beside_another_logs_anchors_is_refused(database_url, key_dir):
    from cardmgmt.errors import PermissionDenied
    from cardmgmt.system import CardSystem
    from testkit.install import PASSWORDS, settings_for

    s = CardSystem(settings_for(database_url, key_dir, "alice"))
    s.settings.audit_anchor_file.write_text("1 00 2026-01-01T00:00:00+00:00 AA==\n")
    try:
        with pytest.raises(PermissionDenied, match="move it away"):
            s.initialise("alice", PASSWORDS["alice"])
    finally:
        s.close()
