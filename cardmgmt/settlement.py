"""Hall settlement (电费解交): what halls pay finance for the cards they sold, and checking a hall's own sales record.

Each business day a hall owes the face value of the cards it sold that day
(``sales``); finance staff record what it paid in (``record_payment``: a hall,
a business day, an amount in fen, the bank slip's reference).  The balance
carries from day to day, ``balance(d) = balance(d-1) + owed(d) - paid(d)``;
the figures are computed in ``cardmgmt.reports.settlement``, with every other
aggregate.

A payment is never edited.  A mistaken one is *voided* (``void_payment``,
with a reason): a counter-entry of the negated amount on the same hall and
day, so the day's paid-in figure is right again and both rows stay in the
table and in the operation log.  A bank slip's reference is unique per hall
among payments that stand (the database's unique index settles two finance
officers recording the same slip at once); voiding frees it, so the slip can
be recorded again with the right amount.

``reconcile`` compares a hall's own record of a day's sales (a CSV file its
counter or POS exports; format in ``read_hall_file``) with the sales the back
end recorded for that hall and day, sale by sale (a sale is keyed by its
serial range).
"""

# test-case-name: tests.cardmgmt.test_settlement

import csv
import datetime as dt
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cardmgmt import halls
from cardmgmt.context import Context, Permission
from cardmgmt.days import business_day
from cardmgmt.db import dialect_insert
from cardmgmt.errors import AlreadyExists, ConflictError, InvalidInput, NotFound
from cardmgmt.models import Hall, HallPayment, PaymentKind, Sale, utcnow
from cardmgmt.money import MAX_FEN, format_fen, parse_yuan
from cardmgmt.serials import parse_serial

REFERENCE_MAX = HallPayment.__table__.c.reference.type.length  # type: ignore[attr-defined]
NOTE_MAX = HallPayment.__table__.c.note.type.length  # type: ignore[attr-defined]


def _reference(text: str) -> str:
    ref = (text or "").strip()
    if not 1 <= len(ref) <= REFERENCE_MAX or not ref.isprintable():
        raise InvalidInput(f"a payment reference (the bank slip's number) is 1 to {REFERENCE_MAX} printable characters")
    return ref


def _note(text: str | None, *, required: bool = False) -> str | None:
    note = " ".join((text or "").split())
    if required and not note:
        raise InvalidInput("give a reason")
    if len(note) > NOTE_MAX:
        raise InvalidInput(f"a note or reason is at most {NOTE_MAX} characters")
    return note or None


def _amount(amount: int | str) -> int:
    """Fen from yuan text (``money.parse_yuan``: at most two decimals, positive) or from a positive int of fen."""
    if isinstance(amount, str):
        return parse_yuan(amount)
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_FEN:
        raise InvalidInput("a payment is a positive amount of fen")
    return amount


def payment_row(p: HallPayment, hall: str) -> dict[str, object]:
    """A payment as a plain row (amount in fen), as listings and the CLI show it."""
    return {"payment": p.id, "hall": hall, "day": p.day.isoformat(), "kind": p.kind.value, "amount": p.amount,
            "reference": p.reference, "voids": p.voids_id or "", "note": p.note or "", "recorded_by": p.recorded_by,
            "recorded_at": p.recorded_at.isoformat(timespec="seconds")}


def record_payment(
    ctx: Context,
    hall_code: str,
    day: dt.date,
    amount: int | str,
    reference: str,
    *,
    note: str | None = None,
    now: dt.datetime | None = None,
) -> HallPayment:
    """Record what hall ``hall_code`` paid in for business day ``day``; finance staff only.

    Refused, with nothing changed: an office or unknown hall, a day after
    today's business day, an amount that is not positive yuan with at most
    two decimals, a reference already standing for this hall.
    """
    ctx.require(Permission.RECORD_PAYMENTS)
    fen = _amount(amount)
    ref = _reference(reference)
    why = _note(note)
    now = now or utcnow()
    if day > business_day(now):
        raise InvalidInput(f"{day.isoformat()} is in the future; a payment is recorded for a business day that has begun")
    session = ctx.session
    hall = halls.selling_hall(session, hall_code)
    # ON CONFLICT rather than a look-up first: of two officers recording the
    # same slip at once, the second waits for the first and inserts nothing.
    payment_id = session.execute(
        dialect_insert(session.get_bind().dialect.name, HallPayment.__table__)
        .values(hall_id=hall.id, day=day, kind=PaymentKind.PAYMENT.value, amount=fen, reference=ref,
                live_reference=ref, note=why, recorded_by=ctx.actor.name, recorded_at=now)
        .on_conflict_do_nothing(index_elements=["hall_id", "live_reference"])
        .returning(HallPayment.__table__.c.id)
    ).scalar_one_or_none()
    if payment_id is None:
        raise AlreadyExists(f"bank slip {ref!r} is already recorded for hall {hall.code}; "
                            "void that payment first if it was wrong; nothing changed")
    ctx.log("settle.pay", f"hall {hall.code}",
            after={"payment": payment_id, "day": day.isoformat(), "amount": fen, "reference": ref, "note": why})
    return session.get_one(HallPayment, payment_id)


