"""The money's invariants after anything the tests do to the system: what every load and chaos test checks.

After the outbox drains: no card is spent twice, a card is spent (redeemed)
exactly when its recharge is recorded, every recorded recharge is posted to
the marketing system exactly once (``settled``); and the day reconciles,
``cli.py marketing reconcile`` exiting 0 (``reconciles``).  What a caller
was told is each test's own to check against the recharges ``settled``
returns.
"""

# test-case-name: tests.integration.test_server_pair, tests.integration.test_db_failover, tests.e2e.test_front_ends

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from cardmgmt.days import business_day
from cardmgmt.models import Card, Recharge
from testkit.install import PASSWORDS
from testkit.pair import ROOT


def unposted(card_engine: Engine) -> int:
    with card_engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(Recharge)
                             .where(Recharge.post_status != "posted")).scalar_one())


def settled(card_engine: Engine, marketing_engine: Engine, serials: Sequence[str],
            timeout: float = 60.0) -> dict[str, Recharge]:
    """Once the outbox has drained, the invariants over ``serials``; their recharges by key (detached)."""
    end = time.monotonic() + timeout
    while unposted(card_engine) and time.monotonic() < end:
        time.sleep(0.1)
    assert unposted(card_engine) == 0, "the outbox drains"
    with Session(card_engine, expire_on_commit=False) as c:
        recharges = {r.key: r for r in c.scalars(select(Recharge).where(Recharge.card_serial.in_(list(serials))))}
        states = dict(c.execute(select(Card.serial, Card.state).where(Card.serial.in_(list(serials)))).all())
        c.expunge_all()
    with marketing_engine.connect() as m:
        postings = Counter(ref for (ref,) in m.execute(text("SELECT recharge_ref FROM recharge_interface")))
    by_card = Counter(r.card_serial for r in recharges.values())
    assert all(n == 1 for n in by_card.values()), "no card spent twice"
    for serial in serials:
        assert (states[serial] == "redeemed") == (serial in by_card), f"card {serial} spent iff recorded"
    for r in recharges.values():
        assert postings[r.ref] == 1, f"{r.ref} posted exactly once"
    return recharges


def reconciles(env: Mapping[str, str], operator: str = "bob") -> tuple[int, str]:
    """``cli.py marketing reconcile TODAY`` as ``operator``, a process of its own in ``env``: its exit code and output."""
    day = business_day(dt.datetime.now(dt.UTC)).isoformat()
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "-u", operator, "marketing", "reconcile", day],
                          env={**env, "CARDS_PASSWORD": PASSWORDS[operator]}, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr
