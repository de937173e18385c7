"""The stand-in marketing system as tests use it: sample accounts, a reset, balances, and recharge records to post.

``sample_null_marketing`` is the in-memory marketing system holding the
sample accounts; ``reset_standin`` puts a stand-in marketing database back
to exactly those accounts; ``balances`` reads every sample account's
balance through any implementation of the marketing Protocol, so a test can
compare before and after.  ``Ledger`` writes committed recharge records
straight into a card database, so the outbox and reconciliation are tested
without the recharge core.  ``posting_log`` is the operation log a
reversal drain records its outcomes in, anchored as a server anchors it.

``create_billing`` builds a second marketing schema laid out unlike the
stand-in (the way a utility's own billing database might be: pinyin-initial
table and column names, the account number stored as a number, no surrogate
keys, its own crediting trigger) and ``BILLING_MAPPING`` is the mapping file
that describes it, so the contract tests prove ``SqlMarketing`` follows the
mapping rather than the stand-in's names.
"""

# test-case-name: tests.marketing_iface.test_outbox, tests.marketing_iface.test_contract, tests.marketing_iface.test_reconcile, tests.marketing_iface.test_reversal_outbox

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
)

from cardmgmt import audit
from cardmgmt.db import Database, make_engine
from cardmgmt.marketing import Account, MarketingSystem
from cardmgmt.models import Batch, Card, Factory, Recharge
from cardmgmt.system import CardSystem
from marketing_iface.null import NullMarketing
from marketing_iface.outbox import PostingLog
from marketing_iface.standin import SAMPLE_ACCOUNTS, accounts, load_accounts, recharge_interface, sms_outbox

# A marketing database laid out otherwise: 用户档案 (accounts), 电费充值接口 (recharges), 短信待发 (SMS).
billing_metadata = MetaData()
kh_yhda = Table(
    "kh_yhda", billing_metadata,
    Column("yhbh", BigInteger, primary_key=True, autoincrement=False),  # 用户编号: the 户号 as a number
    Column("yhmc", String(64), nullable=False),  # 用户名称
    Column("yddz", String(200), nullable=False),  # 用电地址
    Column("zhye", BigInteger, nullable=False),  # 账户余额, fen
    Column("lxdh", String(20)),  # 联系电话
)
jk_dfcz = Table(
    "jk_dfcz", billing_metadata,
    Column("lsh", String(30), nullable=False, unique=True),  # 流水号
    Column("yhbh", BigInteger, nullable=False),
    Column("je", BigInteger, nullable=False),  # 金额
    Column("kh", String(20), nullable=False),  # 卡号
    Column("qd", String(16), nullable=False),  # 渠道
    Column("czsj", DateTime(timezone=True), nullable=False),  # 充值时间
    Column("cz_yls", String(30), unique=True),  # 冲正的原流水号
    CheckConstraint("je <> 0 AND (cz_yls IS NULL) = (je > 0)", name="ck_jk_dfcz_je"),
)
dx_dfs = Table(
    "dx_dfs", billing_metadata,
    Column("xxbh", String(40), nullable=False, unique=True),  # 消息编号
    Column("sjhm", String(20), nullable=False),  # 手机号码
    Column("nr", String(500), nullable=False),  # 内容
    Column("rksj", DateTime(timezone=True), nullable=False),  # 入库时间
)
_BILLING_PG_TRIGGER = (
    """
    CREATE OR REPLACE FUNCTION jk_dfcz_rz() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE kh_yhda SET zhye = zhye + NEW.je WHERE yhbh = NEW.yhbh;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING MESSAGE = 'jk_dfcz: unknown account ' || NEW.yhbh;
        END IF;
        RETURN NULL;
    END
    $$
    """,
    "DROP TRIGGER IF EXISTS jk_dfcz_rz ON jk_dfcz",
    "CREATE TRIGGER jk_dfcz_rz AFTER INSERT ON jk_dfcz FOR EACH ROW EXECUTE FUNCTION jk_dfcz_rz()",
)
_BILLING_SQLITE_TRIGGER = (
    """
    CREATE TRIGGER IF NOT EXISTS jk_dfcz_rz AFTER INSERT ON jk_dfcz
    FOR EACH ROW BEGIN
        SELECT RAISE(ABORT, 'jk_dfcz: unknown account') WHERE NOT EXISTS (SELECT 1 FROM kh_yhda WHERE yhbh = NEW.yhbh);
        UPDATE kh_yhda SET zhye = zhye + NEW.je WHERE yhbh = NEW.yhbh;
    END
    """,
)

BILLING_MAPPING = """\
# A billing database laid out unlike the stand-in (testkit.marketing.create_billing).
[accounts]
table = "kh_yhda"
account_no = "yhbh"
holder_name = "yhmc"
balance = "zhye"
phone = "lxdh"

[account_no]
kind = "integer"

[interface]
table = "jk_dfcz"
recharge_ref = "lsh"
account_no = "yhbh"
amount = "je"
card_serial = "kh"
channel = "qd"
recharged_at = "czsj"
reverses = "cz_yls"

[sms]
table = "dx_dfs"
message_ref = "xxbh"
phone = "sjhm"
text = "nr"
queued_at = "rksj"
"""


