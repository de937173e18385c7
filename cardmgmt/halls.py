"""The sales hierarchy (各级营业厅): city offices, county offices and the business halls that sell cards.

A node's ``level`` says what it is; a parent is always of a higher level
(a hall may sit under a county or directly under a city; a county under a
city; a city is a root).  Only halls receive issued cards and sell them.
``tree`` returns every node with its own figures and the figures rolled up
from everything beneath it, so a county sees its halls' stock and sales.
"""

# test-case-name: tests.cardmgmt.test_sales

import datetime as dt
import re
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cardmgmt.context import Context, Permission
from cardmgmt.errors import AlreadyExists, InvalidInput, NotFound
from cardmgmt.models import Batch, Card, Hall, HallLevel, Sale
from cardmgmt.states import CardState

CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")

# Higher levels first: a parent's rank is always below its child's.
RANK = {HallLevel.CITY: 0, HallLevel.COUNTY: 1, HallLevel.HALL: 2}


def add(ctx: Context, code: str, name: str, *, level: HallLevel | str = HallLevel.HALL, parent: str | None = None) -> Hall:
    """Add a node of the hierarchy; a city has no parent, anything else may have one of a higher level."""
    ctx.require(Permission.MANAGE_CARDS)
    if not CODE.match(code):
        raise InvalidInput(f"hall code {code!r} must be 1-32 letters, digits, '.', '-' or '_'")
    if not name.strip():
        raise InvalidInput("a hall needs a name")
    try:
        level = HallLevel(level)
    except ValueError:
        raise InvalidInput(f"level must be one of {', '.join(HallLevel)}, not {level!r}") from None
    if ctx.session.execute(select(Hall.id).where(Hall.code == code)).first():
        raise AlreadyExists(f"hall {code} already exists")
    parent_id = None
    if parent is not None:
        above = get(ctx.session, parent)
        if RANK[above.level] >= RANK[level]:
            raise InvalidInput(f"a {level} cannot sit under {above.level} {above.code}; its parent must be of a higher level")
        parent_id = above.id
    hall = Hall(code=code, name=name.strip()[:128], level=level, parent_id=parent_id)
    ctx.session.add(hall)
    ctx.session.flush()
    ctx.log("hall.add", f"hall {code}", after={"name": hall.name, "level": level.value, "parent": parent})
    return hall


def get(session: Session, code: str) -> Hall:
    hall = session.execute(select(Hall).where(Hall.code == code)).scalar_one_or_none()
    if hall is None:
        raise NotFound(f"hall {code!r} does not exist")
    return hall


def selling_hall(session: Session, code: str) -> Hall:
    """The hall ``code``, refusing an office: only a hall holds and sells cards."""
    hall = get(session, code)
    if hall.level is not HallLevel.HALL:
        raise InvalidInput(f"{hall.code} is a {hall.level} office; cards go to and are sold by halls only")
    return hall


def listing(session: Session) -> list[Hall]:
    return list(session.execute(select(Hall).order_by(Hall.code)).scalars())


def beneath(session: Session, code: str) -> list[int]:
    """The ids of ``code`` and of every node under it, at any depth."""
    root = get(session, code)
    children: dict[int | None, list[int]] = {}
    for hid, parent in session.execute(select(Hall.id, Hall.parent_id)):
        children.setdefault(parent, []).append(hid)
    out, todo = [], [root.id]
    while todo:
        hid = todo.pop()
        out.append(hid)
        todo.extend(children.get(hid, []))
    return out


@dataclass
class Figures:
    """What a node holds and sold: cards issued and not yet sold (and their face value), cards sold (and yuan)."""

    unsold_cards: int = 0
    unsold_value: int = 0  # fen
    sold_cards: int = 0
    sold_value: int = 0  # fen

    def add(self, other: "Figures") -> None:
        self.unsold_cards += other.unsold_cards
        self.unsold_value += other.unsold_value
        self.sold_cards += other.sold_cards
        self.sold_value += other.sold_value


@dataclass
class Node:
    code: str
    name: str
    level: HallLevel
    parent: str | None
    depth: int
    own: Figures
    total: Figures  # own + everything beneath
    children: list["Node"] = field(default_factory=list)


def tree(session: Session, *, sold_from: dt.date | None = None, sold_to: dt.date | None = None) -> list[Node]:
    """Every node in depth-first order (parents before children), with figures rolled up.

    Unsold stock is what a hall holds now; sales count the recorded sales of
    business days ``sold_from``..``sold_to`` (inclusive; either open).
    """
    halls = listing(session)
    own = {h.id: Figures() for h in halls}
    stock = session.execute(
        select(Card.hall_id, func.count(), func.sum(Batch.face_value))
        .join(Batch, Batch.id == Card.batch_id)
        .where(Card.state == CardState.ISSUED.value, Card.hall_id.is_not(None))
        .group_by(Card.hall_id)
    )
    for hid, n, value in stock:
        own[hid].unsold_cards, own[hid].unsold_value = n, int(value or 0)
    sold = select(Sale.hall_id, func.sum(Sale.quantity), func.sum(Sale.amount)).group_by(Sale.hall_id)
    if sold_from is not None:
        sold = sold.where(Sale.day >= sold_from)
    if sold_to is not None:
        sold = sold.where(Sale.day <= sold_to)
    for hid, n, value in session.execute(sold):
        own[hid].sold_cards, own[hid].sold_value = int(n or 0), int(value or 0)
    by_id = {h.id: h for h in halls}
    nodes = {h.id: Node(h.code, h.name, h.level, by_id[h.parent_id].code if h.parent_id else None, 0, own[h.id], Figures())
             for h in halls}
    roots: list[Node] = []
    for h in halls:
        (nodes[h.parent_id].children if h.parent_id else roots).append(nodes[h.id])
    out: list[Node] = []

    def walk(node: Node, depth: int) -> Figures:
        node.depth = depth
        out.append(node)
        node.total.add(node.own)
        for child in node.children:
            node.total.add(walk(child, depth + 1))
        return node.total

    for root in roots:
        walk(root, 0)
    return out
