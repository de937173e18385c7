"""The card state machine: every state, every allowed change, in one place.

::

    ordered ──check──▶ produced ──intake──▶ in_stock ──issue──▶ issued ──redeem──▶ redeemed
       │                  │                    │                  │
       └──────────────────┴───── void ─────────┴──────────────────┴──▶ voided (final)
                          produced / in_stock / issued ──freeze──▶ frozen ──unfreeze──▶ (back)

A frozen card remembers the state it was frozen from and returns to it; it
can also be voided (a lost box that never turns up).  *Expired* is not a
state: it is derived from the batch's expiry date, so nothing has to run at
midnight for a card to stop being redeemable.

Bulk operations use ``sources(event)`` in a conditional ``UPDATE ... WHERE
state IN (...)`` so the database, not a Python check, settles races.
"""

# test-case-name: tests.cardmgmt.test_states

import datetime as dt
from enum import StrEnum

from cardmgmt.errors import IllegalTransition


class CardState(StrEnum):
    ORDERED = "ordered"
    PRODUCED = "produced"
    IN_STOCK = "in_stock"
    ISSUED = "issued"
    REDEEMED = "redeemed"
    VOIDED = "voided"
    FROZEN = "frozen"


class Event(StrEnum):
    CHECK = "check"
    INTAKE = "intake"
    ISSUE = "issue"
    REDEEM = "redeem"
    VOID = "void"
    FREEZE = "freeze"
    UNFREEZE = "unfreeze"


S = CardState
FINAL = frozenset({S.REDEEMED, S.VOIDED})

# event -> (states it may start from, state it leads to; None = the state before freezing)
TRANSITIONS: dict[Event, tuple[frozenset[CardState], CardState | None]] = {
    Event.CHECK: (frozenset({S.ORDERED}), S.PRODUCED),
    Event.INTAKE: (frozenset({S.PRODUCED}), S.IN_STOCK),
    Event.ISSUE: (frozenset({S.IN_STOCK}), S.ISSUED),
    Event.REDEEM: (frozenset({S.ISSUED}), S.REDEEMED),
    Event.VOID: (frozenset(set(S) - FINAL), S.VOIDED),
    Event.FREEZE: (frozenset({S.PRODUCED, S.IN_STOCK, S.ISSUED}), S.FROZEN),
    Event.UNFREEZE: (frozenset({S.FROZEN}), None),
}


def sources(event: Event) -> frozenset[CardState]:
    """The states from which ``event`` is allowed."""
    return TRANSITIONS[event][0]


def target(event: Event) -> CardState | None:
    """Where ``event`` leads; ``None`` for unfreezing, which returns to the state before freezing."""
    return TRANSITIONS[event][1]


def next_state(state: CardState, event: Event, prior: CardState | None = None) -> CardState:
    """The state a card in ``state`` moves to on ``event``.

    ``prior`` is the state a frozen card was frozen from.  Raises
    ``IllegalTransition`` when the machine does not allow the change.
    """
    allowed, target = TRANSITIONS[event]
    if state not in allowed:
        raise IllegalTransition(f"a card that is {describe(state)} cannot be {PAST[event]}")
    if target is None:
        if prior is None or prior not in TRANSITIONS[Event.FREEZE][0]:
            raise IllegalTransition("a frozen card without a valid earlier state cannot be unfrozen")
        return prior
    return target


def is_redeemable(state: CardState, expiry: dt.date, today: dt.date) -> bool:
    """Only an issued, unfrozen card whose batch has not expired can be redeemed."""
    return state == S.ISSUED and today <= expiry


def describe(state: CardState) -> str:
    return state.value.replace("_", " ")


PAST = {
    Event.CHECK: "checked",
    Event.INTAKE: "taken into stock",
    Event.ISSUE: "issued",
    Event.REDEEM: "redeemed",
    Event.VOID: "voided",
    Event.FREEZE: "frozen",
    Event.UNFREEZE: "unfrozen",
}
