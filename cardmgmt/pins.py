"""Card PINs (卡密): generated from the OS's cryptographic source, stored only as a keyed hash.

A PIN is ``fields.PIN_DIGITS`` (18) decimal digits, about 60 bits, drawn without bias by rejection
sampling from ``os.urandom``; guessing one among millions of live cards is
hopeless, and the recharge service's lockouts cap the attempts anyway.  The
database keeps ``HMAC-SHA256(pin_key, pin)``, so a copy of the database
without the key directory reveals nothing that can be checked offline.
"""

# test-case-name: tests.cardmgmt.test_pins

import hmac
import os

from cardmgmt.fields import PIN_DIGITS

_MODULUS = 10**PIN_DIGITS
# The largest multiple of 10**PIN_DIGITS below 2**64: values at or above it
# are redrawn, so every PIN is equally likely.
_LIMIT = (2**64 // _MODULUS) * _MODULUS


def generate(count: int) -> list[str]:
    """``count`` random PINs (duplicates are astronomically unlikely; the database's
    unique index on the hash is what guarantees there are none)."""
    out: list[str] = []
    while len(out) < count:
        need = count - len(out)
        words = memoryview(os.urandom(8 * (need + need // 16 + 1))).cast("Q")
        # zfill rather than a format spec built from PIN_DIGITS: as fast as a literal one.
        out.extend(str(w % _MODULUS).zfill(PIN_DIGITS) for w in words if w < _LIMIT)
    del out[count:]
    return out


def pin_hash(key: bytes, pin: str) -> bytes:
    """The stored form of a PIN."""
    return hmac.digest(key, pin.encode("ascii"), "sha256")


def is_well_formed(pin: str) -> bool:
    """Shape only: ``PIN_DIGITS`` digits.  Says nothing about whether any card has this PIN."""
    return len(pin) == PIN_DIGITS and pin.isascii() and pin.isdigit()
