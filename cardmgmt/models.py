"""The card database's tables, declared once; Alembic revisions are written from these.

Money columns are integer fen.  Timestamps are UTC.  A card row holds only
the keyed hash of its PIN, never the PIN.  Large per-card changes are made
with set-based ``UPDATE`` statements, so the operation log records them by
batch, box or serial range rather than one entry per card.
"""

# test-case-name: tests.cardmgmt.test_models

import datetime as dt
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cardmgmt.days import business_day
from cardmgmt.fields import ACCOUNT_DIGITS, CALL_ID_MAX, CALLER_MAX, SERIAL_DIGITS
from cardmgmt.states import CardState, NoticeStatus, PostStatus, QuoteState, RequestStatus, ReversalStatus

# SQLite only auto-numbers an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
BigId = BigInteger().with_variant(Integer(), "sqlite")

STATE_LENGTH = 16


def state_type(enum: type[StrEnum]) -> Enum:
    """A column holding one of ``enum``'s values: VARCHAR(16) in the database, the member in Python.

    Plain VARCHAR (not a PostgreSQL enum type) so the bulk paths that bypass
    the ORM (``COPY``, ``executemany``, Core statements with string
    parameters) keep writing plain strings, and a new value needs only a new
    CHECK constraint.  The constraint itself is declared with ``one_of`` and
    created by a migration, under the same name.
    """
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
        length=STATE_LENGTH,
    )


def one_of(table: str, column: str, enum: type[StrEnum]) -> CheckConstraint:
    """The CHECK constraint ``ck_<table>_<column>`` that limits ``column`` to ``enum``'s values."""
    values = ", ".join(f"'{m.value}'" for m in enum)
    return CheckConstraint(f"{column} IN ({values})", name=f"ck_{table}_{column}")


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
    # An operator's role (cardmgmt.context.OPERATOR_ROLES): never ``terminal``, a POS terminal's.
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Dual control (see operator_requests): an operator waiting for a second
    # administrator's approval exists, so the name is taken, but cannot sign in.
    pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Who asked for this operator, their last re-enabling and their role: none
    # of them may approve what the other asks for (NULL: set up at init).
    created_by: Mapped[str | None] = mapped_column(String(64))
    enabled_by: Mapped[str | None] = mapped_column(String(64))
    role_granted_by: Mapped[str | None] = mapped_column(String(64))
    # A password someone else chose (at approval or reset) works only to choose a new one.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Wrong passwords since failed_since (a window), and the lockout they led to.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed_since: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (CheckConstraint("role IN ('admin', 'finance', 'auditor')", name="ck_operators_role"),)


class Factory(Base):
    """A card factory and the RSA public key its files are sealed for and signed with."""

    __tablename__ = "factories"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    public_key_pem: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(32))
    registered_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class HallLevel(StrEnum):
    """Where a node stands in the sales hierarchy (各级营业厅): a city office, a county office, a hall."""

    CITY = "city"
    COUNTY = "county"
    HALL = "hall"


class Hall(Base):
    """A node of the sales hierarchy: a city or county office, or a business hall (营业厅) that sells cards.

    Only a ``hall`` holds and sells cards; offices above it see their halls'
    stock and sales rolled up (``cardmgmt.halls``).
    """

    __tablename__ = "halls"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    level: Mapped[HallLevel] = mapped_column(state_type(HallLevel), default=HallLevel.HALL, server_default="hall")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("halls.id"), index=True)

    __table_args__ = (one_of("halls", "level", HallLevel),)


