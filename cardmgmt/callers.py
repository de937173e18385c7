"""Caller numbers as the lockouts count them: one number, one form.

A switch may present the same mobile as ``+8613900000001``,
``008613900000001``, ``8613900000001`` or ``13900000001``, and a landline
with or without its trunk ``0``.  Counted apart, each form would be a fresh
budget of wrong PINs, so every number is reduced to its national significant
number before it is counted or stored: the country code 86 (after ``+`` or
``00``) and a leading trunk ``0`` are dropped.  Numbers of other countries
keep their ``+`` and country code.  An empty number is a withheld one.
"""

# test-case-name: tests.cardmgmt.test_callers

import re

from cardmgmt import fields
from cardmgmt.errors import InvalidInput

PRESENTED = re.compile(f"^{fields.CALLER_PATTERN}$")
COUNTRY = "86"
MOBILE_DIGITS = 11  # 1xx xxxx xxxx


def normalise(caller: str) -> str:
    """The national significant number of a presented caller number (``""`` when withheld)."""
    if not isinstance(caller, str) or not PRESENTED.match(caller):
        raise InvalidInput(f"caller must be up to {fields.CALLER_MAX} digits")
    if caller.startswith("+"):
        international = caller[1:]
    elif caller.startswith("00"):
        international = caller[2:]
    else:
        international = None
    if international is not None:
        if not international.startswith(COUNTRY):
            return "+" + international
        return international[len(COUNTRY):]
    if caller.startswith("0"):
        return caller[1:]
    # Some switches send the country code without "+" for mobiles.
    if len(caller) == len(COUNTRY) + MOBILE_DIGITS and caller.startswith(COUNTRY + "1"):
        return caller[len(COUNTRY):]
    return caller
