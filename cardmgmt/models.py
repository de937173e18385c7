"""The card database's tables, declared once; Alembic revisions are written from these.

Money columns are integer fen.  Timestamps are UTC.  A card row holds only
the keyed hash of its PIN, never the PIN.  Large per-card changes are made
with set-based ``UPDATE`` statements, so the operation log records them by
batch, box or serial range rather than one entry per card.
"""

# test-case-name: tests.cardmgmt.test_models

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cardmgmt.days import business_day

# SQLite only auto-numbers an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    pass


class Setting(Base):
    """Installation-wide facts, such as the fingerprint of the master key in use."""

    __tablename__ = "settings"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class Counter(Base):
    """Named sequences handed out in blocks (the global card serial sequence)."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class Operator(Base):
    __tablename__ = "operators"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Factory(Base):
    """A card factory and the RSA public key its files are sealed for and signed with."""

    __tablename__ = "factories"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    public_key_pem: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(32))
    registered_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Hall(Base):
    """A business hall (营业厅) that sells cards."""

    __tablename__ = "halls"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))


class Batch(Base):
    """One manufacturing order (制卡批次)."""

    __tablename__ = "batches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_no: Mapped[str] = mapped_column(String(32), unique=True)
    face_value: Mapped[int] = mapped_column(BigInteger)
    quantity: Mapped[int] = mapped_column(Integer)
    box_size: Mapped[int] = mapped_column(Integer)
    expiry: Mapped[dt.date] = mapped_column(Date)
    first_serial: Mapped[str] = mapped_column(String(12), unique=True)
    last_serial: Mapped[str] = mapped_column(String(12), unique=True)
    factory_id: Mapped[int] = mapped_column(ForeignKey("factories.id"))
    new_card_digest: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Card(Base):
    __tablename__ = "cards"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    serial: Mapped[str] = mapped_column(String(12), unique=True)
    box_no: Mapped[int] = mapped_column(Integer)
    # HMAC-SHA256 of the PIN under the installation's PIN key; unique, so two
    # cards can never share a PIN.
    pin_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    state: Mapped[str] = mapped_column(String(16))
    prior_state: Mapped[str | None] = mapped_column(String(16))
    hall_id: Mapped[int | None] = mapped_column(ForeignKey("halls.id"))
    issue_request_id: Mapped[int | None] = mapped_column(ForeignKey("issue_requests.id"))
    # A quote holds the card for one call until hold_until; the hold is only
    # honoured while it is in the future, so an expired hold needs no clean-up
    # to stop counting.
    hold_key: Mapped[str | None] = mapped_column(String(80))
    hold_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    # No index contains ``state`` (or the hold columns), and PostgreSQL leaves
    # half of each page free: a state change (a million cards checked at once,
    # a quote's hold) is then a heap-only update that writes no index entries.
    # See migration 0003 and bench/RESULTS.md.
    __table_args__ = (
        Index("ix_cards_batch_box", "batch_id", "box_no"),
        {"postgresql_with": {"fillfactor": 50}},
    )


class FactoryFile(Base):
    """A post-production file that passed verification and was checked against its batch."""

    __tablename__ = "factory_files"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    # The same file can never be imported twice.
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    file_name: Mapped[str] = mapped_column(String(256))
    summary: Mapped[str] = mapped_column(Text)  # JSON: counts by finding kind
    checked_by: Mapped[str] = mapped_column(String(64))
    checked_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CheckFinding(Base):
    """One discrepancy found by a file check (matched cards are not listed one by one)."""

    __tablename__ = "check_findings"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("factory_files.id"), index=True)
    serial: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(String(256))


class Intake(Base):
    """One stock intake (入库): a run of serials of one batch (and box) taken into stock."""

    __tablename__ = "intakes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    box_no: Mapped[int | None] = mapped_column(Integer)
    first_serial: Mapped[str] = mapped_column(String(12))
    last_serial: Mapped[str] = mapped_column(String(12))
    quantity: Mapped[int] = mapped_column(Integer)
    operator: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StockCount(Base):
    """One stock count (库存盘点) of a box or serial range."""

    __tablename__ = "stock_counts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(128))
    expected: Mapped[int] = mapped_column(Integer)
    counted: Mapped[int] = mapped_column(Integer)
    missing: Mapped[int] = mapped_column(Integer)
    unexpected: Mapped[int] = mapped_column(Integer)
    operator: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StockCountFinding(Base):
    __tablename__ = "stock_count_findings"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    count_id: Mapped[int] = mapped_column(ForeignKey("stock_counts.id"), index=True)
    serial: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(String(256))


class IssueRequest(Base):
    """A request to take cards out of stock for a hall (领卡申请), and its decision."""

    __tablename__ = "issue_requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    face_value: Mapped[int] = mapped_column(BigInteger)
    quantity: Mapped[int] = mapped_column(Integer)
    hall_id: Mapped[int] = mapped_column(ForeignKey("halls.id"))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(256))
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    decision_comment: Mapped[str | None] = mapped_column(String(256))
    collected_by: Mapped[str | None] = mapped_column(String(64))
    collected_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class LogEntry(Base):
    """The operation log: a keyed hash chain, so any edit, insertion or deletion shows."""

    __tablename__ = "operation_log"
    # Assigned as previous + 1, so two writers can never both extend the same tip.
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(32))
    operator: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    object: Mapped[str] = mapped_column(String(256))
    before: Mapped[str] = mapped_column(Text)
    after: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Quote(Base):
    """A recharge in progress: the card a call's PIN named, held for that call (one per recharge key)."""

    __tablename__ = "recharge_quotes"
    # "<call id>#<n>": the n-th card of one call; the idempotency key of quote and commit
    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    call_id: Mapped[str] = mapped_column(String(64), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    # the channel client (cardmgmt.channel_clients) whose signed request made it; NULL before revision 0005
    client: Mapped[str | None] = mapped_column(String(64))
    caller: Mapped[str] = mapped_column(String(32))
    account_no: Mapped[str] = mapped_column(String(10))
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))  # held | committed | cancelled | expired
    hold_until: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Recharge(Base):
    """The recharge business detail (充值业务明细), and the outbox row that posts it to marketing."""

    __tablename__ = "recharges"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(80), unique=True)
    call_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    client: Mapped[str | None] = mapped_column(String(64))  # as on its quote
    caller: Mapped[str] = mapped_column(String(32))
    # unique: a card is redeemed once, whatever happens
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"), unique=True)
    card_serial: Mapped[str] = mapped_column(String(12))
    account_no: Mapped[str] = mapped_column(String(10), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    committed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    # outbox: pending -> posted, or rejected (needs a person); ix_recharges_due serves the drain
    post_status: Mapped[str] = mapped_column(String(16), default="pending")
    post_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    posted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(256))

    __table_args__ = (Index("ix_recharges_due", "post_status", "next_attempt_at", "id"),)

    @property
    def ref(self) -> str:
        return recharge_ref(self.committed_at, self.id)


