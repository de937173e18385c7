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
same file can never be imported twice.  The batch's PIN hashes are held in
one flat ``bytearray`` indexed by serial, so a million-card check needs a
few tens of megabytes.
"""

# test-case-name: tests.cardmgmt.test_checks

import hmac
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from cardmgmt import batches, factories, sealed_files
from cardmgmt.errors import FileRejected
from cardmgmt.models import Batch, Card, CheckFinding, FactoryFile
from cardmgmt.operators import Permission
from cardmgmt.pins import PIN_DIGITS
from cardmgmt.serials import SERIAL_DIGITS, luhn_digit, make_serial, parse_serial
from cardmgmt.states import Event, sources, target
from cardmgmt.system import Context

POST_PRODUCTION = "post-production"
KINDS = ("matched", "missing", "extra", "duplicate", "altered", "damaged")
# per-card outcome codes in the working array
UNSEEN, MATCHED, ALTERED, DAMAGED, DUPLICATE = range(5)


@dataclass
class CheckReport:
    """What a check found; ``findings`` lists every card that did not match."""

    batch_no: str
    file_digest: str
    counts: dict[str, int]
    findings: list[tuple[str, str, str]] = field(default_factory=list)  # (serial, kind, detail)
    produced: int = 0  # cards moved to produced by this check
    voided: int = 0  # damaged cards voided by this check

    @property
    def clean(self) -> bool:
        return all(self.counts[k] == 0 for k in KINDS if k != "matched")

    @property
    def has_discrepancies(self) -> bool:
        """Any card that did not match: the operator must resolve it (the CLI exits 3)."""
        return not self.clean

    def finding_rows(self) -> list[dict[str, str]]:
        """Every finding as a row: serial, finding, detail."""
        return [{"serial": s, "finding": k, "detail": d} for s, k, d in self.findings]

    def to_dict(self) -> dict[str, Any]:
        """The whole report as plain data (the ``--json`` output and the ``--report-json`` file)."""
        return {"batch_no": self.batch_no, "file_digest": self.file_digest, "counts": self.counts,
                "produced": self.produced, "voided": self.voided, "findings": self.finding_rows()}


def _index_runs(codes: bytearray, wanted: int) -> list[tuple[int, int]]:
    """Runs ``(first, last)`` of indices whose code is ``wanted``."""
    out: list[tuple[int, int]] = []
    start = codes.find(wanted)
    while start != -1:
        end = start
        while end + 1 < len(codes) and codes[end + 1] == wanted:
            end += 1
        out.append((start, end))
        start = codes.find(wanted, end + 1)
    return out


def _reject(path: Path, line_no: int, why: str) -> FileRejected:
    return FileRejected(f"{path.name} line {line_no}: {why}; the file was rejected whole")


def check_file(ctx: Context, batch_no: str, path: Path, progress: Callable[[int], None] | None = None) -> CheckReport:
    """Verify, parse and reconcile a post-production file for ``batch_no``, and record the result."""
    ctx.require(Permission.MANAGE_CARDS)
    session = ctx.session
    batch = batches.get(session, batch_no)
    factory = session.get_one(factories.Factory, batch.factory_id)
    with sealed_files.open_sealed(
        path, kind=POST_PRODUCTION, sender=factories.public_key(factory), recipient=ctx.keys.system_private
    ) as sealed:
        earlier = session.execute(select(FactoryFile).where(FactoryFile.digest == sealed.digest)).scalar_one_or_none()
        if earlier is not None:
            raise FileRejected(f"{path.name} was already imported on {earlier.checked_at:%Y-%m-%d %H:%M} (file {earlier.id}); nothing changed")
        header = sealed.header
        if header.get("batch_no") != batch.batch_no:
            raise FileRejected(f"{path.name} is for batch {header.get('batch_no')!r}, not {batch.batch_no}; nothing changed")
        if header.get("source_digest") not in (None, batch.new_card_digest):
            raise FileRejected(f"{path.name} was produced from another new-card file than batch {batch.batch_no}'s; nothing changed")

        q = batch.quantity
        first_seq = parse_serial(batch.first_serial)
        hashes = bytearray(32 * q)
        check_digits = bytearray(q)  # the stored serials' check digits: no Luhn sum per row for our own cards
        # Streamed (a server-side cursor on PostgreSQL), so only the flat array is held.
        hash_rows = session.execute(
            select(Card.serial, Card.pin_hash).where(Card.batch_id == batch.id).execution_options(yield_per=50_000)
        )
        for serial, digest in hash_rows:
            i = int(serial[:-1]) - first_seq
            hashes[32 * i : 32 * i + 32] = digest
            check_digits[i] = ord(serial[-1])
        codes = bytearray(q)
        details: dict[int, str] = {}
        extras: list[tuple[str, str]] = []
        key = ctx.keys.pin_key
        face, box_size = batch.face_value, batch.box_size
        rows = 0
        for line_no, line in enumerate(sealed.rows(), 1):
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
                extras.append((serial, "not part of this batch"))
                continue
            if codes[i] != UNSEEN:
                codes[i] = DUPLICATE
                details[i] = "appears more than once"
                continue
            wrong = []
            if not hmac.compare_digest(hmac.digest(key, pin, "sha256"), bytes(hashes[32 * i : 32 * i + 32])):
                wrong.append("PIN differs")
            if face_value != face:
                wrong.append(f"face value {face_value} fen instead of {face}")
            if box != i // box_size + 1:
                wrong.append(f"box {box} instead of {i // box_size + 1}")
            if wrong:
                codes[i], details[i] = ALTERED, "; ".join(wrong)
            elif status == "damaged":
                codes[i], details[i] = DAMAGED, "reported damaged by the factory"
            else:
                codes[i] = MATCHED
            if progress and rows % 10_000 == 0:
                progress(10_000)
        if header.get("quantity") != rows:
            raise FileRejected(f"{path.name} declares {header.get('quantity')} rows but holds {rows}; nothing changed")
        del hashes

        by_code = Counter(codes)
        counts = {
            "matched": by_code[MATCHED],
            "missing": by_code[UNSEEN],
            "extra": len(extras),
            "duplicate": by_code[DUPLICATE],
            "altered": by_code[ALTERED],
            "damaged": by_code[DAMAGED],
        }
        names = {UNSEEN: "missing", ALTERED: "altered", DAMAGED: "damaged", DUPLICATE: "duplicate"}
        findings = [
            (make_serial(first_seq + i), names[c], details.get(i, "not in the file"))
            for i, c in enumerate(codes)
            if c != MATCHED
        ] + [(s, "extra", d) for s, d in extras]

        produced = _move_runs(ctx, batch, codes, MATCHED, Event.CHECK, first_seq)
        voided = _move_runs(ctx, batch, codes, DAMAGED, Event.VOID, first_seq)
        record = FactoryFile(
            batch_id=batch.id, digest=sealed.digest, file_name=path.name[:256], summary=json.dumps(counts), checked_by=ctx.actor.name
        )
        session.add(record)
        session.flush()
        session.add_all(CheckFinding(file_id=record.id, serial=s, kind=k, detail=d[:256]) for s, k, d in findings)
        ctx.log(
            "batch.check",
            f"batch {batch.batch_no} file {path.name[:100]}",
            after={"file_id": record.id, "digest": sealed.digest, **counts, "produced": produced, "voided_damaged": voided},
        )
        return CheckReport(batch.batch_no, sealed.digest, counts, findings, produced, voided)


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


def findings_of(ctx: Context, file_id: int) -> list[CheckFinding]:
    return list(ctx.session.execute(select(CheckFinding).where(CheckFinding.file_id == file_id).order_by(CheckFinding.id)).scalars())

