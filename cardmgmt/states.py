"""The state machines: cards, recharge quotes and outbox postings, each in one place.

Cards::

    ordered ──check──▶ produced ──intake──▶ in_stock ──issue──▶ issued ──sell──▶ sold ──redeem──▶ redeemed
       │                  │                    │   ◀──return───     │                │
       └──────────────────┴───── void ─────────┴──────────────────┴────────────────┴──▶ voided (final)
                produced / in_stock / issued / sold ──freeze──▶ frozen ──unfreeze──▶ (back)

A card issued to a business hall is not yet money: only a card the hall has
sold (``cardmgmt.sales``) can be redeemed, so a box stolen from a hall is
worth nothing on the hotline.  Unsold cards may be returned from the hall to
the warehouse (back to ``in_stock``).

A frozen card remembers the state it was frozen from and returns to it; it
can also be voided (a lost box that never turns up).  *Expired* is not a
state: it is derived from the batch's expiry date, so nothing has to run at
midnight for a card to stop being redeemable.  ``STATE_OUTCOME`` says what a
caller hears about a card in each state, so adding a card state means
adding it here (enum, transitions, outcome) and a migration that widens the
database's CHECK constraint; ``tests.cardmgmt.test_states`` fails until
every part is there.

Bulk operations use ``sources(event)`` in a conditional ``UPDATE ... WHERE
state IN (...)`` so the database, not a Python check, settles races.

A recharge quote is ``held`` for one call until it is ``committed``,
``cancelled`` or ``expired``; a cancelled or expired quote's key may be
quoted (held) again.  A recharge record's outbox posting is ``pending``
until the marketing system takes it (``posted``) or refuses it for good
(``rejected``); a person either sends a rejected posting again (back to
``pending``) or settles it outside the system (``resolved``, final).  A
reversal is ``pending`` until finance approves or rejects it; an approved
reversal's own posting has the same outbox states.  An issue request is
``pending`` until finance approves or rejects it; an approved one is
collected, and either may be cancelled first.

Every enum here is stored as its values in a VARCHAR column that a CHECK
constraint limits to them (see ``cardmgmt.models``).
"""

# test-case-name: tests.cardmgmt.test_states

import datetime as dt
from enum import StrEnum

from cardmgmt.errors import IllegalTransition
from cardmgmt.outcomes import Outcome


class CardState(StrEnum):
    ORDERED = "ordered"
    PRODUCED = "produced"
    IN_STOCK = "in_stock"
    ISSUED = "issued"
    SOLD = "sold"
    REDEEMED = "redeemed"
    VOIDED = "voided"
    FROZEN = "frozen"


class Event(StrEnum):
    CHECK = "check"
    INTAKE = "intake"
    ISSUE = "issue"
    SELL = "sell"
    RETURN = "return"
    REDEEM = "redeem"
    VOID = "void"
    FREEZE = "freeze"
    UNFREEZE = "unfreeze"


S = CardState
INITIAL = S.ORDERED
FINAL = frozenset({S.REDEEMED, S.VOIDED})

# event -> (states it may start from, state it leads to; None = the state before freezing)
TRANSITIONS: dict[Event, tuple[frozenset[CardState], CardState | None]] = {
    Event.CHECK: (frozenset({S.ORDERED}), S.PRODUCED),
    Event.INTAKE: (frozenset({S.PRODUCED}), S.IN_STOCK),
    Event.ISSUE: (frozenset({S.IN_STOCK}), S.ISSUED),
    Event.SELL: (frozenset({S.ISSUED}), S.SOLD),
    Event.RETURN: (frozenset({S.ISSUED}), S.IN_STOCK),
    Event.REDEEM: (frozenset({S.SOLD}), S.REDEEMED),
    Event.VOID: (frozenset(set(S) - FINAL), S.VOIDED),
    Event.FREEZE: (frozenset({S.PRODUCED, S.IN_STOCK, S.ISSUED, S.SOLD}), S.FROZEN),
    Event.UNFREEZE: (frozenset({S.FROZEN}), None),
}

# The events that record, in ``prior_state``, the state a card leaves, so
# that an event leading to None (unfreezing) can take it back there.  Every
# other event clears ``prior_state``.
REMEMBERS_PRIOR = frozenset({Event.FREEZE})

# What a caller hears about a card that cannot be quoted, by state.  None
# means the state itself does not refuse: the card is refused only if its
# batch has expired (CARD_EXPIRED) or another call holds it (CARD_HELD).
# Every state has an entry, so a new state cannot fall through to a wrong
# answer.
STATE_OUTCOME: dict[CardState, Outcome | None] = {
    S.ORDERED: Outcome.CARD_NOT_ISSUED,
    S.PRODUCED: Outcome.CARD_NOT_ISSUED,
    S.IN_STOCK: Outcome.CARD_NOT_ISSUED,
    S.ISSUED: Outcome.CARD_NOT_SOLD,
    S.SOLD: None,
    S.REDEEMED: Outcome.CARD_USED,
    S.VOIDED: Outcome.CARD_VOIDED,
    S.FROZEN: Outcome.CARD_FROZEN,
}


