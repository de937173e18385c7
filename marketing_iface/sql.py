"""``MarketingSystem`` over SQL: reads the accounts table, inserts into the recharge interface table.

The tables are the ones ``standin`` describes; a real marketing database is
given the same interface table and a read-only view of accounts.  Every
database failure is turned into ``MarketingUnavailable`` at this edge, with
one line saying why, so callers handle an outage in one way whatever the
driver said; and connections give up after a few seconds, so an outage is
noticed while a caller is still on the line rather than after the TCP
timeout.
"""

# test-case-name: tests.marketing_iface.test_contract

import dataclasses
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from sqlalchemy import BigInteger, DateTime, Row, String, exc, literal, select
from sqlalchemy.engine import make_url

from cardmgmt.days import as_utc, day_bounds
from cardmgmt.db import dialect_insert, make_engine, normalise_url
from marketing_iface.interface import Account, MarketingUnavailable, Posting, PostingRejected
from marketing_iface.standin import accounts, check_posting, recharge_interface

CONNECT_TIMEOUT = 3  # seconds; a caller is waiting while we look an account up

_POSTING_COLUMNS = ("recharge_ref", "account_no", "amount", "card_serial", "channel", "recharged_at")


def with_connect_timeout(url: str, seconds: int = CONNECT_TIMEOUT) -> str:
    """``url`` with a PostgreSQL connect timeout, unless it names one already (other URLs unchanged)."""
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        return url  # make_engine reports a malformed URL in the project's own words
    if parsed.get_backend_name() != "postgresql" or "connect_timeout" in parsed.query:
        return url
    return parsed.update_query_dict({"connect_timeout": str(seconds)}).render_as_string(hide_password=False)


def one_line(error: BaseException, limit: int = 200) -> str:
    """The driver's own message, on one line and short enough for a log field or ``last_error``."""
    text = str(getattr(error, "orig", None) or error)
    first = next((line for line in text.splitlines() if line.strip()), type(error).__name__)
    return " ".join(first.split())[:limit]


@contextmanager
def unavailable_on_database_error(what: str) -> Iterator[None]:
    """Turn any database failure inside the block into ``MarketingUnavailable``.

    Not only connection failures: a missing table or a permission the DBA
    has not granted yet is also "cannot be used now, nothing changed", and
    the outbox must keep such recharges and retry them, not drop them.
    """
    try:
        yield
    except (exc.DBAPIError, exc.DisconnectionError, exc.TimeoutError) as e:
        raise MarketingUnavailable(f"marketing system unavailable ({what}): {one_line(e)}") from e


def _posting(row: Row) -> Posting:  # type: ignore[type-arg]
    return Posting(
        recharge_ref=row.recharge_ref,
        account_no=row.account_no,
        amount=row.amount,
        card_serial=row.card_serial,
        channel=row.channel,
        recharged_at=as_utc(row.recharged_at),
    )


class SqlMarketing:
    """The marketing system reached through its database at ``url`` (PostgreSQL, or SQLite for the embedded default)."""

    def __init__(self, url: str, *, connect_timeout: int = CONNECT_TIMEOUT) -> None:
        # Nothing is connected yet: a marketing system that is down when we
        # start is an outage to ride out, not a reason to refuse to start.
        self.engine = make_engine(with_connect_timeout(url, connect_timeout))

    def lookup_account(self, account_no: str) -> Account | None:
        """The account, or ``None``; a read-only ``SELECT``."""
        query = select(accounts.c.account_no, accounts.c.holder_name, accounts.c.balance).where(
            accounts.c.account_no == account_no
        )
        with unavailable_on_database_error("account look-up"), self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return Account(account_no=row.account_no, holder_name=row.holder_name, balance=row.balance)

    def post_recharge(self, posting: Posting) -> bool:
        """Insert the posting unless its ``recharge_ref`` is there already; see ``MarketingSystem``.

        One statement, ``INSERT ... SELECT ... FROM accounts WHERE account_no
        = ... ON CONFLICT (recharge_ref) DO NOTHING``, so the database settles
        both questions at once: a second posting of the same reference
        (from a retry, or another worker) inserts nothing, and neither does a
        posting for an account that does not exist.  If nothing was inserted
        the stored row, read back, tells which it was.
        """
        check_posting(posting)
        wanted = dataclasses.replace(posting, recharged_at=as_utc(posting.recharged_at))
        source = select(
            literal(wanted.recharge_ref, String),
            accounts.c.account_no,
            literal(wanted.amount, BigInteger),
            literal(wanted.card_serial, String),
            literal(wanted.channel, String),
            literal(wanted.recharged_at, DateTime(timezone=True)),
        ).where(accounts.c.account_no == wanted.account_no)
        with unavailable_on_database_error("posting"), self.engine.begin() as conn:
            insert = dialect_insert(conn.dialect.name, recharge_interface)
            statement = (
                insert.from_select(_POSTING_COLUMNS, source)
                .on_conflict_do_nothing(index_elements=["recharge_ref"])
                .returning(recharge_interface.c.id)
            )
            if conn.execute(statement).first() is not None:
                return True
            stored = conn.execute(
                select(*(recharge_interface.c[name] for name in _POSTING_COLUMNS)).where(
                    recharge_interface.c.recharge_ref == wanted.recharge_ref
                )
            ).first()
        if stored is None:
            raise PostingRejected(f"posting {wanted.recharge_ref}: no account {wanted.account_no} in the marketing system")
        if _posting(stored) != wanted:
            raise PostingRejected(
                f"posting {wanted.recharge_ref}: the marketing system already holds this reference with different content"
            )
        return False

    def postings_for_day(self, day: dt.date) -> list[Posting]:
        """The postings of business day ``day`` (UTC+8), oldest first."""
        start, end = day_bounds(day)
        c = recharge_interface.c
        query = (
            select(*(c[name] for name in _POSTING_COLUMNS))
            .where(c.recharged_at >= start, c.recharged_at < end)
            .order_by(c.recharged_at, c.id)
        )
        with unavailable_on_database_error("postings of the day"), self.engine.connect() as conn:
            return [_posting(row) for row in conn.execute(query)]

    def close(self) -> None:
        """Close the pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> "SqlMarketing":
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()