def void_payment(ctx: Context, payment_id: int, reason: str, *, now: dt.datetime | None = None) -> HallPayment:
    """Void a mistaken payment by a counter-entry on its hall and day; the payment's row stays as it was recorded."""
    ctx.require(Permission.RECORD_PAYMENTS)
    why = _note(reason, required=True)
    session = ctx.session
    t = HallPayment.__table__
    # The payment stops standing in one conditional UPDATE: of two voids at once exactly one gets the row.
    freed = session.execute(
        update(t).where(t.c.id == payment_id, t.c.kind == PaymentKind.PAYMENT.value, t.c.live_reference.is_not(None))
        .values(live_reference=None)
    ).rowcount
    if freed != 1:
        found = session.get(HallPayment, payment_id)
        if found is None:
            raise NotFound(f"payment {payment_id} does not exist")
        if found.kind is PaymentKind.VOID:
            raise InvalidInput(f"{payment_id} is itself a void; record a new payment instead")
        raise ConflictError(f"payment {payment_id} is already voided; nothing changed")
    original = session.get_one(HallPayment, payment_id)
    void = HallPayment(hall_id=original.hall_id, day=original.day, kind=PaymentKind.VOID, amount=-original.amount,
                       reference=original.reference, live_reference=None, voids_id=original.id, note=why,
                       recorded_by=ctx.actor.name, recorded_at=now or utcnow())
    session.add(void)
    session.flush()
    code = session.get_one(Hall, original.hall_id).code
    ctx.log("settle.void", f"hall {code}",
            before={"payment": original.id, "day": original.day.isoformat(), "amount": original.amount,
                    "reference": original.reference},
            after={"void": void.id, "amount": void.amount, "reason": why})
    return void


def payments(
    session: Session,
    *,
    hall_code: str | None = None,
    day_from: dt.date | None = None,
    day_to: dt.date | None = None,
    ids: Iterable[int] | None = None,
) -> list[dict[str, object]]:
    """Recorded payments and voids in the order they were recorded; ``hall_code`` includes every hall beneath it."""
    q = select(HallPayment, Hall.code).join(Hall, Hall.id == HallPayment.hall_id).order_by(HallPayment.id)
    if ids is not None:
        q = q.where(HallPayment.id.in_(list(ids)))
    if hall_code is not None:
        q = q.where(HallPayment.hall_id.in_(halls.beneath(session, hall_code)))
    if day_from is not None:
        q = q.where(HallPayment.day >= day_from)
    if day_to is not None:
        q = q.where(HallPayment.day <= day_to)
    return [payment_row(p, code) for p, code in session.execute(q)]


# --- a hall's own record of a day's sales, against the back end's -------------------------------------------

FILE_COLUMNS = ("first_serial", "last_serial", "cards", "amount")
MAX_FILE_LINES = 100_000


@dataclass(frozen=True)
class HallSale:
    """One sale as the hall recorded it: a serial range, its cards and the yuan taken (fen)."""

    first_serial: str
    last_serial: str
    cards: int
    amount: int