def recharge_ref(committed_at: dt.datetime, recharge_id: int) -> str:
    """The reference number a caller hears: business day (yymmdd) and the recharge record's number."""
    return f"{business_day(committed_at):%y%m%d}{recharge_id:08d}"


class PinFailure(Base):
    """One wrong PIN, counted for lockouts by caller number and by account."""

    __tablename__ = "pin_failures"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    caller: Mapped[str] = mapped_column(String(32), index=True)
    account_no: Mapped[str] = mapped_column(String(10), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    cleared_by: Mapped[str | None] = mapped_column(String(64))


class Lease(Base):
    """Leadership among the recharge servers: one holder at a time, with a fencing token."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    token: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ServerHeartbeat(Base):
    """Each recharge server's last sign of life, for `ha status`."""

    __tablename__ = "server_heartbeats"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    detail: Mapped[str] = mapped_column(Text, default="{}")


class RequestNonce(Base):
    """Nonces of signed API requests already seen by either server, so none is accepted twice."""

    __tablename__ = "request_nonces"
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


class ChannelClient(Base):
    """A registered channel client (the hotline, a POS terminal, a partner); its key is derived, never stored."""

    __tablename__ = "channel_clients"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    channel: Mapped[str] = mapped_column(String(16))  # hotline | pos | web | partner
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(200))