class Batch(Base):
    """One manufacturing order (制卡批次)."""

    __tablename__ = "batches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_no: Mapped[str] = mapped_column(String(32), unique=True)
    face_value: Mapped[int] = mapped_column(BigInteger)
    quantity: Mapped[int] = mapped_column(Integer)
    box_size: Mapped[int] = mapped_column(Integer)
    expiry: Mapped[dt.date] = mapped_column(Date)
    first_serial: Mapped[str] = mapped_column(String(SERIAL_DIGITS), unique=True)
    last_serial: Mapped[str] = mapped_column(String(SERIAL_DIGITS), unique=True)
    factory_id: Mapped[int] = mapped_column(ForeignKey("factories.id"))
    new_card_digest: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Card(Base):
    __tablename__ = "cards"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    serial: Mapped[str] = mapped_column(String(SERIAL_DIGITS), unique=True)
    box_no: Mapped[int] = mapped_column(Integer)
    # HMAC-SHA256 of the PIN under the installation's PIN key; unique, so two
    # cards can never share a PIN.
    pin_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    state: Mapped[CardState] = mapped_column(state_type(CardState))
    # The state a frozen card returns to when unfrozen (see cardmgmt.states).
    prior_state: Mapped[CardState | None] = mapped_column(state_type(CardState))
    hall_id: Mapped[int | None] = mapped_column(ForeignKey("halls.id"))
    # The issue request the card belongs to: reserved for it while the card is
    # in stock (approved, not yet collected), issued under it once collected.
    issue_request_id: Mapped[int | None] = mapped_column(ForeignKey("issue_requests.id"))
    # The sale that put the card in a customer's hands (NULL: not sold, or sold before revision 0008).
    sale_id: Mapped[int | None] = mapped_column(ForeignKey("sales.id"))
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
        # An approved request's reserved cards, and a collected one's issued cards (cardmgmt.issuing).
        Index("ix_cards_issue_request", "issue_request_id"),
        one_of("cards", "state", CardState),
        one_of("cards", "prior_state", CardState),
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
    # Why a batch that already had a checked file was checked again (None for its first file).
    recheck_reason: Mapped[str | None] = mapped_column(String(256))


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
    first_serial: Mapped[str] = mapped_column(String(SERIAL_DIGITS))
    last_serial: Mapped[str] = mapped_column(String(SERIAL_DIGITS))
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
    status: Mapped[RequestStatus] = mapped_column(state_type(RequestStatus))
    reason: Mapped[str] = mapped_column(String(256))
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    decision_comment: Mapped[str | None] = mapped_column(String(256))
    collected_by: Mapped[str | None] = mapped_column(String(64))
    collected_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (one_of("issue_requests", "status", RequestStatus),)


class Sale(Base):
    """One sale at a business hall (售卡): a run of serials, all of them issued to that hall, sold at once.

    A single card is a run of one, a box the run of its serials.  ``amount``
    (the sum of the cards' face values, fen) is what the hall owes for it in
    its settlement of ``day`` (the UTC+8 business day of ``sold_at``).
    """

    __tablename__ = "sales"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    hall_id: Mapped[int] = mapped_column(ForeignKey("halls.id"))
    channel: Mapped[str] = mapped_column(String(16))  # counter (an operator at cli.py) | pos (a signed terminal)
    seller: Mapped[str] = mapped_column(String(64))  # the operator's or the terminal's name
    # A terminal's idempotency key: the same key again is the same sale, never a second one.
    key: Mapped[str | None] = mapped_column(String(80), unique=True)
    first_serial: Mapped[str] = mapped_column(String(SERIAL_DIGITS))
    last_serial: Mapped[str] = mapped_column(String(SERIAL_DIGITS))
    quantity: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(BigInteger)
    sold_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    day: Mapped[dt.date] = mapped_column(Date)

    __table_args__ = (Index("ix_sales_hall_day", "hall_id", "day"), Index("ix_sales_day", "day"))


class CardReturn(Base):
    """Unsold cards a hall gave back to the warehouse (退库): a run of serials, back in stock."""

    __tablename__ = "card_returns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hall_id: Mapped[int] = mapped_column(ForeignKey("halls.id"), index=True)
    first_serial: Mapped[str] = mapped_column(String(SERIAL_DIGITS))
    last_serial: Mapped[str] = mapped_column(String(SERIAL_DIGITS))
    quantity: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(BigInteger)  # face value returned, fen
    reason: Mapped[str] = mapped_column(String(256))
    operator: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PaymentKind(StrEnum):
    """A hall payment row: money a hall paid in, or the counter-entry that voids a mistaken one."""

    PAYMENT = "payment"
    VOID = "void"


