"""File check (核对): reconcile a factory's post-production file with its batch, card by card.

The file is verified (signature, then authenticated decryption) before a
single row is read, and parsed completely before anything is written; any
malformed row rejects the whole file and changes nothing.  Each card of the
batch ends up in exactly one class:

``matched``    in the file once, with its box, face value and PIN as ordered
``missing``    ordered but not in the file
``extra``      in the file but not part of the batch
``duplicate``  in the file more than once (none of the copies is trusted)
``altered``    in the file with a different PIN, face value or box
``damaged``    reported by the factory as spoiled in production

Matched cards move from ordered to produced; damaged cards are voided (the
factory has told us they are spoiled).  Missing, duplicate and altered cards
stay ordered until an administrator resolves them (usually by voiding).  The
same file can never be imported twice, and a batch's second file is checked
only when the operator says why.

Memory is bounded by the batch, never by the file: a signed file may hold
any number of rows outside the batch.  The batch's PIN hashes and each
card's outcome are flat arrays indexed by serial (about 35 bytes a card);
the serials of rows outside the batch go to an anonymous temporary file
while the file is parsed; every finding is written to the database in
chunks once parsing has finished, and the report keeps only the first
``FINDINGS_KEPT`` (``iter_findings`` streams them all).
"""

# test-case-name: tests.cardmgmt.test_checks

import hmac
import json
import re
import tempfile
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from cardmgmt import batches, factories, sealed_files
from cardmgmt.context import Context, Permission
from cardmgmt.errors import FileRejected, InvalidInput
from cardmgmt.models import Batch, Card, CheckFinding, FactoryFile
from cardmgmt.pins import PIN_DIGITS
from cardmgmt.serials import SERIAL_DIGITS, luhn_digit, make_serial, parse_serial
from cardmgmt.states import Event, sources, target

POST_PRODUCTION = "post-production"
KINDS = ("matched", "missing", "extra", "duplicate", "altered", "damaged")
# per-card outcome codes in the working array
UNSEEN, MATCHED, ALTERED, DAMAGED, DUPLICATE = range(5)
# What differs on an altered card, one bit each in the flags array.
PIN_DIFFERS, FACE_DIFFERS, BOX_DIFFERS = 1, 2, 4
# A face value or box number too large for the 64-bit arrays (only the
# fact that it is wrong is kept, not the digits).
_OUT_OF_RANGE = -(2**63)

# The report holds this many findings; all of them are in the database.
FINDINGS_KEPT = 1_000
# Findings per INSERT: enough to make the inserts cheap, few enough that a
# million of them never sit in memory at once.
FINDINGS_CHUNK = 5_000
# A row is about 55 bytes; anything much longer is not a row of ours, and a
# cap keeps one giant "row" from being buffered whole.
MAX_ROW_BYTES = 1_024
# A reason is one line in the operation log and on the file's record.
MAX_REASON_CHARS = 200


