"""A stand-in for the utility's marketing database: accounts, and the interface table recharges land in.

The real marketing system (SG186 and its kin) belongs to another team; what
the card system is given is read access to accounts and the right to insert
into one interface table.  This module describes that shape once, as its own
``MetaData`` (it is another system's database, so it has no place in the
card database's Alembic history), and ``create_standin`` builds it on SQLite
or PostgreSQL for the embedded default, the demo and the tests.  Crediting a
balance is the marketing system's own business: here a database trigger on
the interface table does it, so the card system never writes ``accounts``.
"""

# test-case-name: tests.marketing_iface.test_standin

import datetime as dt
from typing import NamedTuple

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    func,
    inspect,
)

from cardmgmt.db import dialect_insert, make_engine
from cardmgmt.fields import ACCOUNT_DIGITS
from cardmgmt.marketing import Account, MarketingError, Posting, PostingRejected

metadata = MetaData()

# SQLite only auto-numbers an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

accounts = Table(
    "accounts",
    metadata,
    Column("account_no", String(ACCOUNT_DIGITS), primary_key=True),  # 户号
    Column("holder_name", String(64), nullable=False),
    Column("address", String(200), nullable=False),
    # fen; negative means arrears (欠费)
    Column("balance", BigInteger, nullable=False, server_default="0"),
    # Where the SMS notice of a recharge goes; NULL: the customer gave none.
    Column("phone", String(20), nullable=True),
)