def billing_mapping_file(directory: Path) -> Path:
    """``BILLING_MAPPING`` written to a file in ``directory``; its path."""
    path = Path(directory) / "billing-mapping.toml"
    path.write_text(BILLING_MAPPING, encoding="utf-8")
    return path


def _load_billing_accounts(conn: Connection) -> None:
    conn.execute(insert(kh_yhda), [
        {"yhbh": int(a.account_no), "yhmc": a.holder_name, "yddz": a.address, "zhye": a.balance, "lxdh": a.phone}
        for a in SAMPLE_ACCOUNTS
    ])


def create_billing(url: str) -> None:
    """Build the second marketing schema at ``url`` (an empty database), with the sample accounts."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            billing_metadata.create_all(conn)
            for statement in _BILLING_PG_TRIGGER if conn.dialect.name == "postgresql" else _BILLING_SQLITE_TRIGGER:
                conn.exec_driver_sql(statement)
            _load_billing_accounts(conn)
    finally:
        engine.dispose()


def reset_billing(url: str) -> None:
    """The second schema back to exactly the sample accounts, no postings and no messages."""
    engine = make_engine(url)
    with engine.begin() as conn:
        for table in (dx_dfs, jk_dfcz, kh_yhda):
            conn.execute(delete(table))
        _load_billing_accounts(conn)
    engine.dispose()


def sample_null_marketing() -> NullMarketing:
    """The in-memory marketing system, holding the sample accounts with their sample balances."""
    return NullMarketing([a.account() for a in SAMPLE_ACCOUNTS], phones={a.account_no: a.phone for a in SAMPLE_ACCOUNTS})


def posting_log(system: CardSystem, who: str = "server T") -> PostingLog:
    """Where a drain run as ``who`` logs reversal outcomes: ``system``'s operation log, anchored to its anchor file."""
    keys = system.keys()

    def anchor(seq: int, entry_hash: str) -> None:
        audit.anchor(system.settings.audit_anchor_file, keys.system_private, keys.fingerprint, seq, entry_hash)

    return PostingLog(keys.audit_key, who, anchor)


def reset_standin(url: str) -> None:
    """Back to exactly the sample accounts, with their sample balances, and no postings."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(delete(sms_outbox))
        conn.execute(delete(recharge_interface))
        conn.execute(delete(accounts))
        load_accounts(conn, SAMPLE_ACCOUNTS)
    engine.dispose()


def balances(marketing: MarketingSystem) -> dict[str, int]:
    """Every sample account's balance, as the marketing system reports it."""
    found: dict[str, int] = {}
    for a in SAMPLE_ACCOUNTS:
        acct: Account | None = marketing.lookup_account(a.account_no)
        assert acct is not None
        found[a.account_no] = acct.balance
    return found


class Ledger:
    """Writes recharge records straight into a card database (the recharge core is not needed for these tests)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.count = 0
        with db.transaction() as s:
            factory = Factory(name=f"F-{uuid.uuid4().hex[:6]}", public_key_pem="-", fingerprint="0" * 32)
            s.add(factory)
            s.flush()
            batch = Batch(
                batch_no=f"B-{uuid.uuid4().hex[:6]}", face_value=5000, quantity=1000, box_size=100,
                expiry=dt.date(2030, 12, 31), first_serial="900000000000", last_serial="900000000999",
                factory_id=factory.id, new_card_digest="0" * 64, created_by="alice",
            )
            s.add(batch)
            s.flush()
            self.batch_id = batch.id

    def add(self, account_no: str, amount: int, committed_at: dt.datetime, *, channel: str = "hotline") -> int:
        """One committed recharge, pending in the outbox; its id."""
        self.count += 1
        serial = f"9{self.count:011d}"
        with self.db.transaction() as s:
            card = Card(batch_id=self.batch_id, serial=serial, box_no=1, state="redeemed",
                        pin_hash=hashlib.sha256(serial.encode()).digest())
            s.add(card)
            s.flush()
            r = Recharge(
                key=f"call-{self.count}#1", call_id=f"call-{self.count}", channel=channel, caller="13800138000",
                card_id=card.id, card_serial=serial, account_no=account_no, amount=amount,
                committed_at=committed_at, next_attempt_at=committed_at,
            )
            s.add(r)
            s.flush()
            return r.id

    def rows(self) -> list[Recharge]:
        with self.db.transaction() as s:
            return list(s.scalars(select(Recharge).order_by(Recharge.id)))

    def get(self, recharge_id: int) -> Recharge:
        with self.db.transaction() as s:
            r = s.get(Recharge, recharge_id)
            assert r is not None
            return r

    def update(self, recharge_id: int, **values: object) -> None:
        with self.db.transaction() as s:
            r = s.get(Recharge, recharge_id)
            for k, v in values.items():
                setattr(r, k, v)
