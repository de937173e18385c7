"""POS terminals selling cards through the sales-point API: who the terminal is, and its sale.

A POS terminal is a channel client of channel ``pos`` bound to one hall
(``cli.py client add NAME --channel pos --hall H01``).  It signs its
requests like every channel client (``cardmgmt.channel_clients``); once a
recharge server has checked the signature, ``SalesPoint.sell`` does the rest
in one transaction: the request's nonce first (a replay on either server is
refused), then the terminal's row, read again from the database and held
against a concurrent revocation (unknown, revoked, not ``pos``, or bound to
no hall: refused), then ``sales.sell`` at the terminal's own hall.  A card
of another hall is refused there, whole, with nothing changed.

How a terminal acts: a sale runs under a ``Context`` whose actor is the
terminal itself, ``Actor(<client name>, Role.TERMINAL)``.  ``Role.TERMINAL``
grants ``SELL_CARDS`` and nothing else, and no operator can hold it
(``cardmgmt.context.OPERATOR_ROLES``; a CHECK constraint on ``operators.role``),
so a terminal's key buys no operator's power and no operator's permissions
were widened for it.  The sale records the terminal's name as its seller,
channel ``pos``; the operation log names the terminal as the actor, and its
new head is anchored outside the database after the commit, as every
operator's unit of work is.
"""

# test-case-name: tests.cardmgmt.test_terminals, tests.recharge_server.test_sales_api

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cardmgmt import audit, nonces, sales, stock
from cardmgmt.channel_clients import POS, ClientRevoked, UnknownClient
from cardmgmt.context import Actor, Context, Role
from cardmgmt.db import Database
from cardmgmt.errors import PermissionDenied
from cardmgmt.keys import KeyRing
from cardmgmt.models import ChannelClient, Hall, utcnow


def answer(sold: sales.Sold) -> dict[str, Any]:
    """A sale as the sales-point API answers it: amounts in fen, the business day as ISO text."""
    s = sold.sale
    return {
        "outcome": "ok", "sale": s.id, "hall": sold.hall, "cards": s.quantity, "first_serial": s.first_serial,
        "last_serial": s.last_serial, "amount": s.amount, "day": s.day.isoformat(), "repeated": sold.repeated,
    }


class SalesPoint:
    """The card system as a POS terminal sees it: one sale per call, in a transaction of its own.

    ``anchor_file`` is this host's operation-log anchor (``Settings.audit_anchor_file``);
    ``clock`` gives the sale's time (UTC).
    """

    def __init__(
        self, db: Database, keys: KeyRing, anchor_file: Path, clock: Callable[[], dt.datetime] = utcnow
    ) -> None:
        self.db, self.keys, self.anchor_file, self.clock = db, keys, anchor_file, clock

    def sell(self, *, terminal: str, key: str, selection: stock.Selection, nonce: str | None = None) -> dict[str, Any]:
        """Sell the selected cards as ``terminal``, at its hall, under the terminal's idempotency ``key``.

        The same key again answers the first sale (``repeated``); a refusal is
        a ``CardError`` and changes nothing.
        """
        now = self.clock()
        with self.db.transaction() as session:
            if nonce is not None:
                nonces.record(session.connection(), nonce, now)
            hall = _terminal_hall(session, terminal)
            ctx = Context(session, self.keys, Actor(terminal, Role.TERMINAL))
            done = answer(sales.sell(ctx, hall, selection, channel=sales.POS, key=key, now=now))
        if ctx.head is not None:
            audit.anchor(self.anchor_file, self.keys.system_private, self.keys.fingerprint, *ctx.head)
        return done


def _terminal_hall(session: Any, terminal: str) -> str:
    """The code of the hall ``terminal`` sells for, or why it may not sell.

    The row is read with a shared lock (PostgreSQL), so a revocation that
    commits first is seen, and one that comes later waits for this sale.
    """
    row = session.execute(
        select(ChannelClient.channel, ChannelClient.revoked_at, Hall.code)
        .outerjoin(Hall, Hall.id == ChannelClient.hall_id)
        .where(ChannelClient.name == terminal)
        .with_for_update(read=True, of=ChannelClient)
    ).one_or_none()
    if row is None:
        raise UnknownClient(f"channel client {terminal!r} is not registered")
    channel, revoked_at, hall = row
    if revoked_at is not None:
        raise ClientRevoked(f"channel client {terminal!r} is revoked")
    if channel != POS:
        raise PermissionDenied(f"channel client {terminal!r} is a {channel} client; only a POS terminal sells cards")
    if hall is None:
        raise PermissionDenied(f"POS terminal {terminal!r} is bound to no hall; register it with --hall to sell")
    return str(hall)
