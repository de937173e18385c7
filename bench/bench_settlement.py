"""Benchmark: a day's hall settlement and the recharges report of that day over 1,000,000 recharges, on PostgreSQL.

The database is filled directly (``COPY`` through ``cardmgmt.db.bulk_insert``,
never through the services): a city with 10 counties and 100 halls, four
batches of 250,000 cards (20, 50, 100, 200 yuan), every card sold in a run of
50 (20,000 sales: 20 per hall and day over 10 business days), one payment per
hall and day, and one recharge per card, committed in time order over the
same 10 days (100,000 a day), each naming a card drawn at random, as the
hotline's recharges would.

*ours* is the domain function the CLI and a future console call
(``reports.settlement`` / ``reports.recharges`` on a fresh ``Session``:
statement building, execution, rows as dicts); *bare* is one hand-written SQL
statement doing the same aggregation through psycopg; both in a transaction
of their own.  Each is timed ``--repeat`` times in alternating order; the
medians and their ratio are reported (goal: ours within 1.5x bare), the
answers compared, and the plans of our statements checked for index use
(``EXPLAIN``).

    .venv/bin/python bench/bench_settlement.py --record           # about 3 minutes when quiet
    .venv/bin/python bench/bench_settlement.py --recharges 100000  # a quick look
"""

# test-case-name: tests.cardmgmt.test_reports

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import random
import shlex
import statistics
import sys
import time
import uuid
from typing import Any

import benchlib as bl

HALLS, COUNTIES = 100, 10
FACE_VALUES = (2000, 5000, 10_000, 20_000)
SALE_SIZE = 50
DAYS = 10
FIRST_DAY = dt.date(2026, 10, 1)
GOAL = 1.5

BARE_SETTLEMENT = """
WITH sold AS (
  SELECT hall_id,
         sum(amount) FILTER (WHERE day < %(d)s) AS owed_before,
         sum(quantity) FILTER (WHERE day = %(d)s) AS cards,
         sum(amount) FILTER (WHERE day = %(d)s) AS owed
  FROM sales WHERE day <= %(d)s GROUP BY hall_id),
paid AS (
  SELECT hall_id,
         sum(amount) FILTER (WHERE day < %(d)s) AS paid_before,
         sum(amount) FILTER (WHERE day = %(d)s) AS paid
  FROM hall_payments WHERE day <= %(d)s GROUP BY hall_id)
SELECT h.code, coalesce(owed_before, 0) - coalesce(paid_before, 0) AS opening,
       coalesce(cards, 0), coalesce(owed, 0), coalesce(paid, 0)
FROM halls h LEFT JOIN sold ON sold.hall_id = h.id LEFT JOIN paid ON paid.hall_id = h.id
WHERE sold.hall_id IS NOT NULL OR paid.hall_id IS NOT NULL
ORDER BY h.code
"""

BARE_RECHARGES = {
    "day": """SELECT (committed_at AT TIME ZONE INTERVAL '+08:00')::date AS day, count(*), sum(amount)
              FROM recharges WHERE committed_at >= %(start)s AND committed_at < %(end)s GROUP BY 1 ORDER BY 1""",
    "channel": """SELECT channel, count(*), sum(amount) FROM recharges
                  WHERE committed_at >= %(start)s AND committed_at < %(end)s GROUP BY 1 ORDER BY 1""",
    "face-value": """SELECT b.face_value, count(*), sum(r.amount) FROM recharges r
                     JOIN cards c ON c.id = r.card_id JOIN batches b ON b.id = c.batch_id
                     WHERE r.committed_at >= %(start)s AND r.committed_at < %(end)s GROUP BY 1 ORDER BY 1""",
    "hall": """SELECT coalesce(h.code, '(none)'), count(*), sum(r.amount) FROM recharges r
               JOIN cards c ON c.id = r.card_id LEFT JOIN halls h ON h.id = c.hall_id
               WHERE r.committed_at >= %(start)s AND r.committed_at < %(end)s GROUP BY 1 ORDER BY 1""",
}


