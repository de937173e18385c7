"""Stock: choosing cards by batch, box or serial range, and moving them through the state machine.

Every bulk change — intake, voiding, freezing, unfreezing, checking — goes
through ``transition``: it counts the selected cards by state, refuses the
whole change if any card is in a state the event does not allow (so a range
that crosses cards in different states changes nothing), and then applies a
single conditional ``UPDATE ... WHERE state IN (...)`` whose row count must
match, so a concurrent change by another operator also makes it fail whole.
Stock counts (盘点) compare what the administrator found with what the
database expects and record every discrepancy.
"""

# test-case-name: tests.cardmgmt.test_stock

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, func, literal, select, update
from sqlalchemy.orm import Session

from cardmgmt import batches
from cardmgmt.context import Context, Permission
from cardmgmt.errors import ConflictError, IllegalTransition, InvalidInput, NotFound
from cardmgmt.models import Batch, Card, Hall, Intake, StockCount, StockCountFinding
from cardmgmt.serials import parse_serial
from cardmgmt.states import PAST, REMEMBERS_PRIOR, CardState, Event, describe, sources, target


@dataclass(frozen=True)
class Selection:
    """Which cards: one serial, a serial range, a whole batch, or one box of a batch."""

    batch_no: str | None = None
    box_no: int | None = None
    first_serial: str | None = None
    last_serial: str | None = None
    skip_voided: bool = False

    @classmethod
    def serial(cls, serial: str) -> "Selection":
        return cls(first_serial=serial, last_serial=serial)

    def describe(self) -> str:
        if self.first_serial:
            if self.first_serial == self.last_serial:
                return f"card {self.first_serial}"
            return f"serials {self.first_serial}-{self.last_serial}"
        if self.box_no is not None:
            return f"batch {self.batch_no} box {self.box_no}"
        return f"batch {self.batch_no}"


@dataclass
class Resolved:
    batch: Batch
    where: list[ColumnElement[bool]]
    description: str


