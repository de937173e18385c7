"""The recharge core: quote and commit a card against an electricity account, exactly once.

Two steps, matching the phone dialog.  ``quote`` checks the account in the
marketing system and the PIN against the card database, and *holds* the card
for this call for a short time; ``commit`` (the caller pressed 1) spends the
card and writes the recharge record in one transaction.  The record is also
the outbox row from which ``marketing_iface.outbox`` posts the recharge to
the marketing system, so an outage there never loses or doubles anything.

Every request names its recharge by ``call_id`` and ``seq`` (the n-th card of
that call).  That pair is the idempotency key: a quote or commit repeated on
either server (after a failover, say) finds the same hold or the same
recharge and returns the same answer, and the database's unique constraints
(one recharge per key, one recharge per card) make a second spend impossible
even when two servers race.

Each request is a single short transaction on SQLAlchemy Core statements
built once at import: the request's nonce (see ``cardmgmt.nonces``), then a
few single-row statements, each a conditional ``UPDATE ... RETURNING`` that
both decides and acts, so the usual answer costs four statements and one
commit.  The rarer answers (wrong PIN, a card in the wrong state, a repeat)
are worked out on a slower path after the fast statement found nothing.
The account summary a caller hears is read from the marketing system and
kept for ``Policy.account_cache_seconds``, so the quote that follows the
dialog's account step a few seconds later does not ask again.

Nothing here touches a PIN beyond hashing it.  Wrong PINs are budgeted so
that guessing stays hopeless while a stranger cannot lock an owner out:

- a presented caller number (normalised, ``cardmgmt.callers``) has
  ``max_pin_failures`` wrong PINs per ``lockout_hours``, for all accounts;
- withheld numbers share, per account, the same budget; a caller who presents
  a number is never refused because of an account's anonymous failures;
- the whole service has ``guard_failures`` wrong PINs per ``guard_minutes``;
  past that no PIN is tested for anyone (``SERVICE_UNAVAILABLE``) until the
  window moves on, and the leader's pin guard job raises an alert.

Past a budget further attempts are refused without testing the PIN
(``LOCKED_OUT``).  The check and the count are atomic: on PostgreSQL the
request takes a transaction-scoped advisory lock on what it is counted
against (the caller number, or the account for a withheld number) before it
reads the count, so parallel wrong PINs queue and at most the budget is ever
tested; SQLite serialises writers anyway.  A correct PIN of a card that is not
yet issued counts as a wrong one, so such cards are no softer targets.  No
channel-specific code lives here: a web page or a POS terminal would call the
same service.
"""

# test-case-name: tests.cardmgmt.test_recharge

import datetime as dt
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError

from cardmgmt import callers, fields, nonces
from cardmgmt.config import Settings
from cardmgmt.days import business_day
from cardmgmt.db import Database, dialect_insert
from cardmgmt.errors import InvalidInput
from cardmgmt.marketing import Account, MarketingSystem, MarketingUnavailable
from cardmgmt.models import Batch, Card, PinFailure, Quote, Recharge, recharge_ref, utcnow
from cardmgmt.outcomes import Outcome
from cardmgmt.pins import is_well_formed, pin_hash
from cardmgmt.states import (
    QUOTE_REOPENS,
    STATE_OUTCOME,
    CardState,
    Event,
    PostStatus,
    QuoteState,
    has_expired,
    refusal,
    sources,
)

ACCOUNT = re.compile(f"^{fields.ACCOUNT_PATTERN}$")
CALL_ID = re.compile(f"^{fields.CALL_ID_PATTERN}$")
MAX_SEQ = fields.MAX_SEQ


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, **self.data}


@dataclass(frozen=True)
class Policy:
    hold_seconds: int = 120
    max_pin_failures: int = 5
    lockout_hours: int = 24
    # How long an account summary read from the marketing system is reused.
    account_cache_seconds: float = 60.0
    # The whole service's wrong-PIN budget (see the module docstring and the README's arithmetic).
    guard_failures: int = 100
    guard_minutes: int = 10

    def guard_since(self, now: dt.datetime) -> dt.datetime:
        """Where the service-wide guard's window starts."""
        return now - dt.timedelta(minutes=self.guard_minutes)

    def guard_tripped(self, recent: int) -> bool:
        """Whether ``recent`` wrong PINs in the guard window stop all PIN tests."""
        return recent >= self.guard_failures

    @classmethod
    def from_settings(cls, settings: Settings) -> "Policy":
        return cls(
            settings.hold_seconds, settings.max_pin_failures, settings.lockout_hours,
            guard_failures=settings.pin_guard_failures, guard_minutes=settings.pin_guard_minutes,
        )


