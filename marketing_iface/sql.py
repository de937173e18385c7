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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from sqlalchemy import BigInteger, Connection, DateTime, Row, String, bindparam, exc, select
from sqlalchemy.engine import make_url

from cardmgmt.days import as_utc, day_bounds
from cardmgmt.db import dialect_insert, make_engine, normalise_url
from cardmgmt.marketing import Account, MarketingUnavailable, Posting, PostingRejected
from marketing_iface.standin import accounts, check_posting, recharge_interface

CONNECT_TIMEOUT = 3  # seconds; a caller is waiting while we look an account up

_POSTING_COLUMNS = ("recharge_ref", "account_no", "amount", "card_serial", "channel", "recharged_at", "reverses")


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


def _insert_posting(dialect: str, reversal: bool) -> Any:
    """The one statement that writes a posting: only for an account that exists, only once per reference.

    A reversal is written only if its original is there, for the same
    account and the opposite amount, is not itself a reversal, and has no
    reversal yet.  ``ON CONFLICT DO NOTHING`` names no column: a second
    reversal of the same original racing this one past the ``NOT EXISTS``
    meets the unique ``reverses`` column and inserts nothing, exactly like a
    repeated reference, instead of failing the whole batch.
    """
    ri = recharge_interface
    source = select(
        bindparam("recharge_ref", type_=String),
        accounts.c.account_no,
        bindparam("amount", type_=BigInteger),
        bindparam("card_serial", type_=String),
        bindparam("channel", type_=String),
        bindparam("recharged_at", type_=DateTime(timezone=True)),
        bindparam("reverses", type_=String),
    ).where(accounts.c.account_no == bindparam("account_no"))
    if reversal:
        original = ri.alias("original")
        earlier = ri.alias("earlier")
        source = source.where(
            select(original.c.id).where(
                original.c.recharge_ref == bindparam("reverses"),
                original.c.account_no == bindparam("account_no"),
                original.c.amount == bindparam("original_amount", type_=BigInteger),
                original.c.reverses.is_(None),
            ).exists(),
            ~select(earlier.c.id).where(earlier.c.reverses == bindparam("reverses")).exists(),
        )
    return (
        dialect_insert(dialect, ri)
        .from_select(_POSTING_COLUMNS, source)
        .on_conflict_do_nothing()
        .returning(ri.c.id)
    )


_POST = {(name, reversal): _insert_posting(name, reversal) for name in ("postgresql", "sqlite") for reversal in (False, True)}

_STORED = select(*(recharge_interface.c[name] for name in _POSTING_COLUMNS)).where(
    recharge_interface.c.recharge_ref == bindparam("ref")
)


def _posting(row: Row) -> Posting:  # type: ignore[type-arg]
    return Posting(
        recharge_ref=row.recharge_ref,
        account_no=row.account_no,
        amount=row.amount,
        card_serial=row.card_serial,
        channel=row.channel,
        recharged_at=as_utc(row.recharged_at),
        reverses=row.reverses,
    )


_ACCOUNT = select(accounts.c.account_no).where(accounts.c.account_no == bindparam("account_no"))
_REVERSED_BY = select(recharge_interface.c.recharge_ref).where(recharge_interface.c.reverses == bindparam("ref"))


def _why_not_reversed(conn: Connection, wanted: Posting) -> PostingRejected:
    """Why a reversal for an existing account inserted nothing: its original is missing, differs or was reversed."""
    ref, original_ref = wanted.recharge_ref, wanted.reverses
    row = conn.execute(_STORED, {"ref": original_ref}).first()
    if row is None:
        return PostingRejected(f"reversal {ref}: the original posting {original_ref} is not in the marketing system")
    original = _posting(row)
    if original.is_reversal:
        return PostingRejected(f"reversal {ref}: {original_ref} is itself a reversal")
    if original.account_no != wanted.account_no or original.amount != -wanted.amount:
        return PostingRejected(
            f"reversal {ref}: does not match its original {original_ref} (account and amount must be the same, negated)"
        )
    other = conn.execute(_REVERSED_BY, {"ref": original_ref}).scalar()
    return PostingRejected(f"reversal {ref}: {original_ref} was already reversed by {other}")


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
        """Insert the posting unless its ``recharge_ref`` is there already; see ``MarketingSystem``."""
        [result] = self.post_recharges([posting])
        if isinstance(result, PostingRejected):
            raise result
        return result

    def post_recharges(self, postings: Sequence[Posting]) -> list[bool | PostingRejected]:
        """Each posting as one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, all in one transaction.

        ``INSERT INTO recharge_interface ... SELECT ... FROM accounts WHERE
        account_no = ... ON CONFLICT (recharge_ref) DO NOTHING``, so the
        database settles both questions at once: a second posting of the same
        reference (from a retry, or another worker) inserts nothing, and
        neither does a posting for an account that does not exist.  When
        nothing was inserted, the stored row, read back, tells which it was.
        """
        wanted = []
        for posting in postings:
            check_posting(posting)
            wanted.append(dataclasses.replace(posting, recharged_at=as_utc(posting.recharged_at)))
        with unavailable_on_database_error("posting"), self.engine.begin() as conn:
            return [self._post_one(conn, p) for p in wanted]

    @staticmethod
    def _post_one(conn: Connection, wanted: Posting) -> bool | PostingRejected:
        statement = _POST[conn.dialect.name, wanted.is_reversal]
        params = dataclasses.asdict(wanted) | {"original_amount": -wanted.amount}
        if conn.execute(statement, params).first() is not None:
            return True
        # Nothing was inserted: read back why, to answer a repeat or say what refused it.
        stored = conn.execute(_STORED, {"ref": wanted.recharge_ref}).first()
        if stored is not None:
            if _posting(stored) != wanted:
                return PostingRejected(
                    f"posting {wanted.recharge_ref}: the marketing system already holds this reference "
                    "with different content"
                )
            return False
        if conn.execute(_ACCOUNT, {"account_no": wanted.account_no}).first() is None:
            return PostingRejected(
                f"posting {wanted.recharge_ref}: no account {wanted.account_no} in the marketing system"
            )
        return _why_not_reversed(conn, wanted)

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
