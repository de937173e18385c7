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

Everything above lives in the card database, so whoever can write that
database could still wipe the log or put back an older copy of it, head
record and all.  So the head is also *anchored outside it*: after each unit of
work that logged something commits, a line naming the newest entry (its
number and hash) is signed with the system's RSA key and appended to an
anchor file on the host that did the work (``Settings.audit_anchor_file``,
owner-only, append-only; ``chattr +a`` makes it so for root too).  ``verify``
then refuses an empty log, and a log that ends before, or differs at, any
anchored entry: truncation and rollback show.  The anchor is written after
the commit, so a crash in between leaves the anchor one entry behind (never
ahead), which only weakens the check for that entry.
"""

# test-case-name: tests.cardmgmt.test_audit

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from Crypto.Hash import SHA256
from Crypto.PublicKey.RSA import RsaKey
from Crypto.Signature import pss
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from cardmgmt.db import is_postgresql
from cardmgmt.keys import KeyRing
from cardmgmt.models import LogEntry, Setting

GENESIS = "0" * 64
ANCHOR_LABEL = "recharge-card/operation-log-anchor/v1"
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


@dataclass(frozen=True)
class Anchor:
    """A signed statement, kept outside the database, that the log reached entry ``seq`` with ``hash``."""

    seq: int
    hash: str
    at: str


def _anchor_message(fingerprint: str, seq: int, entry_hash: str, at: str) -> SHA256.SHA256Hash:
    # The installation's key fingerprint is signed too, so an anchor file of
    # another installation with the same system key cannot stand in.
    return SHA256.new(f"{ANCHOR_LABEL}:{fingerprint}:{seq}:{entry_hash}:{at}".encode())


def anchor(path: Path, system_key: RsaKey, fingerprint: str, seq: int, entry_hash: str) -> None:
    """Append a signed line saying the log reached entry ``seq`` with ``entry_hash``.

    One ``write`` on a file opened for appending, so lines from several
    processes on one host never interleave.
    """
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    sig = pss.new(system_key).sign(_anchor_message(fingerprint, seq, entry_hash, at))
    line = f"{seq} {entry_hash} {at} {base64.b64encode(sig).decode()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_anchors(path: Path, public_key: RsaKey, fingerprint: str) -> tuple[list[Anchor], list[str]]:
    """The anchors in ``path`` whose signatures hold, and a problem for each line that does not."""
    anchors: list[Anchor] = []
    problems: list[str] = []
    verifier = pss.new(public_key)
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            parts = raw.decode("ascii", "replace").split()
            try:
                seq_text, entry_hash, at, sig = parts
                seq = int(seq_text)
                verifier.verify(_anchor_message(fingerprint, seq, entry_hash, at), base64.b64decode(sig, validate=True))
            except (ValueError, binascii.Error):
                problems.append(f"line {n} of the anchor file {path} is not a valid signed anchor")
                continue
            anchors.append(Anchor(seq, entry_hash, at))
    return anchors, problems


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


def verify(
    session: Session, key: bytes, anchors: Sequence[Anchor] = (), max_problems: int = 50
) -> Verification:
    """Walk the whole chain and report every edited, inserted or deleted entry.

    ``anchors`` are the heads vouched for outside the database
    (``read_anchors``): the chain must reach each of them, with the same hash.
    An empty log is never intact: an installation's log starts when it is
    initialised.
    """
    result = Verification()
    anchored = {a.seq: a for a in anchors}
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
        a = anchored.get(e.seq)
        if a is not None and not hmac.compare_digest(a.hash, e.hash):
            result.problems.append(f"entry {e.seq} is not the one anchored at {a.at} (the log was replaced or rolled back)")
        if len(result.problems) >= max_problems:
            result.problems.append("too many problems; stopped")
            return result
    if result.entries == 0:
        result.problems.append("the log is empty, yet every installation logs its initialisation (wiped)")
    if anchored:
        newest = anchored[max(anchored)]
        if newest.seq > result.head_seq:
            result.problems.append(
                f"the log ends at entry {result.head_seq}, but entry {newest.seq} was anchored at {newest.at} "
                "(entries cut off or the log rolled back)"
            )
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


def verify_installation(session: Session, keys: KeyRing, anchor_file: Path) -> Verification:
    """``verify`` against this host's anchor file: what ``audit verify`` runs.

    A missing anchor file fails the check too, since without it a log cut
    back together with its head record would look intact.
    """
    problems: list[str] = []
    anchors: list[Anchor] = []
    try:
        anchors, problems = read_anchors(anchor_file, keys.system_public, keys.fingerprint)
    except FileNotFoundError:
        problems = [f"the anchor file {anchor_file} is missing, so truncation or rollback cannot be ruled out"]
    result = verify(session, keys.audit_key, anchors)
    result.problems.extend(problems)
    return result


def entries(session: Session, limit: int = 50, action: str | None = None, *, before: int | None = None) -> list[LogEntry]:
    """The newest entries, newest first; with ``before``, only those older than entry ``before`` (the next page)."""
    q = select(LogEntry).order_by(LogEntry.seq.desc()).limit(limit)
    if action:
        q = q.where(LogEntry.action == action)
    if before is not None:
        q = q.where(LogEntry.seq < before)
    return list(session.execute(q).scalars())


def count(session: Session) -> int:
    return session.execute(select(func.count()).select_from(LogEntry)).scalar_one()
