"""The card state machine, by example and by property (hypothesis)."""

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardmgmt.errors import IllegalTransition
from cardmgmt.outcomes import Outcome
from cardmgmt.states import (
    FINAL,
    INITIAL,
    QUOTE_ENDS,
    QUOTE_REOPENS,
    REMEMBERS_PRIOR,
    STATE_OUTCOME,
    TRANSITIONS,
    CardState,
    Event,
    QuoteState,
    is_redeemable,
    next_state,
    refusal,
    sources,
    target,
    the_target,
)

S = CardState


def test_the_normal_life():
    state = S.ORDERED
    for event in (Event.CHECK, Event.INTAKE, Event.ISSUE, Event.SELL, Event.REDEEM):
        state = next_state(state, event)
    assert state is S.REDEEMED


def test_an_issued_card_must_be_sold_before_it_is_redeemed():
    with pytest.raises(IllegalTransition, match="a card that is issued cannot be redeemed"):
        next_state(S.ISSUED, Event.REDEEM)
    assert next_state(S.ISSUED, Event.RETURN) is S.IN_STOCK
    with pytest.raises(IllegalTransition, match="a card that is sold cannot be returned"):
        next_state(S.SOLD, Event.RETURN)


@pytest.mark.parametrize("final", sorted(FINAL))
@pytest.mark.parametrize("event", list(Event))
def test_final_states_never_move(final, event):
    with pytest.raises(IllegalTransition):
        next_state(final, event, prior=S.IN_STOCK)


def test_unfreeze_returns_to_prior_state():
    assert next_state(S.FROZEN, Event.UNFREEZE, prior=S.ISSUED) is S.ISSUED
    with pytest.raises(IllegalTransition):
        next_state(S.FROZEN, Event.UNFREEZE, prior=None)
    with pytest.raises(IllegalTransition):
        next_state(S.FROZEN, Event.UNFREEZE, prior=S.REDEEMED)


def test_illegal_transition_message_names_state_and_event():
    with pytest.raises(IllegalTransition, match="a card that is in stock cannot be redeemed"):
        next_state(S.IN_STOCK, Event.REDEEM)


def test_only_sold_unexpired_cards_are_redeemable():
    today = dt.date(2027, 1, 1)
    assert is_redeemable(S.SOLD, today, today)
    assert not is_redeemable(S.SOLD, today - dt.timedelta(days=1), today)
    for s in set(S) - {S.SOLD}:
        assert not is_redeemable(s, today, today)


class Card:
    """A model card that follows the machine, remembering the state it was frozen from."""

    def __init__(self) -> None:
        self.state, self.prior = S.ORDERED, None
        self.redeemed_from: list[CardState] = []

    def apply(self, event: Event) -> bool:
        try:
            new = next_state(self.state, event, self.prior)
        except IllegalTransition:
            return False
        if event is Event.FREEZE:
            self.prior = self.state
        else:
            self.prior = None
        if event is Event.REDEEM:
            self.redeemed_from.append(self.state)
        self.state = new
        return True


@given(st.lists(st.sampled_from(list(Event)), max_size=40))
def test_random_event_sequences_keep_the_invariants(events):
    card = Card()
    seen_final = None
    for event in events:
        before = card.state
        moved = card.apply(event)
        assert moved == (before in sources(event))
        if seen_final is not None:
            assert card.state == seen_final, "a final state never changes"
        if card.state in FINAL:
            seen_final = card.state
        assert (card.state is S.FROZEN) == (card.prior is not None)
    assert card.redeemed_from in ([], [S.SOLD]), "redeemed only once, and only once sold"


@given(st.sampled_from(sorted(TRANSITIONS[Event.FREEZE][0])))
def test_freeze_then_unfreeze_is_identity(state):
    card = Card()
    card.state = state
    assert card.apply(Event.FREEZE) and card.apply(Event.UNFREEZE)
    assert card.state is state


# --- completeness: adding a card state is one file (and a migration) --------------------


def test_every_state_has_transition_rows():
    """Each state is entered by some event (or is the first), and each non-final state can move on."""
    entered = {to for _, to in TRANSITIONS.values() if to is not None}
    for state in S:
        assert state is INITIAL or state in entered, f"no event leads to {state}"
        leaving = [e for e in Event if state in sources(e)]
        assert (state in FINAL) == (not leaving), f"{state}: final={state in FINAL}, events {leaving}"
    assert set(TRANSITIONS) == set(Event)


def test_returning_to_the_prior_state_needs_an_event_that_remembered_it():
    returning = [e for e in Event if target(e) is None]
    assert returning == [Event.UNFREEZE]
    remembered_into = {the_target(e) for e in REMEMBERS_PRIOR}
    for event in returning:
        assert sources(event) <= remembered_into


def test_every_state_says_what_a_caller_hears():
    assert set(STATE_OUTCOME) == set(S), "a card state without an outcome"
    for state, outcome in STATE_OUTCOME.items():
        # None only for the states a card is redeemed from: then only expiry or a hold refuses.
        assert (outcome is None) == (state in sources(Event.REDEEM)), state
        assert outcome is None or outcome is not Outcome.OK


def test_refusal_by_state_and_expiry():
    today = dt.date(2027, 1, 1)
    assert refusal(S.SOLD, today, today) is None
    assert refusal(S.SOLD, today - dt.timedelta(days=1), today) is Outcome.CARD_EXPIRED
    assert refusal(S.ISSUED, today, today) is Outcome.CARD_NOT_SOLD
    assert refusal(S.REDEEMED, today, today) is Outcome.CARD_USED
    assert refusal(S.VOIDED, today - dt.timedelta(days=1), today) is Outcome.CARD_VOIDED
    assert refusal(S.FROZEN, today, today) is Outcome.CARD_FROZEN
    for state in (S.ORDERED, S.PRODUCED, S.IN_STOCK):
        assert refusal(state, today, today) is Outcome.CARD_NOT_ISSUED


def test_only_unfreezing_has_no_fixed_target():
    with pytest.raises(ValueError):
        the_target(Event.UNFREEZE)
    assert the_target(Event.ISSUE) is S.ISSUED


def test_a_quote_leaves_held_for_any_other_state():
    assert QUOTE_ENDS == set(QuoteState) - {QuoteState.HELD}
    assert QUOTE_REOPENS < QUOTE_ENDS and QuoteState.COMMITTED not in QUOTE_REOPENS
