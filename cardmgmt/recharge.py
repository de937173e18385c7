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

Nothing here touches a PIN beyond hashing it; wrong PINs are counted by
caller number and by account, and past the limit further attempts are refused
without testing the PIN (``LOCKED_OUT``).  No channel-specific code lives
here: a web page or a POS terminal would call the same service.
"""

# test-case-name: tests.cardmgmt.test_recharge

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cardmgmt.config import Settings
from cardmgmt.days import business_day
from cardmgmt.db import Database
from cardmgmt.errors import InvalidInput
from cardmgmt.models import Batch, Card, PinFailure, Quote, Recharge, utcnow
from cardmgmt.pins import is_well_formed, pin_hash
from cardmgmt.states import CardState, Event, is_redeemable, sources
from marketing_iface.interface import MarketingSystem, MarketingUnavailable

ACCOUNT = re.compile(r"^[0-9]{10}$")
CALL_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
CALLER = re.compile(r"^[0-9+*#]{0,32}$")
MAX_SEQ = 99


class Outcome(StrEnum):
    """Everything a caller may need to hear; a closed set shared by every channel."""

    OK = "ok"
    WRONG_PIN = "wrong_pin"
    CARD_USED = "card_used"
    CARD_VOIDED = "card_voided"
    CARD_FROZEN = "card_frozen"
    CARD_EXPIRED = "card_expired"
    CARD_NOT_ISSUED = "card_not_issued"
    CARD_HELD = "card_held"
    UNKNOWN_ACCOUNT = "unknown_account"
    LOCKED_OUT = "locked_out"
    HOLD_EXPIRED = "hold_expired"
    NO_QUOTE = "no_quote"
    SERVICE_UNAVAILABLE = "service_unavailable"


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

    @classmethod
    def from_settings(cls, settings: Settings) -> "Policy":
        return cls(settings.hold_seconds, settings.max_pin_failures, settings.lockout_hours)


# What a card that cannot be quoted tells the caller, by state.
STATE_OUTCOME = {
    CardState.REDEEMED: Outcome.CARD_USED,
    CardState.VOIDED: Outcome.CARD_VOIDED,
    CardState.FROZEN: Outcome.CARD_FROZEN,
    CardState.ORDERED: Outcome.CARD_NOT_ISSUED,
    CardState.PRODUCED: Outcome.CARD_NOT_ISSUED,
    CardState.IN_STOCK: Outcome.CARD_NOT_ISSUED,
}


def recharge_key(call_id: str, seq: int) -> str:
    """The idempotency key of the ``seq``-th card of a call."""
    if not isinstance(call_id, str) or not CALL_ID.match(call_id):
        raise InvalidInput("call_id must be 1-64 letters, digits, '.', '_', ':' or '-'")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= MAX_SEQ:
        raise InvalidInput(f"seq must be a whole number from 1 to {MAX_SEQ}")
    return f"{call_id}#{seq}"


def check_account_no(account_no: str) -> str:
    if not isinstance(account_no, str) or not ACCOUNT.match(account_no):
        raise InvalidInput("account_no must be 10 digits")
    return account_no


class RechargeService:
    """Quote, commit and cancel recharges.  Blocking; safe to call from many threads."""

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

    # --- account -------------------------------------------------------------------

    def account(self, account_no: str) -> Answer:
        """The account summary a caller hears before entering a PIN."""
        check_account_no(account_no)
        try:
            acct = self.marketing.lookup_account(account_no)
        except MarketingUnavailable:
            return Answer(Outcome.SERVICE_UNAVAILABLE)
        if acct is None:
            return Answer(Outcome.UNKNOWN_ACCOUNT, {"account_no": account_no})
        return Answer(Outcome.OK, {"account_no": account_no, "holder": acct.masked_name, "balance": acct.balance})

    # --- quote ---------------------------------------------------------------------

    def quote(self, *, call_id: str, seq: int, account_no: str, pin: str, caller: str) -> Answer:
        """Check account and PIN and hold the card for this call; see the module docstring."""
        key = recharge_key(call_id, seq)
        check_account_no(account_no)
        if not isinstance(caller, str) or not CALLER.match(caller):
            raise InvalidInput("caller must be up to 32 digits")
        if not isinstance(pin, str) or len(pin) > 64:
            raise InvalidInput("pin must be a string of digits")
        now = self.clock()
        with self.db.transaction() as s:
            done = self._recharge_by_key(s, key)
            if done is not None:
                return self._committed_answer(done)
            if self._locked_out(s, caller, account_no, now):
                return Answer(Outcome.LOCKED_OUT)
        summary = self.account(account_no)
        if summary.outcome is not Outcome.OK:
            return summary
        digest = pin_hash(self.pin_key, pin) if is_well_formed(pin) else None
        with self.db.transaction() as s:
            row = None
            if digest is not None:
                row = s.execute(
                    select(Card.id, Card.serial, Card.state, Card.hold_key, Card.hold_until, Batch.face_value, Batch.expiry)
                    .join(Batch, Batch.id == Card.batch_id)
                    .where(Card.pin_hash == digest)
                ).first()
            if row is None:
                s.add(PinFailure(caller=caller, account_no=account_no, at=now))
                s.flush()
                left = self._attempts_left(s, caller, account_no, now)
                return Answer(Outcome.WRONG_PIN if left else Outcome.LOCKED_OUT, {"attempts_left": left})
            card_id, serial, state, _hold_key, _hold_until, face_value, expiry = row
            outcome = self._card_outcome(CardState(state), expiry, now)
            if outcome is not None:
                return Answer(outcome, {"serial_tail": serial[-4:]})
            until = now + dt.timedelta(seconds=self.policy.hold_seconds)
            held = s.execute(
                update(Card)
                .where(
                    Card.id == card_id,
                    Card.state.in_([st.value for st in sources(Event.REDEEM)]),
                    or_(Card.hold_key.is_(None), Card.hold_key == key, Card.hold_until < now),
                )
                .values(hold_key=key, hold_until=until),
                execution_options={"synchronize_session": False},
            ).rowcount
            if held != 1:
                return Answer(Outcome.CARD_HELD, {"serial_tail": serial[-4:]})
            quote = s.get(Quote, key, with_for_update=True)
            if quote is not None and quote.card_id != card_id and quote.state == "held":
                # The caller moved on to another card within the same step: let the first go.
                self._release(s, quote.card_id, key)
            if quote is None:
                quote = Quote(key=key, call_id=call_id, channel=self.channel, caller=caller)
                s.add(quote)
            quote.account_no, quote.card_id, quote.amount = account_no, card_id, face_value
            quote.state, quote.hold_until = "held", until
        return Answer(
            Outcome.OK,
            {**summary.data, "amount": face_value, "serial_tail": serial[-4:], "hold_seconds": self.policy.hold_seconds},
        )

    # --- commit --------------------------------------------------------------------

    def commit(self, *, call_id: str, seq: int) -> Answer:
        """Spend the held card and record the recharge, once; repeats return the first answer."""
        key = recharge_key(call_id, seq)
        now = self.clock()
        try:
            with self.db.transaction() as s:
                done = self._recharge_by_key(s, key)
                if done is not None:
                    return self._committed_answer(done)
                quote = s.get(Quote, key)
                if quote is None or quote.state == "cancelled":
                    return Answer(Outcome.NO_QUOTE)
                spent = s.execute(
                    update(Card)
                    .where(
                        Card.id == quote.card_id,
                        Card.state.in_([st.value for st in sources(Event.REDEEM)]),
                        Card.hold_key == key,
                        Card.hold_until >= now,
                    )
                    .values(state=CardState.REDEEMED.value, hold_key=None, hold_until=None),
                    execution_options={"synchronize_session": False},
                ).rowcount
                if spent != 1:
                    return self._why_not_spent(s, key, quote, now)
                serial = s.execute(select(Card.serial).where(Card.id == quote.card_id)).scalar_one()
                recharge = Recharge(
                    key=key, call_id=quote.call_id, channel=quote.channel, caller=quote.caller,
                    card_id=quote.card_id, card_serial=serial, account_no=quote.account_no, amount=quote.amount,
                    committed_at=now, post_status="pending", post_attempts=0, next_attempt_at=now,
                )
                s.add(recharge)
                quote.state = "committed"
                s.flush()
                return self._committed_answer(recharge)
        except IntegrityError:
            # Another server committed this key (or this card) at the same moment.
            with self.db.transaction() as s:
                done = self._recharge_by_key(s, key)
                if done is not None:
                    return self._committed_answer(done)
            return Answer(Outcome.CARD_USED)

    def _why_not_spent(self, s: Session, key: str, quote: Quote, now: dt.datetime) -> Answer:
        done = self._recharge_by_key(s, key)
        if done is not None:
            return self._committed_answer(done)
        card = s.execute(select(Card.state, Card.hold_key, Card.hold_until, Card.serial, Batch.expiry)
                         .join(Batch, Batch.id == Card.batch_id).where(Card.id == quote.card_id)).one()
        outcome = self._card_outcome(CardState(card.state), card.expiry, now)
        if outcome is not None:
            return Answer(outcome, {"serial_tail": card.serial[-4:]})
        return Answer(Outcome.HOLD_EXPIRED, {"serial_tail": card.serial[-4:]})

    # --- cancel and expiry ---------------------------------------------------------

    def cancel(self, *, call_id: str, seq: int) -> Answer:
        """Release a held card (the caller declined or hung up).  A committed recharge stays."""
        key = recharge_key(call_id, seq)
        with self.db.transaction() as s:
            done = self._recharge_by_key(s, key)
            if done is not None:
                return self._committed_answer(done)
            quote = s.get(Quote, key)
            if quote is None:
                return Answer(Outcome.NO_QUOTE)
            if quote.state == "held":
                self._release(s, quote.card_id, key)
                quote.state = "cancelled"
            return Answer(Outcome.OK, {"cancelled": True})

    def expire_holds(self) -> int:
        """Mark lapsed quotes expired.

        The cards need nothing: a hold whose ``hold_until`` has passed no
        longer counts anywhere, so the card table (millions of rows) is never
        scanned for stale holds.
        """
        now = self.clock()
        with self.db.transaction() as s:
            return s.execute(
                update(Quote).where(Quote.state == "held", Quote.hold_until < now).values(state="expired"),
                execution_options={"synchronize_session": False},
            ).rowcount

    # --- helpers -------------------------------------------------------------------

    @staticmethod
    def _release(s: Session, card_id: int, key: str) -> None:
        s.execute(
            update(Card).where(Card.id == card_id, Card.hold_key == key).values(hold_key=None, hold_until=None),
            execution_options={"synchronize_session": False},
        )

    @staticmethod
    def _recharge_by_key(s: Session, key: str) -> Recharge | None:
        return s.execute(select(Recharge).where(Recharge.key == key)).scalar_one_or_none()

    @staticmethod
    def _committed_answer(r: Recharge) -> Answer:
        return Answer(
            Outcome.OK,
            {"recharge_ref": r.ref, "amount": r.amount, "account_no": r.account_no, "serial_tail": r.card_serial[-4:]},
        )

    @staticmethod
    def _card_outcome(state: CardState, expiry: dt.date, now: dt.datetime) -> Outcome | None:
        """Why this card cannot be recharged now, or ``None`` if it can."""
        if state in STATE_OUTCOME:
            return STATE_OUTCOME[state]
        if not is_redeemable(state, expiry, business_day(now)):
            return Outcome.CARD_EXPIRED
        return None

    def _failures(self, s: Session, column: Any, value: str, now: dt.datetime) -> int:
        since = now - dt.timedelta(hours=self.policy.lockout_hours)
        return s.execute(
            select(func.count()).select_from(PinFailure).where(column == value, PinFailure.at > since, PinFailure.cleared_by.is_(None))
        ).scalar_one()

    def _attempts_left(self, s: Session, caller: str, account_no: str, now: dt.datetime) -> int:
        used = self._failures(s, PinFailure.account_no, account_no, now)
        # An anonymous caller has no number to count against; the account's count still applies.
        if caller:
            used = max(used, self._failures(s, PinFailure.caller, caller, now))
        return max(0, self.policy.max_pin_failures - used)

    def _locked_out(self, s: Session, caller: str, account_no: str, now: dt.datetime) -> bool:
        return self._attempts_left(s, caller, account_no, now) == 0
