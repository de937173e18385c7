"""The operation log (操作日志): who did what, when, to which object, before and after.

Entries form a hash chain keyed with the installation's audit key: each
entry's ``hash`` is an HMAC over its own fields and the previous entry's
hash.  Editing an entry breaks its hash; inserting or deleting one breaks the
sequence and the chain; and the newest entry is vouched for by a separately
keyed head record, so cutting entries off the end shows too.  Without the key
in the key directory nobody can rebuild a consistent chain after tampering.

Appends are serialised by the database: ``seq`` is the primary key and is
always the previous ``seq`` plus one, and on PostgreSQL an advisory lock makes
concurrent writers queue rather than fail.
"""

# test-case-name: tests.cardmgmt.test_audit

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from cardmgmt.db import is_postgresql
from cardmgmt.models import LogEntry, Setting

GENESIS = "0" * 64
HEAD_SETTING = "operation_log_head"
ADVISORY_LOCK_ID = 0x52434C4F47  # "RCLOG"


def _canonical(value: Mapping[str, Any] | None) -> str:
    return json.dumps(value or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _entry_hash(key: bytes, e: LogEntry) -> str:
    fields = [e.seq, e.at, e.operator, e.action, e.object, e.before, e.after, e.prev_hash]
    return hmac.new(key, _canonical({"f": fields}).encode(), hashlib.sha256).hexdigest()


def _head_mac(key: bytes, seq: int, entry_hash: str) -> str:
    return hmac.new(key, f"head:{seq}:{entry_hash}".encode(), hashlib.sha256).hexdigest()


def record(
    session: Session,
    key: bytes,
    operator: str,
    action: str,
    obj: str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> LogEntry:
    """Append one entry in the caller's transaction, so it commits or rolls back with the change."""
    if is_postgresql(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_ID})
    tip = session.execute(select(LogEntry.seq, LogEntry.hash).order_by(LogEntry.seq.desc()).limit(1)).first()
    seq, prev = (tip[0] + 1, tip[1]) if tip else (1, GENESIS)
    entry = LogEntry(
        seq=seq,
        at=dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
        operator=operator,
        action=action,
        object=obj[:256],
        before=_canonical(before),
        after=_canonical(after),
        prev_hash=prev,
    )
    entry.hash = _entry_hash(key, entry)
    session.add(entry)
    head = session.get(Setting, HEAD_SETTING)
    value = f"{seq}:{_head_mac(key, seq, entry.hash)}"
    if head is None:
        session.add(Setting(name=HEAD_SETTING, value=value))
    else:
        head.value = value
    session.flush()
    return entry


@dataclass
class Verification:
    """What ``verify`` found: ``ok`` only when ``problems`` is empty."""

    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(session: Session, key: bytes, max_problems: int = 50) -> Verification:
    """Walk the whole chain and report every edited, inserted or deleted entry."""
    result = Verification()
    expected_seq, prev = 1, GENESIS
    rows = session.execute(select(LogEntry).order_by(LogEntry.seq).execution_options(yield_per=5000)).scalars()
    for e in rows:
        result.entries += 1
        if e.seq != expected_seq:
            result.problems.append(f"entries {expected_seq}..{e.seq - 1} are missing (deleted)")
        elif e.prev_hash != prev:
            result.problems.append(f"entry {e.seq} does not follow entry {e.seq - 1} (inserted or replaced)")
        if _entry_hash(key, e) != e.hash:
            result.problems.append(f"entry {e.seq} ({e.action}) has been altered")
        expected_seq, prev = e.seq + 1, e.hash
        result.head_seq, result.head_hash = e.seq, e.hash
        if len(result.problems) >= max_problems:
            result.problems.append("too many problems; stopped")
            return result
    head = session.get(Setting, HEAD_SETTING)
    if head is None:
        if result.entries:
            result.problems.append("the log's head record is missing")
    else:
        seq_text, _, mac = head.value.partition(":")
        if not seq_text.isdigit() or int(seq_text) != result.head_seq:
            result.problems.append(f"the log should end at entry {seq_text}, but ends at {result.head_seq} (entries deleted)")
        elif not hmac.compare_digest(mac, _head_mac(key, result.head_seq, result.head_hash)):
            result.problems.append("the log's head record has been altered")
    return result


def entries(session: Session, limit: int = 50, action: str | None = None) -> list[LogEntry]:
    """The newest entries, newest first."""
    q = select(LogEntry).order_by(LogEntry.seq.desc()).limit(limit)
    if action:
        q = q.where(LogEntry.action == action)
    return list(session.execute(q).scalars())


def count(session: Session) -> int:
    return session.execute(select(func.count()).select_from(LogEntry)).scalar_one()