def recharge_key(call_id: str, seq: int) -> str:
    """The idempotency key of the ``seq``-th card of a call."""
    if not isinstance(call_id, str) or not CALL_ID.match(call_id):
        raise InvalidInput(f"call_id must be 1-{fields.CALL_ID_MAX} letters, digits, '.', '_', ':' or '-'")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= MAX_SEQ:
        raise InvalidInput(f"seq must be a whole number from 1 to {MAX_SEQ}")
    return f"{call_id}#{seq}"


def check_account_no(account_no: str) -> str:
    if not isinstance(account_no, str) or not ACCOUNT.match(account_no):
        raise InvalidInput(f"account_no must be {fields.ACCOUNT_DIGITS} digits")
    return account_no


# --- the statements, built once -------------------------------------------------------
#
# Tables, not ORM classes: no session, no identity map, no flush; SQLAlchemy
# caches each statement's compiled form.  Parameter names differ from column
# names where SQLAlchemy reserves those for SET clauses.

_cards, _batches = Card.__table__, Batch.__table__
_quotes, _recharges, _failures = Quote.__table__, Recharge.__table__, PinFailure.__table__

# Plain strings: the statements are compiled once, and their parameters are
# bound as the VARCHAR values the CHECK constraints admit.
_REDEEMABLE_FROM = sorted(state.value for state in sources(Event.REDEEM))
# Cards not yet in a customer's hands (still in the warehouse, or at a hall
# unsold): a PIN that names one is a guess that hit something, or a stolen
# card, so it costs an attempt like a wrong PIN, and the caller hears why.
_NOT_YET_SOLD = {
    state.value: outcome for state, outcome in STATE_OUTCOME.items()
    if outcome in (Outcome.CARD_NOT_ISSUED, Outcome.CARD_NOT_SOLD)
}
_REDEEMED = CardState.REDEEMED.value
_HELD, _COMMITTED, _CANCELLED, _EXPIRED = (QuoteState.HELD.value, QuoteState.COMMITTED.value,
                                           QuoteState.CANCELLED.value, QuoteState.EXPIRED.value)
_REOPENS = sorted(state.value for state in QUOTE_REOPENS)
_PENDING = PostStatus.PENDING.value


def _of_batch(column: Any) -> Any:
    """A column of the card's batch, as a scalar subquery correlated to ``cards``."""
    return select(column).where(_batches.c.id == _cards.c.batch_id).correlate(_cards).scalar_subquery()


def _count_failures(*where: Any) -> Any:
    return select(func.count()).select_from(_failures).where(*where).scalar_subquery()


_UNCLEARED_SINCE = (_failures.c.at > bindparam("since"), _failures.c.cleared_by.is_(None))

# Wrong PINs that count now: the presented number's, the account's from
# withheld numbers, and the whole service's in the guard window (cleared or not:
# the guard is about the rate of guessing, not about one customer).
_FAILURES = select(
    _count_failures(_failures.c.caller == bindparam("caller"), *_UNCLEARED_SINCE),
    _count_failures(_failures.c.account_no == bindparam("account"), _failures.c.caller == "", *_UNCLEARED_SINCE),
    _count_failures(_failures.c.at > bindparam("guard_since")),
)

# Serialises the requests counted against one caller number (or one account,
# for withheld numbers) until each one's transaction ends, so the count read
# before a PIN is tested already includes every wrong PIN tested before it.
# The two-key form keeps these locks apart from the operation log's.
_LOCKOUT_LOCK_SPACE = 0x50494E  # "PIN"
_LOCK_BUDGET = select(func.pg_advisory_xact_lock(literal(_LOCKOUT_LOCK_SPACE), func.hashtext(bindparam("subject"))))

_RECORD_FAILURE = insert(_failures)

# The card a PIN names, if it can be held for this key: hold it and say what it is.
_HOLD = (
    update(_cards)
    .where(
        _cards.c.pin_hash == bindparam("digest"),
        _cards.c.state.in_(_REDEEMABLE_FROM),
        or_(_cards.c.hold_key.is_(None), _cards.c.hold_key == bindparam("key"), _cards.c.hold_until < bindparam("now")),
    )
    .values(hold_key=bindparam("key"), hold_until=bindparam("until"))
    .returning(_cards.c.id, _cards.c.serial, _of_batch(_batches.c.face_value), _of_batch(_batches.c.expiry))
)

