"""The formats of the fields that cross the system's edges, defined once.

An electricity account number (户号), a card PIN (卡密) and a card serial
have fixed lengths that the database columns, the recharge core, the
factory files, the HTTP protocol, the phone dialog and the spoken prompts
all depend on.  They are stated here and nowhere else in ``cardmgmt``; the
per-call package ``ivr`` (standard library only, copied into Asterisk's
sandbox) keeps its own copy in ``ivr/fields.py``, which a test keeps equal
to this one.
"""

# test-case-name: tests.cardmgmt.test_fields

ACCOUNT_DIGITS = 10  # an electricity account number (户号)
PIN_DIGITS = 18  # a card PIN (卡密): about 60 bits
SERIAL_DIGITS = 12  # a card serial: an 11-digit sequence and a Luhn check digit

# A phone call's id, chosen by the channel: the idempotency key of its recharges.
CALL_ID_CHARS = "A-Za-z0-9._:-"  # a regular-expression character class
CALL_ID_MAX = 64
# The caller's number as the network gives it; empty when withheld.
CALLER_CHARS = "0-9+*#"
CALLER_MAX = 32
# The n-th card of one call, from 1.
MAX_SEQ = 99
# A PIN as keyed: anything up to this many digits is taken (and counted as a
# wrong PIN unless it is well formed), so a long entry is not a bad request.
PIN_ENTRY_MAX = 64

# Full-match patterns (no anchors: use with ``re.fullmatch``, or as OpenAPI patterns with ^...$).
ACCOUNT_PATTERN = f"[0-9]{{{ACCOUNT_DIGITS}}}"
PIN_PATTERN = f"[0-9]{{{PIN_DIGITS}}}"
PIN_ENTRY_PATTERN = f"[0-9]{{1,{PIN_ENTRY_MAX}}}"
CALL_ID_PATTERN = f"[{CALL_ID_CHARS}]{{1,{CALL_ID_MAX}}}"
CALLER_PATTERN = f"[{CALLER_CHARS}]{{0,{CALLER_MAX}}}"

# The recharge key "<call id>#<seq>" (cardmgmt.recharge.recharge_key) must fit its column.
RECHARGE_KEY_MAX = CALL_ID_MAX + 1 + len(str(MAX_SEQ))
