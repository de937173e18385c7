"""The formats of the fields the per-call code reads from callers and sends to the recharge service.

A copy of ``cardmgmt.fields`` for the per-call package, which runs in
Asterisk's sandbox with the standard library only and must not import
``cardmgmt``; ``tests.ivr.test_fields`` keeps the two equal.  The dialog
counts the digits a caller keys by these lengths, and ``ivr.protocol``
builds the request fields (and so the OpenAPI description) from them.
"""

# test-case-name: tests.ivr.test_fields

ACCOUNT_DIGITS = 10  # an electricity account number (户号)
# An account number shown to staff who need not see it whole (customer
# service's look-ups): its first and last digits, the rest as MASK_CHAR
# (3100000001 → 31****0001).  The caller who keyed it hears it whole.
ACCOUNT_SHOWN_HEAD = 2
ACCOUNT_SHOWN_TAIL = 4
MASK_CHAR = "*"
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