class HallPayment(Base):
    """Money a hall paid finance for the cards it sold (解交), or a void of such a payment; rows are never changed.

    A payment (``kind`` payment, ``amount`` > 0) is recorded by finance staff
    for a hall and business day with its bank-slip ``reference``.  A mistaken
    payment is corrected by a *void*: a second row (``kind`` void) for the
    same hall and day with the negated amount, the reason in ``note`` and
    ``voids_id`` naming the payment (unique: a payment is voided at most
    once).  ``live_reference`` is the reference while the payment stands:
    unique per hall, so a bank slip counts once, and cleared (the one update
    this table sees; ``reference`` keeps it) when the payment is voided, so
    the slip can be recorded again with the right amount.
    """

    __tablename__ = "hall_payments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    hall_id: Mapped[int] = mapped_column(ForeignKey("halls.id"))
    day: Mapped[dt.date] = mapped_column(Date)
    kind: Mapped[PaymentKind] = mapped_column(state_type(PaymentKind))
    amount: Mapped[int] = mapped_column(BigInteger)  # fen; negative for a void
    reference: Mapped[str] = mapped_column(String(64))
    live_reference: Mapped[str | None] = mapped_column(String(64))
    voids_id: Mapped[int | None] = mapped_column(ForeignKey("hall_payments.id"), unique=True)
    note: Mapped[str | None] = mapped_column(String(256))
    recorded_by: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        Index("ix_hall_payments_hall_day", "hall_id", "day"),
        Index("ix_hall_payments_day", "day"),
        Index("uq_hall_payments_live_reference", "hall_id", "live_reference", unique=True),
        one_of("hall_payments", "kind", PaymentKind),
        CheckConstraint("(kind = 'payment' AND amount > 0) OR (kind = 'void' AND amount < 0)",
                        name="ck_hall_payments_amount_sign"),
    )


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
    call_id: Mapped[str] = mapped_column(String(CALL_ID_MAX), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    # the channel client (cardmgmt.channel_clients) whose signed request made it; NULL before revision 0007
    client: Mapped[str | None] = mapped_column(String(64))
    caller: Mapped[str] = mapped_column(String(CALLER_MAX))
    account_no: Mapped[str] = mapped_column(String(ACCOUNT_DIGITS))
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[QuoteState] = mapped_column(state_type(QuoteState))
    hold_until: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (one_of("recharge_quotes", "state", QuoteState),)


class Recharge(Base):
    """The recharge business detail (充值业务明细), and the outbox row that posts it to marketing."""

    __tablename__ = "recharges"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(80), unique=True)
    call_id: Mapped[str] = mapped_column(String(CALL_ID_MAX))
    channel: Mapped[str] = mapped_column(String(16))
    client: Mapped[str | None] = mapped_column(String(64))  # as on its quote
    caller: Mapped[str] = mapped_column(String(CALLER_MAX))
    # unique: a card is redeemed once, whatever happens
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"), unique=True)
    card_serial: Mapped[str] = mapped_column(String(SERIAL_DIGITS))
    account_no: Mapped[str] = mapped_column(String(ACCOUNT_DIGITS), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    committed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    # outbox: pending -> posted, or rejected (needs a person); ix_recharges_due serves the drain
    post_status: Mapped[PostStatus] = mapped_column(state_type(PostStatus), default=PostStatus.PENDING)
    post_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    posted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(256))

    __table_args__ = (
        Index("ix_recharges_due", "post_status", "next_attempt_at", "id"),
        Index("ix_recharges_posted_at", "posted_at"),  # the backlog hour by hour (reports.hourly)
        one_of("recharges", "post_status", PostStatus),
    )

    @property
    def ref(self) -> str:
        return recharge_ref(self.committed_at, self.id)