def sources(event: Event) -> frozenset[CardState]:
    """The states from which ``event`` is allowed."""
    return TRANSITIONS[event][0]


def target(event: Event) -> CardState | None:
    """Where ``event`` leads; ``None`` for unfreezing, which returns to the state before freezing."""
    return TRANSITIONS[event][1]


def the_target(event: Event) -> CardState:
    """Where ``event`` leads, for an event that always leads to one state (not unfreezing)."""
    to = TRANSITIONS[event][1]
    if to is None:
        raise ValueError(f"{event} returns a card to its earlier state; it has no fixed target")
    return to


def next_state(state: CardState, event: Event, prior: CardState | None = None) -> CardState:
    """The state a card in ``state`` moves to on ``event``.

    ``prior`` is the state a frozen card was frozen from.  Raises
    ``IllegalTransition`` when the machine does not allow the change.
    """
    allowed, to = TRANSITIONS[event]
    if state not in allowed:
        raise IllegalTransition(f"a card that is {describe(state)} cannot be {PAST[event]}")
    if to is None:
        if prior is None or not any(state == target(e) and prior in sources(e) for e in REMEMBERS_PRIOR):
            raise IllegalTransition("a frozen card without a valid earlier state cannot be unfrozen")
        return prior
    return to


def has_expired(expiry: dt.date, today: dt.date) -> bool:
    """A batch's cards can be redeemed up to and including its expiry date."""
    return today > expiry


def is_redeemable(state: CardState, expiry: dt.date, today: dt.date) -> bool:
    """Only a sold, unfrozen card whose batch has not expired can be redeemed."""
    return state in TRANSITIONS[Event.REDEEM][0] and not has_expired(expiry, today)


def refusal(state: CardState, expiry: dt.date, today: dt.date) -> Outcome | None:
    """Why a card in ``state`` cannot be recharged on ``today``, or ``None`` if it can."""
    outcome = STATE_OUTCOME[state]
    if outcome is None and not is_redeemable(state, expiry, today):
        return Outcome.CARD_EXPIRED
    return outcome


def describe(state: CardState) -> str:
    return state.value.replace("_", " ")


PAST = {
    Event.CHECK: "checked",
    Event.INTAKE: "taken into stock",
    Event.ISSUE: "issued",
    Event.SELL: "sold",
    Event.RETURN: "returned to the warehouse",
    Event.REDEEM: "redeemed",
    Event.VOID: "voided",
    Event.FREEZE: "frozen",
    Event.UNFREEZE: "unfrozen",
}


class QuoteState(StrEnum):
    """Where a recharge quote (``recharge_quotes.state``) stands."""

    HELD = "held"
    COMMITTED = "committed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# A held quote leaves ``held`` once, for one of these (a conditional UPDATE
# on ``state = 'held'`` makes the first of a racing commit and cancel win).
QUOTE_ENDS = frozenset({QuoteState.COMMITTED, QuoteState.CANCELLED, QuoteState.EXPIRED})
# The ends after which the same key may be quoted (held) again: the caller
# declined or let the hold lapse, and then keyed a PIN once more.
QUOTE_REOPENS = frozenset({QuoteState.CANCELLED, QuoteState.EXPIRED})


class PostStatus(StrEnum):
    """Where a recharge record's posting to the marketing system (``recharges.post_status``) stands."""

    PENDING = "pending"
    POSTED = "posted"
    REJECTED = "rejected"  # refused for good; a person must look at it (retry it, or resolve it)
    RESOLVED = "resolved"  # a rejected posting a person settled outside the system (final)


class ReversalStatus(StrEnum):
    """Where a reversal (冲正, ``reversals.status``) stands: filed, then decided by finance."""

    PENDING = "pending"  # filed by an administrator, waiting for finance
    APPROVED = "approved"  # its counter-entry goes to the marketing system through the outbox
    REJECTED = "rejected"  # finance refused it (final: a recharge has at most one reversal)


class RequestStatus(StrEnum):
    """Where an issue request (领卡申请, ``issue_requests.status``) stands."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    COLLECTED = "collected"
    CANCELLED = "cancelled"


class NoticeStatus(StrEnum):
    """Where an SMS notice of a posting (``sms_notices.status``, 短信告知) stands."""

    PENDING = "pending"  # waiting to be handed to the SMS platform
    SENT = "sent"  # in the SMS platform's interface table
    SKIPPED = "skipped"  # the marketing system has no phone number for the account; nothing to send
    REJECTED = "rejected"  # the SMS platform refuses it for good; a person must look at it
