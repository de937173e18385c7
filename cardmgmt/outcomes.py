"""What a caller may hear from the recharge service: one closed set of outcome codes.

Every channel (the hotline's dialog, a web page, a POS terminal) turns these
codes into its own words; the state machines in ``cardmgmt.states`` say which
outcome explains a card that cannot be recharged, and ``ivr/dialog.py``
repeats the codes as plain strings (a test keeps them equal).
"""

# test-case-name: tests.cardmgmt.test_states

from enum import StrEnum


class Outcome(StrEnum):
    """Everything a caller may need to hear; a closed set shared by every channel."""

    OK = "ok"
    WRONG_PIN = "wrong_pin"
    CARD_USED = "card_used"
    CARD_VOIDED = "card_voided"
    CARD_FROZEN = "card_frozen"
    CARD_EXPIRED = "card_expired"
    CARD_NOT_ISSUED = "card_not_issued"
    CARD_NOT_SOLD = "card_not_sold"
    CARD_HELD = "card_held"
    UNKNOWN_ACCOUNT = "unknown_account"
    LOCKED_OUT = "locked_out"
    HOLD_EXPIRED = "hold_expired"
    NO_QUOTE = "no_quote"
    SERVICE_UNAVAILABLE = "service_unavailable"