# What a PIN names, whatever its state (the slow path's question).
_CARD_BY_PIN = select(
    _cards.c.id, _cards.c.serial, _cards.c.state, _of_batch(_batches.c.expiry)
).where(_cards.c.pin_hash == bindparam("digest"))

_CARD_BY_ID = select(_cards.c.serial, _cards.c.state, _of_batch(_batches.c.expiry)).where(_cards.c.id == bindparam("card"))

_RELEASE = (
    update(_cards)
    .where(_cards.c.id == bindparam("card"), _cards.c.hold_key == bindparam("key"))
    .values(hold_key=None, hold_until=None)
)

def _leave_held(state: str, *returning: Any) -> Any:
    """The key's quote moves from held to ``state``, once.

    The row lock this takes makes a racing commit or cancel of the same key
    (on the other server) wait, then find the quote no longer held.
    """
    return (
        update(_quotes)
        .where(_quotes.c.key == bindparam("qkey"), _quotes.c.state == _HELD)
        .values(state=state)
        .returning(*returning)
    )


_TAKE_QUOTE = _leave_held(
    _COMMITTED, _quotes.c.call_id, _quotes.c.channel, _quotes.c.client, _quotes.c.caller, _quotes.c.account_no,
    _quotes.c.card_id,
    _quotes.c.amount,
)

_SPEND = (
    update(_cards)
    .where(
        _cards.c.id == bindparam("card"),
        _cards.c.state.in_(_REDEEMABLE_FROM),
        _cards.c.hold_key == bindparam("qkey"),
        _cards.c.hold_until >= bindparam("now"),
    )
    .values(state=_REDEEMED, hold_key=None, hold_until=None)
    .returning(_cards.c.serial)
)

_RECORD_RECHARGE = insert(_recharges).returning(_recharges.c.id)

_RECHARGE_BY_KEY = select(
    _recharges.c.id, _recharges.c.committed_at, _recharges.c.amount, _recharges.c.account_no, _recharges.c.card_serial
).where(_recharges.c.key == bindparam("qkey"))

_QUOTE_BY_KEY = select(_quotes.c.state, _quotes.c.card_id).where(_quotes.c.key == bindparam("qkey"))

_CANCEL_QUOTE = _leave_held(_CANCELLED, _quotes.c.card_id)

_EXPIRE_QUOTES = update(_quotes).where(_quotes.c.state == _HELD, _quotes.c.hold_until < bindparam("now")).values(
    state=_EXPIRED
)


def _upsert_quote(dialect: str) -> Any:
    """Write the key's quote: a new one, or over a cancelled or expired one, or the same card again.

    Returns no row when the key's quote is committed or holds another card;
    the caller sorts that out on the slow path.
    """
    stmt = dialect_insert(dialect, _quotes)
    fresh = {c: stmt.excluded[c] for c in ("account_no", "card_id", "amount", "state", "hold_until", "caller")}
    return stmt.on_conflict_do_update(
        index_elements=[_quotes.c.key],
        set_=fresh,
        where=or_(
            _quotes.c.state.in_(_REOPENS),
            and_(_quotes.c.state == _HELD, _quotes.c.card_id == stmt.excluded.card_id),
        ),
    ).returning(_quotes.c.key)


_UPSERT_QUOTE = {name: _upsert_quote(name) for name in ("postgresql", "sqlite")}

_REWRITE_QUOTE = update(_quotes).where(_quotes.c.key == bindparam("qkey"))


class _Decided(Exception):
    """Ends a transaction with a rollback and this answer (a hold that must not stay, say)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer


class _NotSpent(Exception):
    """Ends a commit's transaction with a rollback: the held card could not be spent."""

    def __init__(self, card_id: int) -> None:
        self.card_id = card_id


class _AccountCache:
    """Account summaries read from the marketing system, kept for ``ttl`` seconds; thread-safe.

    Only accounts that exist are kept: an unknown account or an outage is
    asked about again next time.
    """

    MAX_ENTRIES = 50_000

    def __init__(self, ttl: float, clock: Callable[[], dt.datetime]) -> None:
        self.ttl, self.clock = dt.timedelta(seconds=ttl), clock
        self._entries: dict[str, tuple[dt.datetime, Account]] = {}
        self._lock = threading.Lock()

    def get(self, account_no: str) -> Account | None:
        entry = self._entries.get(account_no)
        if entry is None or entry[0] < self.clock():
            return None
        return entry[1]

    def put(self, account: Account) -> None:
        now = self.clock()
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries.clear()
            self._entries[account.account_no] = (now + self.ttl, account)


