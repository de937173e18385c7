"""Business halls (营业厅): where issued cards go to be sold."""

# test-case-name: tests.cardmgmt.test_issuing

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from cardmgmt.errors import AlreadyExists, InvalidInput, NotFound
from cardmgmt.models import Hall
from cardmgmt.operators import Permission
from cardmgmt.system import Context

CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


def add(ctx: Context, code: str, name: str) -> Hall:
    ctx.require(Permission.MANAGE_CARDS)
    if not CODE.match(code):
        raise InvalidInput(f"hall code {code!r} must be 1-32 letters, digits, '.', '-' or '_'")
    if not name.strip():
        raise InvalidInput("a hall needs a name")
    if ctx.session.execute(select(Hall.id).where(Hall.code == code)).first():
        raise AlreadyExists(f"hall {code} already exists")
    hall = Hall(code=code, name=name.strip()[:128])
    ctx.session.add(hall)
    ctx.session.flush()
    ctx.log("hall.add", f"hall {code}", after={"name": hall.name})
    return hall


def get(session: Session, code: str) -> Hall:
    hall = session.execute(select(Hall).where(Hall.code == code)).scalar_one_or_none()
    if hall is None:
        raise NotFound(f"hall {code!r} does not exist")
    return hall


def listing(session: Session) -> list[Hall]:
    return list(session.execute(select(Hall).order_by(Hall.code)).scalars())
