"""Card serial numbers: an 11-digit global sequence plus a Luhn check digit.

Serials are printed on the card and typed by people, so the check digit
catches a single mistyped digit and most swapped neighbours before anything
is looked up.  The sequence is global (not per batch), which is what keeps
serials unique across all batches; a batch owns a contiguous run of it.
Twelve fixed-width digits also sort as text in numeric order, so a serial
range is a plain ``BETWEEN`` in SQL.
"""

# test-case-name: tests.cardmgmt.test_serials

from cardmgmt.errors import InvalidInput
from cardmgmt.fields import SERIAL_DIGITS

SEQUENCE_DIGITS = SERIAL_DIGITS - 1  # and one check digit
MAX_SEQUENCE = 10**SEQUENCE_DIGITS - 1


def luhn_digit(digits: str) -> int:
    """The Luhn check digit to append to ``digits``."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


def make_serial(sequence: int) -> str:
    """The printed serial for position ``sequence`` of the global sequence."""
    if not 1 <= sequence <= MAX_SEQUENCE:
        raise InvalidInput(f"serial sequence {sequence} is out of range")
    body = f"{sequence:0{SEQUENCE_DIGITS}d}"
    return body + str(luhn_digit(body))


def parse_serial(text: str) -> int:
    """Check a typed serial and return its sequence number.

    Raises ``InvalidInput`` for anything that is not twelve digits with a
    correct check digit.
    """
    s = text.strip()
    if len(s) != SERIAL_DIGITS or not s.isdigit():
        # Never echo what was typed: a card's PIN, typed into the wrong field,
        # would land on the screen and in the shell's scrollback.
        raise InvalidInput(f"a serial is {SERIAL_DIGITS} digits; that was {len(s)} characters, not a serial")
    if luhn_digit(s[:-1]) != int(s[-1]):
        raise InvalidInput(f"serial {s} has a wrong check digit")
    return int(s[:-1])


def runs(serials: list[str]) -> list[tuple[str, str, int]]:
    """Group serials into runs of consecutive numbers: ``[(first, last, count), ...]``."""
    out: list[tuple[str, str, int]] = []
    for s in sorted(serials):
        seq = int(s[:-1])
        if out and int(out[-1][1][:-1]) + 1 == seq:
            first, _, n = out[-1]
            out[-1] = (first, s, n + 1)
        else:
            out.append((s, s, 1))
    return out
