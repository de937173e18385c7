"""``MarketingSystem`` over SQL: reads the accounts table, inserts into the recharge and SMS interface tables.

Which tables and columns those are, and how an account number is written
there, comes from a mapping file (``mapping.py``; the stand-in's layout by
default), so the same code serves the stand-in and a utility's own
marketing database.  Whether the database fits the mapping is probed with
SQLAlchemy's inspector: by ``check()`` (``cli.py marketing check-mapping``,
and the recharge servers at start-up), which raises ``MappingError`` with
one line naming the missing table or column; and again on first use, where
a misfit is ``MarketingUnavailable`` like any other "cannot be used now"
(the DBA may still be creating a table; the outbox keeps its records and
retries).  The probe also learns the interface table's column lengths, so a
posting that cannot fit is refused before anything is written.  Every
database failure is turned into ``MarketingUnavailable`` at this edge, with
one line saying why, so callers handle an outage in one way whatever the
driver said; and connections give up after a few seconds, so an outage is
noticed while a caller is still on the line rather than after the TCP
timeout.
"""

# test-case-name: tests.marketing_iface.test_contract

import dataclasses
import datetime as dt
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    MetaData,
    Row,
    String,
    Table,
    bindparam,
    exc,
    inspect,
    select,
)
from sqlalchemy.engine import make_url

from cardmgmt.days import as_utc, day_bounds
from cardmgmt.db import dialect_insert, make_engine, normalise_url
from cardmgmt.marketing import (
    Account,
    MappingError,
    MarketingUnavailable,
    Posting,
    PostingRejected,
    Receipt,
    SmsMessage,
)
from marketing_iface.mapping import Mapping, TableMap, load_mapping
from marketing_iface.standin import POSTING_TEXT, check_posting_fits

CONNECT_TIMEOUT = 3  # seconds; a caller is waiting while we look an account up

_POSTING_COLUMNS = ("recharge_ref", "account_no", "amount", "card_serial", "channel", "recharged_at", "reverses")
_SMS_TEXT = ("message_ref", "phone", "text")


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


class _Layout:
    """The mapped tables as SQLAlchemy ``Table`` objects, each column keyed by our name whatever it is called there."""

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self.format = mapping.account_format
        key_type = BigInteger() if self.format.kind == "integer" else String()
        md = MetaData()
        a = mapping.accounts.columns
        self.accounts = Table(
            mapping.accounts.table, md,
            Column(a["account_no"], key_type, key="account_no"),
            Column(a["holder_name"], String(), key="holder_name"),
            Column(a["balance"], BigInteger(), key="balance"),
            *([Column(mapping.phone_column, String(), key="phone")] if mapping.phone_column else []),
        )
        i = mapping.interface.columns
        types = {"account_no": key_type, "amount": BigInteger(), "recharged_at": DateTime(timezone=True)}
        self.interface = Table(
            mapping.interface.table, md,
            *(Column(i[name], types.get(name, String()), key=name) for name in _POSTING_COLUMNS),
        )
        self.sms: Table | None = None
        if mapping.sms is not None:
            m = mapping.sms.columns
            self.sms = Table(
                mapping.sms.table, md,
                Column(m["message_ref"], String(), key="message_ref"),
                Column(m["phone"], String(), key="phone"),
                Column(m["text"], String(), key="text"),
                Column(m["queued_at"], DateTime(timezone=True), key="queued_at"),
            )
        self._post: dict[tuple[str, bool], Any] = {}
        self._queue_sms: dict[str, Any] = {}
        acc, ri = self.accounts, self.interface
        self.account = select(acc.c.account_no).where(acc.c.account_no == bindparam("account_no"))
        self.stored = select(*(ri.c[name] for name in _POSTING_COLUMNS)).where(ri.c.recharge_ref == bindparam("ref"))
        self.reversed_by = select(ri.c.recharge_ref).where(ri.c.reverses == bindparam("ref"))
        self.receipt = select(
            acc.c.holder_name, acc.c.balance, acc.c.phone if mapping.phone_column else bindparam("no_phone", None, type_=String)
        ).where(acc.c.account_no == bindparam("account_no"))

    def post(self, dialect: str, reversal: bool) -> Any:
        """The one statement that writes a posting: only for an account that exists, only once per reference.

        A reversal is written only if its original is there, for the same
        account and the opposite amount, is not itself a reversal, and has
        no reversal yet.  ``ON CONFLICT DO NOTHING`` names no column: a
        second reversal of the same original racing this one past the ``NOT
        EXISTS`` meets the unique ``reverses`` column and inserts nothing,
        exactly like a repeated reference, instead of failing the batch.
        """
        key = (dialect, reversal)
        if key not in self._post:
            acc, ri = self.accounts, self.interface
            source = select(
                bindparam("recharge_ref", type_=String),
                acc.c.account_no,
                bindparam("amount", type_=BigInteger),
                bindparam("card_serial", type_=String),
                bindparam("channel", type_=String),
                bindparam("recharged_at", type_=DateTime(timezone=True)),
                bindparam("reverses", type_=String),
            ).where(acc.c.account_no == bindparam("account_no"))
            if reversal:
                original = ri.alias("original")
                earlier = ri.alias("earlier")
                source = source.where(
                    select(original.c.recharge_ref).where(
                        original.c.recharge_ref == bindparam("reverses"),
                        original.c.account_no == bindparam("account_no"),
                        original.c.amount == bindparam("original_amount", type_=BigInteger),
                        original.c.reverses.is_(None),
                    ).exists(),
                    ~select(earlier.c.recharge_ref).where(earlier.c.reverses == bindparam("reverses")).exists(),
                )
            self._post[key] = (
                dialect_insert(dialect, ri)
                .from_select(_POSTING_COLUMNS, source)
                .on_conflict_do_nothing()
                .returning(ri.c.recharge_ref)
            )
        return self._post[key]

    def queue_sms(self, dialect: str) -> Any:
        """Insert one message unless its reference is there already."""
        if dialect not in self._queue_sms:
            assert self.sms is not None
            self._queue_sms[dialect] = (
                dialect_insert(dialect, self.sms).on_conflict_do_nothing().returning(self.sms.c.message_ref)
            )
        return self._queue_sms[dialect]

    def posting(self, row: Row) -> Posting:  # type: ignore[type-arg]
        return Posting(
            recharge_ref=row.recharge_ref,
            account_no=self.format.from_marketing(row.account_no),
            amount=row.amount,
            card_serial=row.card_serial,
            channel=row.channel,
            recharged_at=as_utc(row.recharged_at),
            reverses=row.reverses,
        )