@dataclass
class CheckReport:
    """What a check found.

    ``counts`` covers every card and row; ``findings`` holds the first
    ``FINDINGS_KEPT`` findings (cards of the batch in serial order, then
    rows outside it in file order), and ``iter_findings`` streams all of
    them from the database (file ``file_id``).
    """

    batch_no: str
    file_digest: str
    counts: dict[str, int]
    findings: list[tuple[str, str, str]] = field(default_factory=list)  # (serial, kind, detail)
    produced: int = 0  # cards moved to produced by this check
    voided: int = 0  # damaged cards voided by this check
    file_id: int = 0  # the factory_files row this check recorded
    recheck_reason: str | None = None  # why a batch's further file was checked

    @property
    def clean(self) -> bool:
        return all(self.counts[k] == 0 for k in KINDS if k != "matched")

    @property
    def has_discrepancies(self) -> bool:
        """Any card that did not match: the operator must resolve it (the CLI exits 3)."""
        return not self.clean

    @property
    def findings_total(self) -> int:
        """How many findings the check recorded (``findings`` may hold fewer)."""
        return sum(n for k, n in self.counts.items() if k != "matched")

    def finding_rows(self) -> list[dict[str, str]]:
        """The findings this report holds as rows: serial, finding, detail."""
        return [{"serial": s, "finding": k, "detail": d} for s, k, d in self.findings]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data, with the findings it holds (``iter_findings`` has them all)."""
        return {"batch_no": self.batch_no, "file_digest": self.file_digest, "counts": self.counts,
                "produced": self.produced, "voided": self.voided, "findings": self.finding_rows()}


@dataclass
class _Tally:
    """What parsing found, card by card, in arrays sized by the batch."""

    codes: bytearray  # outcome per card of the batch
    flags: bytearray  # for altered cards: which fields differ
    faces: array | None = None  # face value per card, made when the first one differs
    boxes: array | None = None  # box number per card, made when the first one differs
    rows: int = 0
    extras: int = 0


def _index_runs(codes: bytearray, wanted: int) -> Iterator[tuple[int, int]]:
    """Runs ``(first, last)`` of indices whose code is ``wanted``."""
    start = codes.find(wanted)
    while start != -1:
        end = start
        while end + 1 < len(codes) and codes[end + 1] == wanted:
            end += 1
        yield start, end
        start = codes.find(wanted, end + 1)


def _reject(path: Path, line_no: int, why: str) -> FileRejected:
    return FileRejected(f"{path.name} line {line_no}: {why}; the file was rejected whole")


def _clean_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    text = " ".join(reason.split())
    if not text:
        raise InvalidInput("the recheck reason is empty")
    if len(text) > MAX_REASON_CHARS:
        raise InvalidInput(f"the recheck reason is longer than {MAX_REASON_CHARS} characters")
    if not text.isprintable():
        raise InvalidInput("the recheck reason contains control characters")
    # The reason is kept in readable form; a PIN pasted into it must not be.
    if re.search(rf"\d{{{PIN_DIGITS}}}", text):
        raise InvalidInput(f"the recheck reason must not contain a PIN ({PIN_DIGITS} digits in a row)")
    return text


def _slot(value: int) -> int:
    return value if -(2**63) < value < 2**63 else _OUT_OF_RANGE


def check_file(
    ctx: Context,
    batch_no: str,
    path: Path,
    progress: Callable[[int], None] | None = None,
    *,
    recheck_reason: str | None = None,
) -> CheckReport:
    """Verify, parse and reconcile a post-production file for ``batch_no``, and record the result.

    A batch that already has a checked file gets another only with a
    ``recheck_reason`` (recorded in the operation log and on the file's
    record); the same file twice is refused whatever the reason.  Every
    refusal is a ``CardError`` with one line and changes nothing.
    """
    ctx.require(Permission.MANAGE_CARDS)
    reason = _clean_reason(recheck_reason)
    session = ctx.session
    batch = batches.get(session, batch_no)
    factory = session.get_one(factories.Factory, batch.factory_id)
    with sealed_files.open_sealed(
        path, kind=POST_PRODUCTION, sender=factories.public_key(factory), recipient=ctx.keys.system_private
    ) as sealed, tempfile.TemporaryFile() as extra_spool:
        # The batch row is locked (PostgreSQL) so that two checks of one batch
        # run one after the other and the second sees the first's file.
        session.execute(select(Batch.id).where(Batch.id == batch.id).with_for_update())
        earlier = session.execute(select(FactoryFile).where(FactoryFile.digest == sealed.digest)).scalar_one_or_none()
        if earlier is not None:
            raise FileRejected(f"{path.name} was already imported on {earlier.checked_at:%Y-%m-%d %H:%M} (file {earlier.id}); nothing changed")
        header = sealed.header
        if header.get("batch_no") != batch.batch_no:
            raise FileRejected(f"{path.name} is for batch {header.get('batch_no')!r}, not {batch.batch_no}; nothing changed")
        if header.get("source_digest") not in (None, batch.new_card_digest):
            raise FileRejected(f"{path.name} was produced from another new-card file than batch {batch.batch_no}'s; nothing changed")
        checked = session.execute(
            select(FactoryFile).where(FactoryFile.batch_id == batch.id).order_by(FactoryFile.id.desc()).limit(1)
        ).scalar_one_or_none()
        if checked is not None and reason is None:
            raise FileRejected(
                f"batch {batch.batch_no} was already checked with {checked.file_name} on {checked.checked_at:%Y-%m-%d %H:%M} "
                f"(file {checked.id}); to check {path.name} too, say why with --recheck-reason; nothing changed"
            )
        if checked is None and reason is not None:
            raise InvalidInput(f"batch {batch.batch_no} has no checked file yet; a recheck reason is only for a further file")

        # extra_spool is an unnamed temporary file, readable by its owner only
        # and gone when closed: it holds serials outside the batch, no PINs.
        tally = _parse(ctx, batch, sealed, path, extra_spool, progress)
        if header.get("quantity") != tally.rows:
            raise FileRejected(f"{path.name} declares {header.get('quantity')} rows but holds {tally.rows}; nothing changed")

        # Parsing finished and the file authenticated once more: from here on
        # the findings are trusted and written.
        codes = tally.codes
        counts = {
            "matched": codes.count(MATCHED),
            "missing": codes.count(UNSEEN),
            "extra": tally.extras,
            "duplicate": codes.count(DUPLICATE),
            "altered": codes.count(ALTERED),
            "damaged": codes.count(DAMAGED),
        }
        first_seq = parse_serial(batch.first_serial)
        produced = _move_runs(ctx, batch, codes, MATCHED, Event.CHECK, first_seq)
        voided = _move_runs(ctx, batch, codes, DAMAGED, Event.VOID, first_seq)
        record = FactoryFile(
            batch_id=batch.id, digest=sealed.digest, file_name=path.name[:256], summary=json.dumps(counts),
            checked_by=ctx.actor.name, recheck_reason=reason,
        )
        session.add(record)
        session.flush()
        kept = _record_findings(ctx, record.id, _findings(batch, tally, first_seq, extra_spool))
        after: dict[str, Any] = {"file_id": record.id, "digest": sealed.digest, **counts, "produced": produced, "voided_damaged": voided}
        if reason is not None:
            after.update(recheck_of_file=checked.id if checked else None, recheck_reason=reason)
        ctx.log("batch.check", f"batch {batch.batch_no} file {path.name[:100]}", after=after)
        return CheckReport(batch.batch_no, sealed.digest, counts, kept, produced, voided, record.id, reason)


def _parse(
    ctx: Context,
    batch: Batch,
    sealed: sealed_files.SealedFile,
    path: Path,
    extra_spool: BinaryIO,
    progress: Callable[[int], None] | None,
) -> _Tally:
    """Read every row of the verified file and classify it; raise ``FileRejected`` at the first bad row."""
    q = batch.quantity
    first_seq = parse_serial(batch.first_serial)
    hashes = bytearray(32 * q)
    check_digits = bytearray(q)  # the stored serials' check digits: no Luhn sum per row for our own cards
    # Streamed (a server-side cursor on PostgreSQL), so only the flat array is held.
    hash_rows = ctx.session.execute(
        select(Card.serial, Card.pin_hash).where(Card.batch_id == batch.id).execution_options(yield_per=50_000)
    )
    for serial, digest in hash_rows:
        i = int(serial[:-1]) - first_seq
        hashes[32 * i : 32 * i + 32] = digest
        check_digits[i] = ord(serial[-1])
    tally = _Tally(codes=bytearray(q), flags=bytearray(q))
    codes, flags = tally.codes, tally.flags
    key = ctx.keys.pin_key
    face, box_size = batch.face_value, batch.box_size
    rows = 0
    for line_no, line in enumerate(sealed.rows(max_row_bytes=MAX_ROW_BYTES), 1):
        parts = line.rstrip(b"\n").split(b",")
        if len(parts) != 5:
            raise _reject(path, line_no, f"expected 5 fields, found {len(parts)}")
        serial_b, box_b, face_b, pin, status_b = parts
        try:
            serial, status = serial_b.decode("ascii"), status_b.decode("ascii")
            box, face_value = int(box_b), int(face_b)
        except ValueError:
            raise _reject(path, line_no, "a field is not ASCII or not a number") from None
        if len(serial) != SERIAL_DIGITS or not serial.isdigit():
            raise _reject(path, line_no, "the serial is malformed")
        if len(pin) != PIN_DIGITS or not pin.isdigit():
            raise _reject(path, line_no, "the PIN field is malformed")
        if status not in ("ok", "damaged"):
            raise _reject(path, line_no, f"unknown status {status[:20]!r}")
        rows += 1
        i = int(serial[:-1]) - first_seq
        in_batch = 0 <= i < q
        if (check_digits[i] if in_batch else 48 + luhn_digit(serial[:-1])) != serial_b[-1]:
            raise _reject(path, line_no, "the serial is malformed")
        if not in_batch:
            extra_spool.write(serial_b + b"\n")
            tally.extras += 1
            continue
        if codes[i] != UNSEEN:
            codes[i] = DUPLICATE
            continue
        wrong = 0
        if not hmac.compare_digest(hmac.digest(key, pin, "sha256"), bytes(hashes[32 * i : 32 * i + 32])):
            wrong |= PIN_DIFFERS
        if face_value != face:
            wrong |= FACE_DIFFERS
            if tally.faces is None:
                tally.faces = array("q", bytes(8 * q))
            tally.faces[i] = _slot(face_value)
        if box != i // box_size + 1:
            wrong |= BOX_DIFFERS
            if tally.boxes is None:
                tally.boxes = array("q", bytes(8 * q))
            tally.boxes[i] = _slot(box)
        if wrong:
            codes[i], flags[i] = ALTERED, wrong
        elif status == "damaged":
            codes[i] = DAMAGED
        else:
            codes[i] = MATCHED
        if progress and rows % 10_000 == 0:
            progress(10_000)
    tally.rows = rows
    return tally


def _altered_detail(tally: _Tally, i: int, face: int, box: int) -> str:
    wrong = tally.flags[i]
    parts = []
    if wrong & PIN_DIFFERS:
        parts.append("PIN differs")
    if wrong & FACE_DIFFERS:
        assert tally.faces is not None
        given = tally.faces[i]
        parts.append(f"face value {given} fen instead of {face}" if given != _OUT_OF_RANGE else f"an impossible face value instead of {face}")
    if wrong & BOX_DIFFERS:
        assert tally.boxes is not None
        given = tally.boxes[i]
        parts.append(f"box {given} instead of {box}" if given != _OUT_OF_RANGE else f"an impossible box number instead of {box}")
    return "; ".join(parts)


def _findings(batch: Batch, tally: _Tally, first_seq: int, extra_spool: BinaryIO) -> Iterator[tuple[str, str, str]]:
    """Every finding: the batch's cards in serial order, then the rows outside it in file order."""
    fixed = {UNSEEN: ("missing", "not in the file"), DUPLICATE: ("duplicate", "appears more than once"),
             DAMAGED: ("damaged", "reported damaged by the factory")}
    face, box_size = batch.face_value, batch.box_size
    for i, code in enumerate(tally.codes):
        if code == MATCHED:
            continue
        if code == ALTERED:
            yield make_serial(first_seq + i), "altered", _altered_detail(tally, i, face, i // box_size + 1)
        else:
            kind, detail = fixed[code]
            yield make_serial(first_seq + i), kind, detail
    extra_spool.seek(0)
    for line in extra_spool:
        yield line.rstrip(b"\n").decode("ascii"), "extra", "not part of this batch"


def _record_findings(ctx: Context, file_id: int, findings: Iterator[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Insert every finding in chunks; return the first ``FINDINGS_KEPT`` of them."""
    kept: list[tuple[str, str, str]] = []
    chunk: list[dict[str, Any]] = []
    for serial, kind, detail in findings:
        if len(kept) < FINDINGS_KEPT:
            kept.append((serial, kind, detail))
        chunk.append({"file_id": file_id, "serial": serial, "kind": kind, "detail": detail[:256]})
        if len(chunk) >= FINDINGS_CHUNK:
            ctx.session.execute(insert(CheckFinding), chunk)
            chunk = []
    if chunk:
        ctx.session.execute(insert(CheckFinding), chunk)
    return kept


def _move_runs(ctx: Context, batch: Batch, codes: bytearray, wanted: int, event: Event, first_seq: int) -> int:
    """Apply ``event`` to the cards with outcome ``wanted`` that the state machine lets move."""
    to = target(event)
    assert to is not None
    allowed = [s.value for s in sources(event)]
    moved = 0
    for lo, hi in _index_runs(codes, wanted):
        moved += ctx.session.execute(
            update(Card)
            .where(
                Card.batch_id == batch.id,
                Card.serial.between(make_serial(first_seq + lo), make_serial(first_seq + hi)),
                Card.state.in_(allowed),
            )
            .values(state=to.value, prior_state=None),
            execution_options={"synchronize_session": False},
        ).rowcount
    return moved


def iter_findings(session: Session, file_id: int) -> Iterator[tuple[str, str, str]]:
    """Every finding of a checked file as ``(serial, kind, detail)``, in the order found, streamed."""
    result = session.execute(
        select(CheckFinding.serial, CheckFinding.kind, CheckFinding.detail)
        .where(CheckFinding.file_id == file_id)
        .order_by(CheckFinding.id)
        .execution_options(yield_per=FINDINGS_CHUNK)
    )
    for serial, kind, detail in result:  # noqa: UP028 - plain tuples, not Rows
        yield serial, kind, detail

