"""One-time request nonces, shared by every recharge server through the card database.

A signed API request carries a fresh random nonce.  The recharge core records
it as the first statement of the request's own transaction (``record``), so
a captured request replayed to either server is refused, and the check costs
no transaction of its own.  ``prune`` forgets nonces older than any request
that could still pass the signature's freshness check.
"""

# test-case-name: tests.recharge_server.test_jobs

import datetime as dt

from sqlalchemy import Connection, delete, insert
from sqlalchemy.exc import IntegrityError

from cardmgmt.db import Database
from cardmgmt.errors import CardError
from cardmgmt.models import RequestNonce

_nonces = RequestNonce.__table__
_RECORD = insert(_nonces)


class Replayed(CardError):
    """This request's nonce was seen before, by this server or the other."""

    code = "replay"
    http_status = 409
    exit_code = 1


def record(conn: Connection, nonce: str, now: dt.datetime) -> None:
    """Record ``nonce`` in ``conn``'s transaction; ``Replayed`` if it is there already.

    Call it first in the transaction and let ``Replayed`` end it: on
    PostgreSQL the failed insert has spoiled the transaction, and nothing
    else has been done in it yet.
    """
    try:
        conn.execute(_RECORD, {"nonce": nonce, "seen_at": now})
    except IntegrityError:
        raise Replayed("this request was already received; sign every request anew") from None


def prune(db: Database, before: dt.datetime) -> int:
    """Forget nonces seen before ``before``; their requests are stale by then anyway."""
    with db.engine.begin() as conn:
        return conn.execute(delete(_nonces).where(_nonces.c.seen_at < before)).rowcount