def populate(url: str, recharges: int) -> dict[str, int]:
    """Fill a migrated card database; returns the row counts written."""
    from sqlalchemy import text

    from cardmgmt.days import day_bounds
    from cardmgmt.db import Database, bulk_insert
    from cardmgmt.models import Batch, Factory, Hall, HallLevel
    from cardmgmt.serials import make_serial

    rng = random.Random(20261130)
    db = Database(url)
    cards = recharges
    per_batch = cards // len(FACE_VALUES)
    days = [FIRST_DAY + dt.timedelta(days=i) for i in range(DAYS)]
    with db.transaction() as s:
        city = Hall(code="TS", name="city", level=HallLevel.CITY)
        s.add(city)
        s.flush()
        counties = [Hall(code=f"C{i:02d}", name=f"county {i}", level=HallLevel.COUNTY, parent_id=city.id)
                    for i in range(COUNTIES)]
        s.add_all(counties)
        s.flush()
        hall_rows = [Hall(code=f"H{i:03d}", name=f"hall {i}", level=HallLevel.HALL, parent_id=counties[i % COUNTIES].id)
                     for i in range(HALLS)]
        s.add_all(hall_rows)
        factory = Factory(name="bench", public_key_pem="-", fingerprint="-")
        s.add(factory)
        s.flush()
        hall_ids = [h.id for h in hall_rows]
        batches = []
        for b, face in enumerate(FACE_VALUES):
            first, last = b * per_batch + 1, (b + 1) * per_batch
            batch = Batch(batch_no=f"SB{b}", face_value=face, quantity=per_batch, box_size=100,
                          expiry=dt.date(2030, 1, 1), first_serial=make_serial(first), last_serial=make_serial(last),
                          factory_id=factory.id, new_card_digest="-", created_by="bench")
            s.add(batch)
            batches.append(batch)
        s.flush()
        batch_ids = [b.id for b in batches]
    bl.log(f"writing {cards:,} cards, {cards // SALE_SIZE:,} sales, {recharges:,} recharges")
    now = dt.datetime.now(dt.UTC)
    sale_rows, card_rows = [], []
    for sale in range(cards // SALE_SIZE):
        lo = sale * SALE_SIZE + 1
        b = (lo - 1) // per_batch
        hall = hall_ids[sale % HALLS]
        day = days[(sale // HALLS) % DAYS]
        sold_at = day_bounds(day)[0] + dt.timedelta(hours=2)
        sale_rows.append((sale + 1, hall, "counter", "bench", None, make_serial(lo), make_serial(lo + SALE_SIZE - 1),
                          SALE_SIZE, SALE_SIZE * FACE_VALUES[b], sold_at, day))
        for n in range(lo, lo + SALE_SIZE):
            card_rows.append((n, batch_ids[b], make_serial(n), (n - 1) % per_batch // 100 + 1,
                              hashlib.sha256(n.to_bytes(8, "big")).digest(), "redeemed", hall, sale + 1))
    order = list(range(1, cards + 1))
    rng.shuffle(order)
    start = day_bounds(days[0])[0]
    step = dt.timedelta(days=DAYS) / recharges
    recharge_rows = []
    for j, card in enumerate(order):
        at = start + step * j
        channel = "hotline" if j % 10 < 8 else ("web" if j % 10 == 8 else "pos")
        b = (card - 1) // per_batch
        recharge_rows.append((j + 1, f"bench-{j}#1", f"bench-{j}", channel, channel, "13900000001", card,
                              make_serial(card), f"31{j % 100_000_000:08d}", FACE_VALUES[b], at, "posted", 1, at, at))
    payment_rows = []
    for d, day in enumerate(days):
        for h, hall in enumerate(hall_ids):
            owed = sum(r[8] for r in sale_rows[d * HALLS + h::HALLS * DAYS])
            amount = owed - (owed // 100 if h % 7 == 0 else 0)  # a few halls pay short
            payment_rows.append((hall, day, "payment", amount, f"SLIP-{d}-{h}", f"SLIP-{d}-{h}", None, None, "finance",
                                 now))
    with db.transaction() as s:
        bulk_insert(s, "sales", ("id", "hall_id", "channel", "seller", "key", "first_serial", "last_serial", "quantity",
                                 "amount", "sold_at", "day"), sale_rows)
        bulk_insert(s, "cards", ("id", "batch_id", "serial", "box_no", "pin_hash", "state", "hall_id", "sale_id"),
                    card_rows)
        bulk_insert(s, "recharges", ("id", "key", "call_id", "channel", "client", "caller", "card_id", "card_serial",
                                     "account_no", "amount", "committed_at", "post_status", "post_attempts",
                                     "next_attempt_at", "posted_at"), recharge_rows)
        bulk_insert(s, "hall_payments", ("hall_id", "day", "kind", "amount", "reference", "live_reference", "voids_id",
                                         "note", "recorded_by", "recorded_at"), payment_rows)
        for table in ("sales", "cards", "recharges"):
            s.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    db.dispose()
    return {"cards": len(card_rows), "sales": len(sale_rows), "recharges": len(recharge_rows),
            "payments": len(payment_rows)}


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def measure(url: str, day: dt.date, repeat: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Time ours and bare for the settlement and each recharges grouping; the rows of the table and the plans.

    Both run in a transaction of their own, as a unit of work does (BEGIN,
    the statement, the rows fetched, ROLLBACK).  *ours* takes its connection
    from the pool that ``cardmgmt.db.make_engine`` makes for the CLI, which
    tests each connection with a round trip first (pre-ping); *ours, no
    ping* is the same call on an engine without it, as a server with a
    thread pool runs (``make_engine(..., pre_ping=False)``).
    """
    import psycopg
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from cardmgmt import reports
    from cardmgmt.db import make_engine

    engine = make_engine(url)
    unpinged = make_engine(url, pool_size=1, pre_ping=False)
    bare = psycopg.connect(url)
    period = reports.Period(day, day)
    start, end = period.bounds()

    def in_session(fn: Any, eng: Any = engine) -> Any:
        with Session(eng) as s:
            return fn(s)

    def settlement_rows(rep: Any) -> list[tuple]:
        return [(r["hall"], r["opening"], r["cards"], r["owed"], r["paid"]) for r in rep.rows]

    def ours_settlement(eng: Any = engine) -> list[tuple]:
        return settlement_rows(in_session(lambda s: reports.settlement(s, period, "hall"), eng))

    def bare_settlement() -> list[tuple]:
        rows = bare.execute(BARE_SETTLEMENT, {"d": day}).fetchall()
        bare.rollback()
        return [tuple(int(v) if not isinstance(v, str) else v for v in row) for row in rows]

    def ours_recharges(by: str, eng: Any = engine):  # type: ignore[no-untyped-def]
        def run() -> list[tuple]:
            rep = in_session(lambda s: reports.recharges(s, period, by), eng)
            return [tuple(r.values()) for r in rep.rows]
        return run

    def bare_recharges(by: str):  # type: ignore[no-untyped-def]
        def run() -> list[tuple]:
            rows = bare.execute(BARE_RECHARGES[by], {"start": start, "end": end}).fetchall()
            bare.rollback()
            return [(v.isoformat() if isinstance(v, dt.date) else v, int(n), int(a)) for v, n, a in rows]
        return run

    cases = [("settlement, all halls, by hall", ours_settlement, lambda: ours_settlement(unpinged), bare_settlement)]
    cases += [(f"recharges by {by}", ours_recharges(by), ours_recharges(by, unpinged), bare_recharges(by))
              for by in reports.RECHARGES_BY]
    results = []
    for label, ours, ours_unpinged, theirs in cases:
        for fn in (ours, ours_unpinged, theirs):
            fn()  # warm: the first run of each reads the pages into shared buffers
        times: list[list[float]] = [[], [], []]
        for i in range(repeat):
            order = [0, 1, 2] if i % 2 == 0 else [2, 1, 0]
            for k in order:
                t, _out = _timed((ours, ours_unpinged, theirs)[k])
                times[k].append(t)
        o_ans, b_ans = ours(), theirs()
        if o_ans != b_ans or ours_unpinged() != b_ans:
            raise SystemExit(f"{label}: ours and bare disagree:\n{o_ans[:5]}\n{b_ans[:5]}")
        o, u, b = (statistics.median(t) for t in times)
        results.append({"case": label, "ours": o, "unpinged": u, "bare": b, "ratio": o / b, "rows": len(o_ans)})
        bl.log(f"{label}: ours {o * 1000:.1f} ms, no ping {u * 1000:.1f} ms, bare {b * 1000:.1f} ms "
               f"({o / b:.2f}x), {len(o_ans)} rows")

    # The plans of our own statements, captured as SQLAlchemy sends them.
    captured: list[tuple[str, Any]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many):  # type: ignore[no-untyped-def]
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    ours_settlement()
    for by in reports.RECHARGES_BY:
        ours_recharges(by)()
    event.remove(engine, "before_cursor_execute", capture)
    plans = []
    with psycopg.connect(url) as conn:
        for statement, params in captured:
            if "GROUP BY" not in statement:
                continue
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + statement, params).fetchall())
            plans.append(plan)
    bare.close()
    engine.dispose()
    unpinged.dispose()
    return results, plans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recharges", type=int, default=1_000_000, help="recharges (= cards) written (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs of each query, median reported")
    parser.add_argument("--pg-url", default=bl.PG_ADMIN_URL, help="PostgreSQL maintenance database (env CARDS_BENCH_PG)")
    parser.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    parser.add_argument("--quiet-wait", type=float, default=60, metavar="SECONDS",
                        help="wait up to this long for the machine to go idle before measuring (default %(default)s)")
    args = parser.parse_args()
    if args.recharges % (SALE_SIZE * HALLS * DAYS * len(FACE_VALUES)):
        parser.error(f"--recharges must be a multiple of {SALE_SIZE * HALLS * DAYS * len(FACE_VALUES)}")
    import psycopg

    from cardmgmt.db import make_engine, upgrade

    machine = bl.machine_summary(args.pg_url)
    name = f"bench_settle_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(args.pg_url, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{args.pg_url.rsplit('/', 1)[0]}/{name}"
    try:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        t, counts = _timed(lambda: populate(url, args.recharges))
        bl.log(f"populated in {t:.0f} s: {counts}")
        admin.execute("CHECKPOINT")
        if args.quiet_wait > 0:
            bl.wait_for_quiet(args.quiet_wait)
        busy0, load0, t0 = bl.machine_busy_seconds(), os.getloadavg()[0], time.perf_counter()
        cpu0 = time.process_time()
        results, plans = measure(url, FIRST_DAY + dt.timedelta(days=DAYS // 2), args.repeat)
        wall = time.perf_counter() - t0
        other = bl.machine_busy_seconds() - busy0 - (time.process_time() - cpu0)
        load1 = os.getloadavg()[0]
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    index_use = ["index" in p.lower() for p in plans]
    rows = [[r["case"], str(r["rows"]), f"{r['ours'] * 1000:.1f}", f"{r['unpinged'] * 1000:.1f}",
             f"{r['bare'] * 1000:.1f}", f"{r['ratio']:.2f}x", "PASS" if r["ratio"] <= GOAL else "FAIL",
             f"{r['unpinged'] / r['bare']:.2f}x"] for r in results]
    body = (
        f"{counts['recharges']:,} recharges over {DAYS} business days ({counts['recharges'] // DAYS:,} on the day "
        f"measured), {counts['cards']:,} cards, {counts['sales']:,} sales and {counts['payments']:,} payments over "
        f"{HALLS} halls; medians of {args.repeat} runs of each, ours and bare alternating. Measured window "
        f"{wall:.1f} s; other CPU (the rest of the machine, the PostgreSQL server included) {other:.1f} CPU-s; "
        f"load average {load0:.2f} → {load1:.2f}.\n\n"
        + bl.markdown_table(["query (one business day)", "rows", "ours ms", "ours, no ping ms", "bare ms", "ours / bare",
                             f"≤ {GOAL}x", "no ping / bare"], rows)
        + f"\n\nPlans of our statements ({sum(index_use)} of {len(plans)} use an index):\n\n```\n"
        + "\n\n".join(plans) + "\n```"
    )
    print(body)
    if args.record:
        command = "bench/bench_settlement.py " + shlex.join(sys.argv[1:])
        bl.record(f"bench_settlement, {counts['recharges']:,} recharges", command, body, args.pg_url, machine)


if __name__ == "__main__":
    main()