class DayClose(Base):
    """A business day whose recharges are summed into ``recharge_days`` (``reports.close_days``), closed once."""

    __tablename__ = "day_closes"
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    closed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class RechargeDay(Base):
    """A closed business day's recharges on one channel: how many and their fen, read by the reports instead of the day's rows."""

    __tablename__ = "recharge_days"
    day: Mapped[dt.date] = mapped_column(ForeignKey("day_closes.day"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    recharges: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)


def recharge_ref(committed_at: dt.datetime, recharge_id: int) -> str:
    """The reference number a caller hears: business day (yymmdd) and the recharge record's number."""
    return f"{business_day(committed_at):%y%m%d}{recharge_id:08d}"


class SmsNotice(Base):
    """The SMS notice (短信告知) of one posting the marketing system acknowledged, and its outbox state.

    Written in the card-database transaction that marks the posting done, at
    most once per posting (``posting_ref`` unique), then handed to the SMS
    platform by ``marketing_iface.sms`` until it is acknowledged.
    """

    __tablename__ = "sms_notices"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # the posting's reference (a recharge's or a reversal's); also the message's reference on the SMS side
    posting_ref: Mapped[str] = mapped_column(String(24), unique=True)
    recharge_id: Mapped[int | None] = mapped_column(ForeignKey("recharges.id"), unique=True)  # None: a reversal
    account_no: Mapped[str] = mapped_column(String(ACCOUNT_DIGITS))
    phone: Mapped[str | None] = mapped_column(String(32))  # None: the marketing system has none (skipped)
    text: Mapped[str] = mapped_column(String(500))
    # pending -> sent, or skipped (no phone) / rejected (needs a person); ix_sms_notices_due serves the drain
    status: Mapped[NoticeStatus] = mapped_column(state_type(NoticeStatus), default=NoticeStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(256))  # for skipped: why

    __table_args__ = (
        Index("ix_sms_notices_due", "status", "next_attempt_at", "id"),
        one_of("sms_notices", "status", NoticeStatus),
    )


# A posting's reference must fit the marketing interface table's recharge_ref column.
POSTING_REF_MAX = 24


class Reversal(Base):
    """A reversal (冲正) of one recharge: filed, decided by finance, then posted as a counter-entry.

    At most one per recharge (unique ``recharge_id``).  The original's
    account, card, channel and amount are copied at filing (a recharge
    record never changes), so the counter-entry can be posted from this
    row alone: ``-amount`` to ``account_no``, naming ``original_ref``.  Its
    own reference is the original's with ``R`` appended.  The outbox
    columns are those of ``recharges``; ``post_status`` is NULL until
    finance approves (nothing to post), and the drain posts it only once
    its original is ``posted``.
    """

    __tablename__ = "reversals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ref: Mapped[str] = mapped_column(String(POSTING_REF_MAX), unique=True)
    recharge_id: Mapped[int] = mapped_column(ForeignKey("recharges.id"), unique=True)
    original_ref: Mapped[str] = mapped_column(String(POSTING_REF_MAX))
    account_no: Mapped[str] = mapped_column(String(ACCOUNT_DIGITS))
    card_serial: Mapped[str] = mapped_column(String(SERIAL_DIGITS))
    channel: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)  # the original's amount, fen (> 0); the posting debits it
    status: Mapped[ReversalStatus] = mapped_column(state_type(ReversalStatus))
    reason: Mapped[str] = mapped_column(String(256))
    filed_by: Mapped[str] = mapped_column(String(64))
    filed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(64))
    # For an approved reversal, also the counter-entry's time (its recharged_at, its business day).
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    decision_comment: Mapped[str | None] = mapped_column(String(256))
    post_status: Mapped[PostStatus | None] = mapped_column(state_type(PostStatus))
    post_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    posted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(256))

    __table_args__ = (
        Index("ix_reversals_due", "post_status", "next_attempt_at", "id"),
        one_of("reversals", "status", ReversalStatus),
        one_of("reversals", "post_status", PostStatus),
    )


def reversal_ref(original_ref: str) -> str:
    """A reversal's reference: its original's with ``R`` appended (a recharge has at most one reversal)."""
    return f"{original_ref}R"


class PinFailure(Base):
    """One wrong PIN, counted for lockouts by caller number and by account."""

    __tablename__ = "pin_failures"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    caller: Mapped[str] = mapped_column(String(CALLER_MAX), index=True)
    account_no: Mapped[str] = mapped_column(String(ACCOUNT_DIGITS), index=True)
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


class OperatorRequest(Base):
    """A request to add an operator, change a role or re-enable an operator, and a second administrator's decision."""

    __tablename__ = "operator_requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # add | role | enable
    operator: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # pending | approved | rejected
    reason: Mapped[str] = mapped_column(String(256))
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    decision_comment: Mapped[str | None] = mapped_column(String(256))


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
    # A POS terminal's hall: the one hall whose cards it may sell (only a ``pos`` client has one).
    hall_id: Mapped[int | None] = mapped_column(ForeignKey("halls.id"))

    __table_args__ = (CheckConstraint("hall_id IS NULL OR channel = 'pos'", name="ck_channel_clients_hall_id"),)


class ConsoleSession(Base):
    """A sign-in to the web console (``cardmgmt.console_sessions``).

    Only the SHA-256 of the session's token is kept, so whoever reads this
    table holds no session.  ``ended_at`` is set by signing out: from then on
    the token is refused, whichever copy of the cookie presents it.
    """

    __tablename__ = "console_sessions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    operator: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
