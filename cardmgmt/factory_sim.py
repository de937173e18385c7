"""A stand-in for the card factory, so the whole cycle can be demonstrated and tested.

The real factory receives a *new-card file* (sealed for the factory, signed
by the system), prints the cards and returns a *post-production file* (sealed
for the system, signed by the factory) listing every card it made.  This
module plays that part: it opens a new-card file with the factory's key and
writes the matching post-production file, optionally with the kinds of
mistakes a real factory makes (missing, extra, duplicated, altered or damaged
cards) so the import side can be shown to catch each one.  It streams like
the real files demand; only the indices of the faulted cards are kept.
"""

# test-case-name: tests.cardmgmt.test_factory_sim

from __future__ import annotations

import random
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from Crypto.PublicKey.RSA import RsaKey

from cardmgmt.errors import FileRejected, InvalidInput
from cardmgmt.fields import PIN_DIGITS, SERIAL_DIGITS
from cardmgmt.sealed_files import open_sealed, write_sealed
from cardmgmt.serials import make_serial, parse_serial

NEW_CARD_KIND = "new-card"
POST_PRODUCTION_KIND = "post-production"

# The kinds of fault that each take cards from the batch, in the order the
# randomly chosen cards are handed out to them.  ``extra`` takes none: its
# rows are for serials outside the batch.
_CARD_FAULTS = ("missing", "duplicate", "altered", "damaged")
FAULT_NAMES = ("missing", "extra", "duplicate", "altered", "damaged")

# One new-card row: serial, box number, PIN.  A regex is one C call per row,
# which matters at a million rows; it says nothing about the row in errors.
_NEW_CARD_ROW = re.compile(rb"(\d{%d}),([1-9]\d{0,8}),(\d{%d})\n" % (SERIAL_DIGITS, PIN_DIGITS))


@dataclass(frozen=True)
class Faults:
    """How many cards of each kind of fault the simulated factory introduces.

    ``seed`` makes the choice of *which* cards are faulted repeatable; the
    replacement PINs always come from ``secrets`` and are never repeatable.
    """

    missing: int = 0  # rows dropped
    extra: int = 0  # rows for serials after the batch's last serial
    duplicate: int = 0  # rows written twice, the copy identical
    altered: int = 0  # rows whose PIN is changed to another valid PIN
    damaged: int = 0  # rows with status "damaged"
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in FAULT_NAMES:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidInput(f"fault count {name}={value!r} must be a whole number, 0 or more")

    @property
    def cards_needed(self) -> int:
        """How many distinct cards of the batch the faults take."""
        return sum(getattr(self, name) for name in _CARD_FAULTS)


@dataclass
class ProductionReport:
    """What the simulated factory did: counts, and the serials (never PINs) of each fault."""

    batch_no: str
    rows_read: int
    rows_written: int
    faults: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in FAULT_NAMES})


def _random_pin() -> str:
    return f"{secrets.randbelow(10**PIN_DIGITS):0{PIN_DIGITS}d}"


def _header_field(header: dict[str, Any], key: str, kind: type, name: str) -> Any:
    value = header.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise FileRejected(f"{name} has no valid {key!r} in its header")
    return value


