"""Money as integer fen (分), and the only place that converts it to and from yuan text.

Floats never touch money: amounts are parsed with ``Decimal`` and stored,
compared and added as ``int`` fen.
"""

# test-case-name: tests.cardmgmt.test_money

import re
from decimal import Decimal, InvalidOperation

from cardmgmt.errors import InvalidInput

FEN_PER_YUAN = 100
# Far above any card or recharge, far below what a 64-bit column holds.
MAX_FEN = 10**12


# Plain ASCII digits with an optional decimal point: no exponents ("5e1"),
# separators ("1_000") or full-width digits, which Decimal would accept.
YUAN = re.compile(r"^[0-9]+(\.[0-9]+)?$")


def parse_yuan(text: str) -> int:
    """``"50"`` or ``"50.00"`` yuan → 5000 fen; more than two decimals is an error."""
    if not isinstance(text, str) or not YUAN.match(text.strip()):
        raise InvalidInput(f"amount {str(text)[:20]!r} is not a number of yuan like 50 or 49.50")
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidInput(f"amount {text!r} is not a number of yuan") from None
    if not value.is_finite() or value <= 0:
        raise InvalidInput(f"amount {text!r} must be a positive number of yuan")
    fen = value * FEN_PER_YUAN
    if fen != fen.to_integral_value():
        raise InvalidInput(f"amount {text!r} has more than two decimal places")
    if fen > MAX_FEN:
        raise InvalidInput(f"amount {text!r} is implausibly large")
    return int(fen)


def format_fen(fen: int) -> str:
    """5000 → ``"50.00"``."""
    sign = "-" if fen < 0 else ""
    whole, part = divmod(abs(fen), FEN_PER_YUAN)
    return f"{sign}{whole}.{part:02d}"