class RechargeService:
    """Quote, commit and cancel recharges.  Blocking; safe to call from many threads.

    Every method takes the request's ``nonce`` (``None`` when the caller is
    not a signed request, e.g. the CLI): it is recorded in the request's own
    transaction, and a nonce seen before raises ``nonces.Replayed`` with
    nothing changed.
    """

    def __init__(
        self,
        db: Database,
        marketing: MarketingSystem,
        pin_key: bytes,
        policy: Policy = Policy(),
        clock: Callable[[], dt.datetime] = utcnow,
        channel: str = "hotline",
    ) -> None:
        self.db, self.marketing, self.pin_key = db, marketing, pin_key
        self.policy, self.clock, self.channel = policy, clock, channel
        self._accounts = _AccountCache(policy.account_cache_seconds, clock)

    # --- account -------------------------------------------------------------------

    def account(self, account_no: str, *, nonce: str | None = None) -> Answer:
        """The account summary a caller hears before entering a PIN."""
        check_account_no(account_no)
        if nonce is not None:
            with self.db.engine.begin() as conn:
                nonces.record(conn, nonce, self.clock())
        return self._summary(account_no)

    def _summary(self, account_no: str) -> Answer:
        acct = self._accounts.get(account_no)
        if acct is None:
            try:
                acct = self.marketing.lookup_account(account_no)
            except MarketingUnavailable:
                return Answer(Outcome.SERVICE_UNAVAILABLE)
            if acct is None:
                return Answer(Outcome.UNKNOWN_ACCOUNT, {"account_no": account_no})
            self._accounts.put(acct)
        return Answer(Outcome.OK, {"account_no": account_no, "holder": acct.masked_name, "balance": acct.balance})

    # --- quote ---------------------------------------------------------------------

    def quote(
        self, *, call_id: str, seq: int, account_no: str, pin: str, caller: str, nonce: str | None = None,
        channel: str | None = None, client: str | None = None,
    ) -> Answer:
        """Check account and PIN and hold the card for this call; see the module docstring.

        ``channel`` and ``client`` name the channel client whose signed request
        this is (``cardmgmt.channel_clients``); they are recorded on the quote
        and, at commit, on the recharge.  ``channel`` defaults to the service's.
        """
        key = recharge_key(call_id, seq)
        check_account_no(account_no)
        caller = callers.normalise(caller)
        if not isinstance(pin, str) or len(pin) > fields.PIN_ENTRY_MAX:
            raise InvalidInput("pin must be a string of digits")
        summary = self._summary(account_no)
        if summary.outcome is not Outcome.OK:
            return summary
        digest = pin_hash(self.pin_key, pin) if is_well_formed(pin) else None
        now = self.clock()
        try:
            with self.db.engine.begin() as conn:
                if nonce is not None:
                    nonces.record(conn, nonce, now)
                origin = (channel or self.channel, client)
                return self._quote(conn, key, call_id, account_no, caller, digest, now, summary, origin)
        except _Decided as d:
            return d.answer

    def _quote(
        self, conn: Connection, key: str, call_id: str, account_no: str, caller: str, digest: bytes | None,
        now: dt.datetime, summary: Answer, origin: tuple[str, str | None],
    ) -> Answer:
        since = now - dt.timedelta(hours=self.policy.lockout_hours)
        if conn.dialect.name == "postgresql":
            conn.execute(_LOCK_BUDGET, {"subject": f"caller:{caller}" if caller else f"account:{account_no}"})
        left, guarded = self._attempts_left(conn, caller, account_no, since, now)
        if guarded:
            return Answer(Outcome.SERVICE_UNAVAILABLE)
        if left == 0:
            return Answer(Outcome.LOCKED_OUT)
        until = now + dt.timedelta(seconds=self.policy.hold_seconds)
        held = None
        if digest is not None:
            held = conn.execute(_HOLD, {"digest": digest, "key": key, "now": now, "until": until}).first()
        if held is None:
            return self._not_held(conn, key, caller, account_no, digest, now, since)
        card_id, serial, face_value, expiry = held
        # The hold only takes cards in a redeemable state; their batch's expiry is the one question left.
        if has_expired(expiry, business_day(now)):
            raise _Decided(Answer(Outcome.CARD_EXPIRED, {"serial_tail": serial[-4:]}))
        quote = {"key": key, "call_id": call_id, "channel": origin[0], "client": origin[1], "caller": caller,
                 "account_no": account_no, "card_id": card_id, "amount": face_value, "state": _HELD, "hold_until": until,
                 "created_at": now}
        if conn.execute(_UPSERT_QUOTE[conn.dialect.name], quote).first() is None:
            self._replace_quote(conn, key, quote)
        return Answer(
            Outcome.OK,
            {**summary.data, "amount": face_value, "serial_tail": serial[-4:], "hold_seconds": self.policy.hold_seconds},
        )

    def _replace_quote(self, conn: Connection, key: str, quote: dict[str, Any]) -> None:
        """The key's quote is committed, or holds another card (the caller moved on to a second PIN)."""
        state, old_card = conn.execute(_QUOTE_BY_KEY, {"qkey": key}).one()
        if state == _COMMITTED:
            raise _Decided(self._committed_answer(conn, key))
        conn.execute(_RELEASE, {"card": old_card, "key": key})
        fields = {k: v for k, v in quote.items() if k not in ("key", "call_id", "channel", "client", "created_at")}
        conn.execute(_REWRITE_QUOTE.values(**fields), {"qkey": key})

    def _not_held(
        self, conn: Connection, key: str, caller: str, account_no: str, digest: bytes | None, now: dt.datetime,
        since: dt.datetime,
    ) -> Answer:
        """Why the PIN's card could not be held: a wrong PIN (counted), its state, or another call's hold."""
        card = conn.execute(_CARD_BY_PIN, {"digest": digest}).first() if digest is not None else None
        if card is None:
            left = self._record_failure(conn, caller, account_no, now, since)
            return Answer(Outcome.WRONG_PIN if left else Outcome.LOCKED_OUT, {"attempts_left": left})
        card_id, serial, state, expiry = card
        if state in _NOT_YET_SOLD:
            left = self._record_failure(conn, caller, account_no, now, since)
            return Answer(_NOT_YET_SOLD[state], {"serial_tail": serial[-4:], "attempts_left": left})
        if state == _REDEEMED:
            done = conn.execute(_RECHARGE_BY_KEY, {"qkey": key}).first()
            if done is not None:
                return self._answer_for(done)
        outcome = self._card_outcome(state, expiry, now)
        return Answer(outcome or Outcome.CARD_HELD, {"serial_tail": serial[-4:]})

    # --- commit --------------------------------------------------------------------

    def commit(self, *, call_id: str, seq: int, nonce: str | None = None) -> Answer:
        """Spend the held card and record the recharge, once; repeats return the first answer."""
        key = recharge_key(call_id, seq)
        now = self.clock()
        try:
            with self.db.engine.begin() as conn:
                if nonce is not None:
                    nonces.record(conn, nonce, now)
                return self._commit(conn, key, now)
        except _Decided as d:
            return d.answer
        except _NotSpent as e:
            return self._why_not_spent(key, e.card_id, now)
        except IntegrityError:
            # Another server committed this key (or this card) at the same moment.
            with self.db.engine.begin() as conn:
                done = conn.execute(_RECHARGE_BY_KEY, {"qkey": key}).first()
            return self._answer_for(done) if done is not None else Answer(Outcome.CARD_USED)

    def _commit(self, conn: Connection, key: str, now: dt.datetime) -> Answer:
        quote = conn.execute(_TAKE_QUOTE, {"qkey": key}).first()
        if quote is None:
            return self._not_committed(conn, key, now)
        spent = conn.execute(_SPEND, {"card": quote.card_id, "qkey": key, "now": now}).first()
        if spent is None:
            # Undo taking the quote; ``commit`` then says why from what is left.
            raise _NotSpent(quote.card_id)
        recharge_id = conn.execute(
            _RECORD_RECHARGE,
            {"key": key, "call_id": quote.call_id, "channel": quote.channel, "client": quote.client, "caller": quote.caller,
             "card_id": quote.card_id, "card_serial": spent.serial, "account_no": quote.account_no,
             "amount": quote.amount, "committed_at": now, "post_status": _PENDING, "post_attempts": 0,
             "next_attempt_at": now},
        ).scalar_one()
        return self._answer(recharge_id, now, quote.amount, quote.account_no, spent.serial)

    def _not_committed(self, conn: Connection, key: str, now: dt.datetime) -> Answer:
        """No held quote for the key: committed before, never quoted, cancelled, or lapsed."""
        done = conn.execute(_RECHARGE_BY_KEY, {"qkey": key}).first()
        if done is not None:
            return self._answer_for(done)
        quote = conn.execute(_QUOTE_BY_KEY, {"qkey": key}).first()
        if quote is None or quote.state == _CANCELLED:
            return Answer(Outcome.NO_QUOTE)
        return self._card_answer(conn, quote.card_id, now)

    def _why_not_spent(self, key: str, card_id: int, now: dt.datetime) -> Answer:
        with self.db.engine.begin() as conn:
            done = conn.execute(_RECHARGE_BY_KEY, {"qkey": key}).first()
            if done is not None:
                return self._answer_for(done)
            return self._card_answer(conn, card_id, now)

    def _card_answer(self, conn: Connection, card_id: int, now: dt.datetime) -> Answer:
        serial, state, expiry = conn.execute(_CARD_BY_ID, {"card": card_id}).one()
        outcome = self._card_outcome(state, expiry, now)
        return Answer(outcome or Outcome.HOLD_EXPIRED, {"serial_tail": serial[-4:]})

    # --- cancel and expiry ---------------------------------------------------------

    def cancel(self, *, call_id: str, seq: int, nonce: str | None = None) -> Answer:
        """Release a held card (the caller declined or hung up).  A committed recharge stays."""
        key = recharge_key(call_id, seq)
        with self.db.engine.begin() as conn:
            if nonce is not None:
                nonces.record(conn, nonce, self.clock())
            held = conn.execute(_CANCEL_QUOTE, {"qkey": key}).first()
            if held is not None:
                conn.execute(_RELEASE, {"card": held.card_id, "key": key})
                return Answer(Outcome.OK, {"cancelled": True})
            done = conn.execute(_RECHARGE_BY_KEY, {"qkey": key}).first()
            if done is not None:
                return self._answer_for(done)
            if conn.execute(_QUOTE_BY_KEY, {"qkey": key}).first() is None:
                return Answer(Outcome.NO_QUOTE)
            return Answer(Outcome.OK, {"cancelled": True})

    def expire_holds(self) -> int:
        """Mark lapsed quotes expired.

        The cards need nothing: a hold whose ``hold_until`` has passed no
        longer counts anywhere, so the card table (millions of rows) is never
        scanned for stale holds.
        """
        with self.db.engine.begin() as conn:
            return conn.execute(_EXPIRE_QUOTES, {"now": self.clock()}).rowcount

    # --- helpers -------------------------------------------------------------------

    @staticmethod
    def _answer(recharge_id: int, committed_at: dt.datetime, amount: int, account_no: str, serial: str) -> Answer:
        return Answer(
            Outcome.OK,
            {"recharge_ref": recharge_ref(committed_at, recharge_id), "amount": amount, "account_no": account_no,
             "serial_tail": serial[-4:]},
        )

    def _answer_for(self, done: Row[Any]) -> Answer:
        return self._answer(done.id, done.committed_at, done.amount, done.account_no, done.card_serial)

    def _committed_answer(self, conn: Connection, key: str) -> Answer:
        return self._answer_for(conn.execute(_RECHARGE_BY_KEY, {"qkey": key}).one())

    @staticmethod
    def _card_outcome(state: CardState, expiry: dt.date, now: dt.datetime) -> Outcome | None:
        """Why this card cannot be recharged now, or ``None`` if it can."""
        return refusal(state, expiry, business_day(now))

    def _attempts_left(
        self, conn: Connection, caller: str, account_no: str, since: dt.datetime, now: dt.datetime
    ) -> tuple[int, bool]:
        """Wrong PINs this caller may still try, and whether the whole service's guard is tripped."""
        by_caller, anonymous, recent = conn.execute(
            _FAILURES, {"account": account_no, "caller": caller, "since": since, "guard_since": self.policy.guard_since(now)}
        ).one()
        # A presented number is counted by itself, so strangers cannot spend an
        # owner's attempts; withheld numbers have nothing but the account.
        used = by_caller if caller else anonymous
        return max(0, self.policy.max_pin_failures - used), self.policy.guard_tripped(recent)

    def _record_failure(
        self, conn: Connection, caller: str, account_no: str, now: dt.datetime, since: dt.datetime
    ) -> int:
        conn.execute(_RECORD_FAILURE, {"caller": caller, "account_no": account_no, "at": now})
        return self._attempts_left(conn, caller, account_no, since, now)[0]