recharge_interface = Table(
    "recharge_interface",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    # The side system's idempotency key: one row per recharge, whoever retries.
    Column("recharge_ref", String(24), nullable=False, unique=True),
    Column("account_no", String(ACCOUNT_DIGITS), ForeignKey("accounts.account_no"), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
    Column("card_serial", String(20), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("recharged_at", DateTime(timezone=True), nullable=False, index=True),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.current_timestamp()),
    # A reversal (冲正): the recharge_ref of the posting it takes back.  Unique:
    # an original is reversed at most once, whoever races to do it.
    Column("reverses", String(24), nullable=True, unique=True),
    # A recharge credits, a reversal debits; nothing is ever for nothing.
    CheckConstraint(
        "amount <> 0 AND (reverses IS NULL) = (amount > 0)", name="ck_recharge_interface_amount_sign"
    ),
)

# The marketing system's own processing, reduced to its one effect we rely on:
# a row landing in the interface table credits the account (a reversal's
# negative amount debits it), in the same transaction, exactly once per row.
# An unknown account aborts the insert.
_PG_TRIGGER = (
    """
    CREATE OR REPLACE FUNCTION recharge_interface_credit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE accounts SET balance = balance + NEW.amount WHERE account_no = NEW.account_no;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING MESSAGE = 'recharge_interface: unknown account ' || NEW.account_no;
        END IF;
        RETURN NULL;
    END
    $$
    """,
    # DROP + CREATE in one transaction rather than CREATE OR REPLACE TRIGGER,
    # which only PostgreSQL 14 and later understand.
    "DROP TRIGGER IF EXISTS recharge_interface_credit ON recharge_interface",
    """
    CREATE TRIGGER recharge_interface_credit AFTER INSERT ON recharge_interface
    FOR EACH ROW EXECUTE FUNCTION recharge_interface_credit()
    """,
)
_SQLITE_TRIGGER = (
    """
    CREATE TRIGGER IF NOT EXISTS recharge_interface_credit AFTER INSERT ON recharge_interface
    FOR EACH ROW BEGIN
        SELECT RAISE(ABORT, 'recharge_interface: unknown account')
            WHERE NOT EXISTS (SELECT 1 FROM accounts WHERE account_no = NEW.account_no);
        UPDATE accounts SET balance = balance + NEW.amount WHERE account_no = NEW.account_no;
    END
    """,
)


class SampleAccount(NamedTuple):
    """One account of the stand-in's sample data."""

    account_no: str
    holder_name: str
    address: str
    balance: int  # fen
    phone: str | None = None  # mobile number for SMS notices; None: none given

    def account(self) -> Account:
        """As the card system sees it."""
        return Account(self.account_no, self.holder_name, self.balance)


SAMPLE_ACCOUNTS: list[SampleAccount] = [
    SampleAccount("3100000001", "张三明", "唐山市路北区建设北路12号3单元501", 12_850, "13803150001"),
    SampleAccount("3100000002", "李四", "唐山市路南区新华西道88号2单元302", -4_620, "13903150002"),
    SampleAccount("3100000003", "王小红", "唐山市路北区龙泽南路6号1单元101", 0, "15803150003"),
    SampleAccount("3100000004", "赵建国", "唐山市开平区开平大街215号", -18_930, "13703150004"),
    SampleAccount("3100000005", "刘芳", "唐山市丰润区曹雪芹西道17号4单元602", 35_000, "18603150005"),
    SampleAccount("3100000006", "陈志强", "唐山市古冶区林西街道矿工路33号", -250),
    SampleAccount("3100000007", "杨丽娟", "唐山市丰南区文化大街9号5单元1201", 7_410, "13603150007"),
    SampleAccount("3100000008", "黄海涛", "唐山市曹妃甸区渤海大道128号", -102_300, "15003150008"),
    SampleAccount("3100000009", "周敏", "唐山市路北区卫国北路45号6单元402", 980, "13503150009"),
    SampleAccount("3100000010", "吴国华", "唐山市路南区广场道21号", 256_000, "18803150010"),
    SampleAccount("3100000011", "孙立伟", "唐山市滦州市响嘡街道兴业路7号", -7_777, "13303150011"),
    SampleAccount("3100000012", "欧阳明月", "唐山市迁安市钢城大街301号2单元801", 50_000, "17703150012"),
]


class StandinOutdated(MarketingError):
    """The stand-in at this URL was made by an earlier version (no reversals, no phone numbers)."""


def _outdated(conn: Connection) -> str | None:
    """What an existing stand-in lacks that this version needs, or ``None``."""
    found = inspect(conn)
    for table in metadata.sorted_tables:
        if not found.has_table(table.name):
            continue  # created below
        have = {c["name"] for c in found.get_columns(table.name)}
        missing = [c.name for c in table.columns if c.name not in have]
        if missing:
            return f"{table.name} has no {', '.join(missing)}"
    return None


def create_standin(url: str, sample_accounts: bool = True, *, recreate: bool = False) -> None:
    """Create the stand-in marketing schema at ``url`` (if absent) and load the sample accounts.

    Safe to run again: tables and triggers are created only where missing,
    and a sample account that already exists is left alone, balance and all.
    A stand-in made by an earlier version (its interface table without
    ``reverses``, its accounts without ``phone``) is not altered in place:
    ``StandinOutdated`` says so, and ``recreate=True`` (``marketing standin
    --recreate``) drops the stand-in's tables first and builds them afresh.
    It is a stand-in: its postings and balances are demo and test data.
    """
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            if recreate:
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql("DROP FUNCTION IF EXISTS recharge_interface_credit() CASCADE")
                metadata.drop_all(conn)
            else:
                lacking = _outdated(conn)
                if lacking is not None:
                    raise StandinOutdated(
                        f"the stand-in marketing database was made by an earlier version ({lacking}); "
                        "recreate it with `cli.py marketing standin --recreate` (its sample data starts afresh)"
                    )
            metadata.create_all(conn)
            for statement in _PG_TRIGGER if conn.dialect.name == "postgresql" else _SQLITE_TRIGGER:
                conn.exec_driver_sql(statement)
            if sample_accounts:
                load_accounts(conn, SAMPLE_ACCOUNTS)
    finally:
        engine.dispose()


def load_accounts(conn: Connection, rows: list[SampleAccount]) -> None:
    """Add accounts that are not there yet (existing ones keep their balance)."""
    if not rows:
        return
    stmt = dialect_insert(conn.dialect.name, accounts).on_conflict_do_nothing(index_elements=["account_no"])
    conn.execute(stmt, [r._asdict() for r in rows])


def check_posting(posting: Posting) -> None:
    """Refuse, with ``PostingRejected``, a posting that can never fit the interface table.

    Checked before any database is touched, so a malformed posting is a
    permanent refusal rather than a database error that would be retried
    for ever.
    """
    c = recharge_interface.c
    check_posting_fits(posting, {"recharge_ref": c.recharge_ref, "card_serial": c.card_serial,
                                 "channel": c.channel, "reverses": c.reverses})


def check_posting_fits(posting: Posting, columns: dict[str, Column]) -> None:  # type: ignore[type-arg]
    """``check_posting`` against the given interface columns (``recharge_ref``, ``card_serial``, ``channel``, ``reverses``)."""
    for name, column in columns.items():
        value = getattr(posting, name)
        if name == "reverses" and value is None:
            continue
        limit = getattr(column.type, "length", None)
        if not isinstance(value, str) or not value or (limit is not None and len(value) > limit):
            raise PostingRejected(f"posting {posting.recharge_ref!r}: {name} must be 1 to {limit} characters")
    amount = posting.amount
    if isinstance(amount, bool) or not isinstance(amount, int) or not -(2**63) < amount < 2**63:
        raise PostingRejected(f"posting {posting.recharge_ref}: amount must be a whole number of fen")
    if posting.reverses is None and amount <= 0:
        raise PostingRejected(f"posting {posting.recharge_ref}: amount must be a positive number of fen")
    if posting.reverses is not None and amount >= 0:
        raise PostingRejected(
            f"posting {posting.recharge_ref}: a reversal's amount must be negative (minus the original's)"
        )
    if posting.reverses == posting.recharge_ref:
        raise PostingRejected(f"posting {posting.recharge_ref}: a reversal cannot reverse itself")
    if not isinstance(posting.recharged_at, dt.datetime):
        raise PostingRejected(f"posting {posting.recharge_ref}: recharged_at must be a datetime")