def _probe_table(conn: Connection, what: str, table: TableMap, unique: tuple[str, ...] = ()) -> tuple[
        list[str], dict[str, int | None]]:
    """What is wrong with one mapped table in the database (missing table, columns, unique keys), and its text lengths."""
    found = inspect(conn)
    if not found.has_table(table.table):
        return [f"{what} table {table.table!r} is not in the marketing database"], {}
    columns = {c["name"]: c for c in found.get_columns(table.table)}
    problems = [f"{what} table {table.table!r} has no column {name!r} (for {ours})"
                for ours, name in table.columns.items() if name not in columns]
    if problems:
        return problems, {}
    keys = [set(u["column_names"]) for u in found.get_unique_constraints(table.table)]
    keys += [set(i["column_names"]) for i in found.get_indexes(table.table) if i.get("unique")]
    pk = found.get_pk_constraint(table.table).get("constrained_columns") or []
    keys.append(set(pk))
    for ours in unique:
        if {table.columns[ours]} not in keys:
            problems.append(f"{what} table {table.table!r}: column {table.columns[ours]!r} (for {ours}) must be "
                            "unique on its own (exactly once depends on it)")
    lengths = {ours: getattr(columns[name]["type"], "length", None) for ours, name in table.columns.items()}
    return problems, lengths


