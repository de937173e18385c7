"""What the two outboxes (recharges to the marketing system, notices to the SMS platform) share.

Both take their rows in batches of ``BATCH``, each in its own short
card-database transaction (``unit_of_work``), and back a failed row off by
``backoff``.
"""

# test-case-name: tests.marketing_iface.test_outbox, tests.marketing_iface.test_sms

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cardmgmt.db import Database

FIRST_RETRY = dt.timedelta(seconds=1)
MAX_RETRY = dt.timedelta(seconds=300)

BATCH = 50  # rows selected, handed over (one transaction there) and marked (one card transaction) at a time


def backoff(attempts: int) -> dt.timedelta:
    """How long to wait after the ``attempts``-th failed attempt: 1 s, 2 s, 4 s, ... at most 300 s.

    No jitter: only one server runs the outboxes at a time (it holds the
    lease), so there is no herd of workers to spread out.
    """
    if attempts <= 0:
        return dt.timedelta(0)
    # The exponent is capped before it is used, so a record that failed a
    # million times costs no more arithmetic than one that failed ten.
    return min(FIRST_RETRY * int(2 ** min(attempts - 1, 16)), MAX_RETRY)


@contextmanager
def unit_of_work(cards: Engine | Database) -> Iterator[Session]:
    """One card-database transaction, from a ``Database`` or a bare engine."""
    if isinstance(cards, Database):
        with cards.transaction() as session:
            yield session
    else:
        with Session(cards, expire_on_commit=False) as session, session.begin():
            yield session