def produce(
    new_card_file: Path,
    out: Path,
    *,
    factory_name: str,
    factory_key: RsaKey,
    system_key: RsaKey,
    faults: Faults = Faults(),
) -> ProductionReport:
    """Make the post-production file ``out`` for the batch in ``new_card_file``.

    ``factory_key`` is the factory's private key (opens the new-card file,
    signs the result); ``system_key`` is the system's public key (must have
    signed the new-card file; the result is sealed for it).  Every row comes
    back with status ``ok`` unless ``faults`` says otherwise; no card gets
    more than one fault.  Raises ``InvalidInput`` if the faults need more
    cards than the batch has, ``FileRejected`` if the new-card file is not a
    valid one.  If anything fails, ``out`` is not written.
    """
    new_card_file = Path(new_card_file)
    name = new_card_file.name
    with open_sealed(new_card_file, kind=NEW_CARD_KIND, sender=system_key, recipient=factory_key) as source:
        header = source.header
        batch_no = _header_field(header, "batch_no", str, name)
        face_value = _header_field(header, "face_value", int, name)
        quantity = _header_field(header, "quantity", int, name)
        box_size = _header_field(header, "box_size", int, name)
        last_serial = _header_field(header, "last_serial", str, name)
        if quantity < 0 or box_size < 1:
            raise FileRejected(f"{name} has an impossible quantity or box size in its header")
        try:
            last_sequence = parse_serial(last_serial)
        except InvalidInput:
            raise FileRejected(f"{name} has no valid 'last_serial' in its header") from None

        if faults.cards_needed > quantity:
            raise InvalidInput(
                f"the faults need {faults.cards_needed} distinct cards but batch {batch_no} has {quantity}"
            )
        # random.sample over a range draws k indices without building the
        # range; its order is random, so slicing it deals the cards out.
        rng = random.Random(faults.seed)
        chosen = rng.sample(range(quantity), faults.cards_needed)
        fault_of: dict[int, str] = {}
        start = 0
        for fault in _CARD_FAULTS:
            count = getattr(faults, fault)
            for index in chosen[start : start + count]:
                fault_of[index] = fault
            start += count
        del chosen

        extra_serials = [make_serial(last_sequence + i) for i in range(1, faults.extra + 1)]
        report = ProductionReport(batch_no=batch_no, rows_read=0, rows_written=0)
        face = str(face_value).encode("ascii")
        # The header goes first in the file, so the row count is worked out
        # from the plan; the generator below checks the plan held.
        planned = quantity - faults.missing + faults.duplicate + faults.extra

        def rows() -> Iterator[bytes]:
            for index, line in enumerate(source.rows()):
                match = _NEW_CARD_ROW.fullmatch(line)
                if match is None:
                    # The row number only: the row itself holds a PIN.
                    raise FileRejected(f"{name} row {index + 1} is not serial,box,pin")
                if index >= quantity:
                    raise FileRejected(f"{name} has more rows than the {quantity} its header says")
                serial, box, pin = match.groups()
                fault = fault_of.get(index)
                if fault is not None:
                    report.faults[fault].append(serial.decode("ascii"))
                status = b"ok"
                if fault == "missing":
                    report.rows_read += 1
                    continue
                if fault == "altered":
                    new_pin = pin
                    while new_pin == pin:
                        new_pin = _random_pin().encode("ascii")
                    pin = new_pin
                elif fault == "damaged":
                    status = b"damaged"
                row = b"%s,%s,%s,%s,%s\n" % (serial, box, face, pin, status)
                yield row
                if fault == "duplicate":
                    yield row
                    report.rows_written += 1
                report.rows_read += 1
                report.rows_written += 1
            if report.rows_read != quantity:
                raise FileRejected(f"{name} has {report.rows_read} rows, but its header says {quantity}")
            for i, serial_text in enumerate(extra_serials):
                # The box the next card after the batch would have gone into.
                box_no = (quantity + i) // box_size + 1
                report.faults["extra"].append(serial_text)
                yield f"{serial_text},{box_no},{face_value},{_random_pin()},ok\n".encode("ascii")
                report.rows_written += 1
            if report.rows_written != planned:  # pragma: no cover - a bug in this function
                raise AssertionError(f"wrote {report.rows_written} rows, planned {planned}")

        write_sealed(
            Path(out),
            kind=POST_PRODUCTION_KIND,
            header={
                "batch_no": batch_no,
                "face_value": face_value,
                "quantity": planned,
                "factory": factory_name,
                "produced_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "source_digest": source.digest,
            },
            rows=rows(),
            recipient=system_key,
            signer=factory_key,
        )
    return report