class SqlMarketing:
    """The marketing system reached through its database at ``url`` (PostgreSQL, or SQLite for the embedded default).

    ``mapping`` is a ``Mapping``, the path of a mapping file, or ``None`` for
    the stand-in's layout; a malformed file is a ``MappingError`` here.
    """

    def __init__(self, url: str, *, mapping: Mapping | str | Path | None = None,
                 connect_timeout: int = CONNECT_TIMEOUT) -> None:
        self.mapping = mapping if isinstance(mapping, Mapping) else load_mapping(mapping)
        self.layout = _Layout(self.mapping)
        # Nothing is connected yet: a marketing system that is down when we
        # start is an outage to ride out, not a reason to refuse to start.
        self.engine = make_engine(with_connect_timeout(url, connect_timeout))
        self._lengths: dict[str, dict[str, int | None]] | None = None
        self._probing = threading.Lock()

    # -- does the database fit the mapping?

    def problems(self) -> list[str]:
        """Every way the database does not fit the mapping (empty: it fits); ``MarketingUnavailable`` if unreachable."""
        m = self.mapping
        with unavailable_on_database_error("checking the mapping"), self.engine.connect() as conn:
            found: list[str] = []
            lengths: dict[str, dict[str, int | None]] = {}
            for what, table, unique in (("accounts", m.accounts, ("account_no",)),
                                        ("interface", m.interface, ("recharge_ref", "reverses")),
                                        *((("sms", m.sms, ("message_ref",)),) if m.sms else ())):
                problems, lengths[what] = _probe_table(conn, what, table, unique)
                found += problems
        if not found:
            self._lengths = lengths
        return found

    def check(self) -> None:
        """``MappingError`` (one line, naming the mapping file) unless every mapped table and column is there.

        ``MarketingUnavailable`` when the database cannot be reached at all:
        that says nothing about the mapping.
        """
        found = self.problems()
        if found:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise MappingError(f"{self.mapping.source}: {found[0]}{more}")

    def _ready(self) -> dict[str, dict[str, int | None]]:
        """The probed column lengths; probes once, and a misfit is ``MarketingUnavailable`` (retried later)."""
        lengths = self._lengths
        if lengths is not None:
            return lengths
        with self._probing:
            if self._lengths is None:
                found = self.problems()
                if found:
                    raise MarketingUnavailable(
                        f"marketing system unavailable (its database does not fit {self.mapping.source}): {found[0]}")
            assert self._lengths is not None
            return self._lengths

    # -- the MarketingSystem contract

    def lookup_account(self, account_no: str) -> Account | None:
        """The account, or ``None``; a read-only ``SELECT``."""
        key = self.layout.format.to_marketing(account_no)
        if key is None:
            return None
        self._ready()
        acc = self.layout.accounts
        query = select(acc.c.account_no, acc.c.holder_name, acc.c.balance).where(acc.c.account_no == key)
        with unavailable_on_database_error("account look-up"), self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return Account(account_no=account_no, holder_name=row.holder_name, balance=row.balance)

    def post_recharge(self, posting: Posting) -> bool:
        """Insert the posting unless its ``recharge_ref`` is there already; see ``MarketingSystem``."""
        [result] = self.post_recharges([posting])
        if isinstance(result, PostingRejected):
            raise result
        return bool(result)

    def post_recharges(self, postings: Sequence[Posting], *, receipts: bool = False) -> list[bool | Receipt | PostingRejected]:
        """Each posting as one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, all in one transaction.

        ``INSERT INTO <interface> ... SELECT ... FROM <accounts> WHERE
        <account> = ... ON CONFLICT DO NOTHING``, so the database settles
        both questions at once: a second posting of the same reference (from
        a retry, or another worker) inserts nothing, and neither does a
        posting for an account that does not exist.  When nothing was
        inserted, the stored row, read back, tells which it was.
        """
        if not postings:
            return []
        lengths = self._ready()["interface"]
        wanted: list[Posting | PostingRejected] = []
        for posting in postings:
            try:
                check_posting_fits(posting, {name: lengths.get(name) for name in POSTING_TEXT})
            except PostingRejected as e:
                wanted.append(e)
                continue
            wanted.append(dataclasses.replace(posting, recharged_at=as_utc(posting.recharged_at)))
        # Written in account order (answered in the caller's): the marketing
        # side credits each account as a row lands, locking it, so two
        # workers writing batches that share accounts take those locks in the
        # same order and wait for each other instead of deadlocking.
        order = sorted(range(len(wanted)), key=lambda n: (str(getattr(wanted[n], "account_no", "")), n))
        results: list[bool | Receipt | PostingRejected] = list(wanted)  # type: ignore[arg-type]
        with unavailable_on_database_error("posting"), self.engine.begin() as conn:
            for n in order:
                p = wanted[n]
                if not isinstance(p, PostingRejected):
                    results[n] = self._post_one(conn, p, receipts)
        return results

    def _post_one(self, conn: Connection, wanted: Posting, receipts: bool) -> bool | Receipt | PostingRejected:
        layout = self.layout
        key = layout.format.to_marketing(wanted.account_no)
        if key is None:
            return PostingRejected(f"posting {wanted.recharge_ref}: no account {wanted.account_no} in the marketing system")
        statement = layout.post(conn.dialect.name, wanted.is_reversal)
        params = dataclasses.asdict(wanted) | {"account_no": key, "original_amount": -wanted.amount}
        if conn.execute(statement, params).first() is not None:
            return self._receipt(conn, wanted, key, written=True) if receipts else True
        # Nothing was inserted: read back why, to answer a repeat or say what refused it.
        stored = conn.execute(layout.stored, {"ref": wanted.recharge_ref}).first()
        if stored is not None:
            if layout.posting(stored) != wanted:
                return PostingRejected(
                    f"posting {wanted.recharge_ref}: the marketing system already holds this reference "
                    "with different content"
                )
            return self._receipt(conn, wanted, key, written=False) if receipts else False
        if conn.execute(layout.account, {"account_no": key}).first() is None:
            return PostingRejected(
                f"posting {wanted.recharge_ref}: no account {wanted.account_no} in the marketing system"
            )
        return self._why_not_reversed(conn, wanted)

    def _receipt(self, conn: Connection, wanted: Posting, key: object, *, written: bool) -> Receipt:
        """The account as it stands in this transaction: just after the posting, whatever comes after it."""
        name, balance, phone = conn.execute(self.layout.receipt, {"account_no": key}).one()
        return Receipt(balance=balance, phone=(phone or "").strip() or None,
                       masked_name=Account(wanted.account_no, name, balance).masked_name, written=written)

    def _why_not_reversed(self, conn: Connection, wanted: Posting) -> PostingRejected:
        """Why a reversal for an existing account inserted nothing: its original is missing, differs or was reversed."""
        ref, original_ref = wanted.recharge_ref, wanted.reverses
        row = conn.execute(self.layout.stored, {"ref": original_ref}).first()
        if row is None:
            return PostingRejected(f"reversal {ref}: the original posting {original_ref} is not in the marketing system")
        original = self.layout.posting(row)
        if original.is_reversal:
            return PostingRejected(f"reversal {ref}: {original_ref} is itself a reversal")
        if original.account_no != wanted.account_no or original.amount != -wanted.amount:
            return PostingRejected(
                f"reversal {ref}: does not match its original {original_ref} "
                "(account and amount must be the same, negated)"
            )
        other = conn.execute(self.layout.reversed_by, {"ref": original_ref}).scalar()
        return PostingRejected(f"reversal {ref}: {original_ref} was already reversed by {other}")

    def postings_for_day(self, day: dt.date) -> list[Posting]:
        """The postings (reversals too) of business day ``day`` (UTC+8), oldest first."""
        self._ready()
        start, end = day_bounds(day)
        c = self.layout.interface.c
        query = (
            select(*(c[name] for name in _POSTING_COLUMNS))
            .where(c.recharged_at >= start, c.recharged_at < end)
            .order_by(c.recharged_at, c.recharge_ref)
        )
        with unavailable_on_database_error("postings of the day"), self.engine.connect() as conn:
            return [self.layout.posting(row) for row in conn.execute(query)]

    # -- the SMS platform's interface table

    def queue_sms(self, messages: Sequence[SmsMessage]) -> list[bool | PostingRejected]:
        """Insert each message unless its ``message_ref`` is there already, all in one transaction.

        A message too long for a column is refused for good (returned); a
        mapping without an ``[sms]`` section refuses every message.
        """
        if not messages:
            return []
        if self.layout.sms is None:
            return [PostingRejected(f"{self.mapping.source} names no SMS interface table ([sms])") for _ in messages]
        lengths = self._ready()["sms"]
        results: list[bool | PostingRejected | None] = []
        for m in messages:
            too_long = next((name for name in _SMS_TEXT
                             if (limit := lengths.get(name)) is not None and len(getattr(m, name)) > limit), None)
            results.append(PostingRejected(f"message {m.message_ref}: {too_long} longer than the SMS table takes")
                           if too_long else None)
        with unavailable_on_database_error("queueing SMS"), self.engine.begin() as conn:
            statement = self.layout.queue_sms(conn.dialect.name)
            for n, m in enumerate(messages):
                if results[n] is None:
                    row = dataclasses.asdict(m) | {"queued_at": as_utc(m.queued_at)}
                    results[n] = conn.execute(statement, row).first() is not None
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Close the pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> "SqlMarketing":
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()