def parse_hall_file(text: str) -> list[HallSale]:
    """The sales in a hall's day file; ``InvalidInput`` naming the line for anything wrong, so the file is refused whole.

    The file is CSV (UTF-8, comma-separated, a header line first) with the
    columns ``first_serial,last_serial,cards,amount`` in any order (other
    columns are ignored): each line one sale of a serial range, ``cards`` the
    number of cards sold, ``amount`` the yuan taken, with at most two
    decimals (``500`` or ``500.00``).  A single card is a range of one.
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    missing = [c for c in FILE_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InvalidInput(f"the hall's file has no {', '.join(missing)} column; its header must name "
                           f"{','.join(FILE_COLUMNS)}")
    out: list[HallSale] = []
    seen: set[tuple[str, str]] = set()
    for row in reader:
        line = reader.line_num
        if line > MAX_FILE_LINES:
            raise InvalidInput(f"the hall's file has more than {MAX_FILE_LINES} lines")
        if all(not (v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        try:
            first, last = (row["first_serial"] or "").strip(), (row["last_serial"] or "").strip()
            if parse_serial(first) > parse_serial(last):
                raise InvalidInput(f"the range {first}-{last} runs backwards")
            cards_text = (row["cards"] or "").strip()
            if not cards_text.isdigit() or not 0 < int(cards_text) <= MAX_FILE_LINES * 1000:
                raise InvalidInput("cards must be a positive whole number")
            amount = parse_yuan((row["amount"] or "").strip())
        except InvalidInput as e:
            raise InvalidInput(f"the hall's file, line {line}: {e.message}") from None
        if (first, last) in seen:
            raise InvalidInput(f"the hall's file, line {line}: the range {first}-{last} is listed twice")
        seen.add((first, last))
        out.append(HallSale(first, last, int(cards_text), amount))
    return out


def read_hall_file(path: Path) -> list[HallSale]:
    """``parse_hall_file`` of the file at ``path``; a file that is not UTF-8 text is refused."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path.name} is not UTF-8 text; export the hall's sales as CSV") from None
    return parse_hall_file(text)


MATCHED, ONLY_IN_FILE, ONLY_IN_BACKEND, DIFFERS = "matched", "only_in_file", "only_in_backend", "differs"


@dataclass
class Reconciliation:
    """A hall's day compared sale by sale: one line per serial range found on either side."""

    hall: str
    day: dt.date
    lines: list[dict[str, object]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        out = {MATCHED: 0, ONLY_IN_FILE: 0, ONLY_IN_BACKEND: 0, DIFFERS: 0}
        for line in self.lines:
            out[str(line["outcome"])] += 1
        return out

    @property
    def agrees(self) -> bool:
        return all(line["outcome"] == MATCHED for line in self.lines)

    def totals(self) -> dict[str, int]:
        return {
            "file_cards": sum(int(line["file_cards"] or 0) for line in self.lines),  # type: ignore[call-overload]
            "file_amount": sum(int(line["file_amount"] or 0) for line in self.lines),  # type: ignore[call-overload]
            "backend_cards": sum(int(line["backend_cards"] or 0) for line in self.lines),  # type: ignore[call-overload]
            "backend_amount": sum(int(line["backend_amount"] or 0) for line in self.lines),  # type: ignore[call-overload]
        }

    def as_dict(self) -> dict[str, object]:
        return {"hall": self.hall, "day": self.day.isoformat(), "agrees": self.agrees, "counts": self.counts,
                "totals": self.totals(), "lines": self.lines}


def reconcile(session: Session, hall_code: str, day: dt.date, file_sales: Iterable[HallSale]) -> Reconciliation:
    """Compare a hall's own sales of ``day`` with the back end's, sale by sale (keyed by serial range)."""
    hall = halls.selling_hall(session, hall_code)
    backend = {
        (s.first_serial, s.last_serial): (s.quantity, s.amount)
        for s in session.scalars(select(Sale).where(Sale.hall_id == hall.id, Sale.day == day))
    }
    theirs = {(s.first_serial, s.last_serial): (s.cards, s.amount) for s in file_sales}
    result = Reconciliation(hall.code, day)
    for key in sorted(backend.keys() | theirs.keys()):
        mine, their = backend.get(key), theirs.get(key)
        if mine is None:
            outcome = ONLY_IN_FILE
        elif their is None:
            outcome = ONLY_IN_BACKEND
        else:
            outcome = MATCHED if mine == their else DIFFERS
        result.lines.append({
            "first_serial": key[0], "last_serial": key[1], "outcome": outcome,
            "file_cards": their[0] if their else None, "file_amount": their[1] if their else None,
            "backend_cards": mine[0] if mine else None, "backend_amount": mine[1] if mine else None,
        })
    return result


def describe(line: dict[str, object]) -> str:
    """One line of a reconciliation in words, amounts in yuan."""
    def side(cards: object, amount: object) -> str:
        return "none" if cards is None else f"{cards} cards, {format_fen(int(amount))} yuan"  # type: ignore[call-overload]

    return (f"{line['first_serial']}-{line['last_serial']}: {line['outcome']} "
            f"(hall: {side(line['file_cards'], line['file_amount'])}; "
            f"back end: {side(line['backend_cards'], line['backend_amount'])})")
