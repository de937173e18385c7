"""Card batches (制卡): register an order, generate its cards, and seal the new-card file.

Generation and export are one step on purpose.  The PINs are needed by the
factory but must never be kept by the system, so they exist only in memory,
a chunk at a time, between being drawn and being encrypted into the
new-card file; only their keyed hashes reach the database.  A batch whose
file could not be written is rolled back whole.

The new-card file (see ``sealed_files``) is sealed for the factory's key and
signed with the system's key.  Rows are ``serial,box_no,pin``.
"""

# test-case-name: tests.cardmgmt.test_batches

import datetime as dt
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from cardmgmt import factories, pins, sealed_files
from cardmgmt.context import Context, Permission
from cardmgmt.db import bulk_insert
from cardmgmt.errors import AlreadyExists, InvalidInput, NotFound
from cardmgmt.models import Batch, Card, Counter
from cardmgmt.serials import MAX_SEQUENCE, make_serial, parse_serial
from cardmgmt.states import CardState

NEW_CARD = "new-card"
MAX_QUANTITY = 10_000_000
MAX_BOX_SIZE = 10_000
CHUNK = 20_000
BATCH_NO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
SERIAL_COUNTER = "card_serial"

Progress = Callable[[int], None]


def allocate_serials(session: Session, quantity: int) -> int:
    """Reserve ``quantity`` consecutive serial sequence numbers; returns the first.

    The counter row is updated in place, so on PostgreSQL its row lock makes
    concurrent batch creations queue, and on SQLite the write lock does.
    """
    if session.get(Counter, SERIAL_COUNTER) is None:
        session.execute(insert(Counter).values(name=SERIAL_COUNTER, value=0))
    session.execute(update(Counter).where(Counter.name == SERIAL_COUNTER).values(value=Counter.value + quantity))
    last = session.execute(select(Counter.value).where(Counter.name == SERIAL_COUNTER)).scalar_one()
    if last > MAX_SEQUENCE:
        raise InvalidInput("the serial number space is exhausted")
    return last - quantity + 1


def validate_order(batch_no: str, face_value: int, quantity: int, box_size: int, expiry: dt.date, today: dt.date) -> None:
    if not BATCH_NO.match(batch_no):
        raise InvalidInput(f"batch number {batch_no!r} must be 1-32 letters, digits, '.', '-' or '_'")
    if face_value <= 0:
        raise InvalidInput("a face value must be positive")
    if not 1 <= quantity <= MAX_QUANTITY:
        raise InvalidInput(f"quantity must be between 1 and {MAX_QUANTITY}")
    if not 1 <= box_size <= MAX_BOX_SIZE:
        raise InvalidInput(f"box size must be between 1 and {MAX_BOX_SIZE}")
    if expiry <= today:
        raise InvalidInput(f"expiry {expiry} is not in the future")


def create(
    ctx: Context,
    *,
    batch_no: str,
    face_value: int,
    quantity: int,
    box_size: int,
    expiry: dt.date,
    factory_name: str,
    out: Path,
    progress: Progress | None = None,
    today: dt.date | None = None,
) -> Batch:
    """Order a batch: allocate serials, generate PINs, store their hashes, write the new-card file."""
    ctx.require(Permission.MANAGE_CARDS)
    validate_order(batch_no, face_value, quantity, box_size, expiry, today or dt.date.today())
    if not out.parent.is_dir():
        raise InvalidInput(f"directory {out.parent} does not exist")
    if out.exists() and not out.is_dir():
        # It may be the only copy of another batch's PINs, still on its way to
        # the factory.  (A directory in the way cannot be overwritten: the
        # write fails and the batch is rolled back.)
        raise InvalidInput(f"{out} already exists; refusing to overwrite a new-card file")
    session = ctx.session
    if session.execute(select(Batch.id).where(Batch.batch_no == batch_no)).first():
        raise AlreadyExists(f"batch {batch_no} already exists")
    factory = factories.get(session, factory_name)
    first = allocate_serials(session, quantity)
    batch = Batch(
        batch_no=batch_no,
        face_value=face_value,
        quantity=quantity,
        box_size=box_size,
        expiry=expiry,
        first_serial=make_serial(first),
        last_serial=make_serial(first + quantity - 1),
        factory_id=factory.id,
        new_card_digest="",
        created_by=ctx.actor.name,
    )
    session.add(batch)
    session.flush()

    def rows() -> Iterator[bytes]:
        key = ctx.keys.pin_key
        for start in range(0, quantity, CHUNK):
            n = min(CHUNK, quantity - start)
            chunk_pins = pins.generate(n)
            records = []
            lines = []
            for i, pin in enumerate(chunk_pins, start):
                serial = make_serial(first + i)
                box = i // box_size + 1
                records.append((batch.id, serial, box, pins.pin_hash(key, pin), CardState.ORDERED.value))
                lines.append(f"{serial},{box},{pin}\n".encode())
            bulk_insert(session, "cards", ("batch_id", "serial", "box_no", "pin_hash", "state"), records)
            del chunk_pins, records
            yield from lines
            if progress:
                progress(n)

    header = {
        "batch_no": batch_no,
        "face_value": face_value,
        "quantity": quantity,
        "box_size": box_size,
        "expiry": expiry.isoformat(),
        "first_serial": batch.first_serial,
        "last_serial": batch.last_serial,
    }
    # If the commit after this fails, a file may be left for a batch that does
    # not exist; it is harmless, because its post-production file names an
    # unknown batch and is rejected.
    batch.new_card_digest = sealed_files.write_sealed(
        out, kind=NEW_CARD, header=header, rows=rows(), recipient=factories.public_key(factory), signer=ctx.keys.system_private
    )
    ctx.log(
        "batch.create",
        f"batch {batch_no}",
        after={**header, "factory": factory.name, "new_card_digest": batch.new_card_digest},
    )
    return batch


def get(session: Session, batch_no: str) -> Batch:
    b = session.execute(select(Batch).where(Batch.batch_no == batch_no)).scalar_one_or_none()
    if b is None:
        raise NotFound(f"batch {batch_no!r} does not exist")
    return b


def listing(session: Session) -> list[Batch]:
    return list(session.execute(select(Batch).order_by(Batch.id)).scalars())


def batch_of_serial(session: Session, serial: str) -> Batch:
    """The batch a typed serial belongs to (checks the serial's digits first)."""
    parse_serial(serial)
    b = session.execute(
        select(Batch).where(Batch.first_serial <= serial, Batch.last_serial >= serial)
    ).scalar_one_or_none()
    if b is None:
        raise NotFound(f"serial {serial} belongs to no batch")
    return b


def card_count(session: Session, batch: Batch) -> int:
    return session.execute(select(func.count()).select_from(Card).where(Card.batch_id == batch.id)).scalar_one()