def resolve(session: Session, sel: Selection) -> Resolved:
    """Turn a selection into SQL conditions, checking it names real cards of one batch.

    With ``sel.skip_voided`` the voided cards inside the selection are left out
    (a box with one card voided at the check can still be taken in whole);
    without it they count, so a change refuses a selection that holds them.
    """
    if sel.first_serial or sel.last_serial:
        if not (sel.first_serial and sel.last_serial):
            raise InvalidInput("a serial range needs both a first and a last serial")
        if sel.batch_no or sel.box_no is not None:
            raise InvalidInput("give either a serial range or a batch (and box), not both")
        first, last = parse_serial(sel.first_serial), parse_serial(sel.last_serial)
        if first > last:
            raise InvalidInput(f"serial range {sel.first_serial}-{sel.last_serial} runs backwards")
        batch = batches.batch_of_serial(session, sel.first_serial)
        if sel.last_serial > batch.last_serial:
            raise InvalidInput(f"serial range {sel.describe()} crosses batches; split it at {batch.last_serial}")
        where = [Card.batch_id == batch.id, Card.serial.between(sel.first_serial, sel.last_serial)]
        description = f"batch {batch.batch_no} {sel.describe()}"
    elif sel.batch_no:
        batch = batches.get(session, sel.batch_no)
        where = [Card.batch_id == batch.id]
        if sel.box_no is not None:
            boxes = -(-batch.quantity // batch.box_size)
            if not 1 <= sel.box_no <= boxes:
                raise NotFound(f"batch {batch.batch_no} has boxes 1-{boxes}, not {sel.box_no}")
            where.append(Card.box_no == sel.box_no)
        description = sel.describe()
    else:
        raise InvalidInput("choose cards with --batch (and --box), or --from/--to serials, or --serial")
    if sel.skip_voided:
        where.append(Card.state != CardState.VOIDED.value)
        description += " (voided cards left out)"
    return Resolved(batch, where, description)


def state_counts(session: Session, where: Iterable[ColumnElement[bool]]) -> dict[str, int]:
    rows = session.execute(select(Card.state, func.count()).where(*where).group_by(Card.state))
    return {state: n for state, n in rows}


def transition(
    ctx: Context,
    sel: Selection,
    event: Event,
    *,
    reason: str | None = None,
    extra_values: dict[str, Any] | None = None,
    extra_log: dict[str, Any] | None = None,
) -> int:
    """Apply ``event`` to every selected card, or to none; returns how many changed."""
    ctx.require(Permission.MANAGE_CARDS)
    r = resolve(ctx.session, sel)
    return apply(ctx, r, event, reason=reason, extra_values=extra_values, extra_log=extra_log)


def apply(
    ctx: Context,
    r: Resolved,
    event: Event,
    *,
    reason: str | None = None,
    extra_values: dict[str, Any] | None = None,
    extra_log: dict[str, Any] | None = None,
    guard: Iterable[ColumnElement[bool]] = (),
) -> int:
    """``transition`` on an already resolved selection.

    ``guard`` adds conditions to the ``UPDATE`` only (say, the hall the cards
    must still be at): a card that no longer meets them makes the row count
    fall short, and the whole change fails as a race would.
    """
    counts = state_counts(ctx.session, r.where)
    total = sum(counts.values())
    if total == 0:
        raise NotFound(f"{r.description} holds no cards")
    allowed = sources(event)
    refused = {s: n for s, n in counts.items() if s not in allowed}
    if refused:
        detail = ", ".join(f"{n} {describe(CardState(s))}" for s, n in sorted(refused.items()))
        raise IllegalTransition(f"{r.description}: cannot be {PAST[event]} because {detail}; nothing changed")
    values: dict[str, Any] = dict(extra_values or {})
    to = target(event)
    if to is None:
        # Back to the state recorded when the card was frozen.
        values.update(state=Card.prior_state, prior_state=None)
    elif event in REMEMBERS_PRIOR:
        # SET reads the old row, so prior_state gets the state being left.
        values.update(state=literal(to.value), prior_state=Card.state)
    else:
        values.update(state=to.value, prior_state=None)
    result = ctx.session.execute(
        update(Card).where(*r.where, *guard, Card.state.in_([s.value for s in allowed])).values(**values),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != total:
        raise ConflictError(f"{r.description} changed while being {PAST[event]}; nothing changed, try again")
    ctx.log(
        f"card.{event.value}",
        r.description,
        before={"states": counts},
        after={"event": event.value, "count": total, **({"reason": reason} if reason else {}), **(extra_log or {})},
    )
    return total


def require_reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text:
        raise InvalidInput("a reason is required")
    return text[:200]


def intake(ctx: Context, sel: Selection) -> list[Intake]:
    """Take checked (produced) cards into stock; one intake detail row per box."""
    ctx.require(Permission.MANAGE_CARDS)
    r = resolve(ctx.session, sel)
    boxes = ctx.session.execute(
        select(Card.box_no, func.min(Card.serial), func.max(Card.serial), func.count())
        .where(*r.where)
        .group_by(Card.box_no)
        .order_by(Card.box_no)
    ).all()
    apply(ctx, r, Event.INTAKE)
    records = [
        Intake(batch_id=r.batch.id, box_no=box, first_serial=lo, last_serial=hi, quantity=n, operator=ctx.actor.name)
        for box, lo, hi, n in boxes
    ]
    ctx.session.add_all(records)
    ctx.session.flush()
    return records


def void(ctx: Context, sel: Selection, reason: str | None) -> int:
    """Void cards for good (damaged, lost for good, wrong); ``reason`` is required."""
    return transition(ctx, sel, Event.VOID, reason=require_reason(reason))


def freeze(ctx: Context, sel: Selection, reason: str | None) -> int:
    """Freeze cards reported lost or stolen; they keep the state to return to."""
    return transition(ctx, sel, Event.FREEZE, reason=require_reason(reason))


def unfreeze(ctx: Context, sel: Selection, reason: str | None) -> int:
    """Return frozen cards to the state they were frozen from."""
    return transition(ctx, sel, Event.UNFREEZE, reason=require_reason(reason))


@dataclass
class CountResult:
    count: StockCount
    findings: list[StockCountFinding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.count.missing == 0 and self.count.unexpected == 0


def count_stock(ctx: Context, sel: Selection, *, scanned: list[str] | None = None, counted: int | None = None) -> CountResult:
    """Record a stock count of a box or range.

    With ``scanned`` serials, every expected in-stock card that was not found
    is *missing* and every serial found that is not an in-stock card of the
    scope is *unexpected* (with what the card really is).  With only a
    ``counted`` number, the difference is recorded.
    """
    ctx.require(Permission.MANAGE_CARDS)
    if (scanned is None) == (counted is None):
        raise InvalidInput("give either the scanned serials or the counted quantity")
    r = resolve(ctx.session, sel)
    session = ctx.session
    expected = set(
        session.execute(select(Card.serial).where(*r.where, Card.state == CardState.IN_STOCK.value)).scalars()
    )
    findings: list[StockCountFinding] = []
    if scanned is not None:
        found: set[str] = set()
        for i, text in enumerate(scanned, 1):
            try:
                parse_serial(text)
            except InvalidInput as e:
                raise InvalidInput(f"scanned line {i}: {e}") from None
            found.add(text.strip())
        missing = sorted(expected - found)
        unexpected = sorted(found - expected)
        findings += [StockCountFinding(serial=s, kind="missing", detail="in stock but not found") for s in missing]
        known = dict(
            session.execute(
                select(Card.serial, Card.state).where(Card.serial.in_(unexpected))
            ).all()
        ) if unexpected else {}
        for s in unexpected:
            state = known.get(s)
            detail = "unknown serial" if state is None else (
                f"card is {describe(CardState(state))}" if state != CardState.IN_STOCK.value else "in stock elsewhere"
            )
            findings.append(StockCountFinding(serial=s, kind="unexpected", detail=detail))
        n_counted, n_missing, n_unexpected = len(found), len(missing), len(unexpected)
    else:
        assert counted is not None
        if counted < 0:
            raise InvalidInput("a counted quantity cannot be negative")
        n_counted = counted
        n_missing, n_unexpected = max(0, len(expected) - counted), max(0, counted - len(expected))
    record = StockCount(
        scope=r.description[:128],
        expected=len(expected),
        counted=n_counted,
        missing=n_missing,
        unexpected=n_unexpected,
        operator=ctx.actor.name,
    )
    session.add(record)
    session.flush()
    for f in findings:
        f.count_id = record.id
    session.add_all(findings)
    session.flush()
    ctx.log(
        "stock.count",
        record.scope,
        after={"count_id": record.id, "expected": record.expected, "counted": n_counted, "missing": n_missing, "unexpected": n_unexpected},
    )
    return CountResult(record, findings)


def describe_card(session: Session, serial: str) -> dict[str, Any]:
    """One card as an administrator may see it (never its PIN or PIN hash)."""

    parse_serial(serial)
    row = session.execute(
        select(Card, Batch, Hall.code)
        .join(Batch, Batch.id == Card.batch_id)
        .outerjoin(Hall, Hall.id == Card.hall_id)
        .where(Card.serial == serial.strip())
    ).first()
    if row is None:
        raise NotFound(f"card {serial.strip()} does not exist")
    c, b, hall = row
    return {
        "serial": c.serial,
        "batch_no": b.batch_no,
        "box": c.box_no,
        "face_value": b.face_value,
        "expiry": b.expiry.isoformat(),
        "state": c.state,
        "frozen_from": c.prior_state or "",
        "hall": hall or "",
        "issue_request": c.issue_request_id or "",
    }
