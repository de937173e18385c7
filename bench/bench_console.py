"""Page times of the web console over a large installation on PostgreSQL.

Builds a card database with ``--cards`` cards (default 1,000,000) in ten
batches spread over a hall hierarchy (a city, ``--counties`` counties,
``--halls`` halls), in every state a card reaches (in stock, issued to a
hall, sold, redeemed), a year of daily sales per hall, ``--recharges``
recharges spread over the same year (one per card, on three channels,
all posted but the last hour's), the business days before today closed
(``reports.close_days``, as the recharge servers' job does), pending issue requests, and
``--log-entries`` entries of a real hash-chained operation
log.  The cards, sales and recharges are written with ``COPY`` straight into the
tables (the services would take minutes to walk a million cards through
their life, and the console only reads them); the log is written by
``audit.record``, so ``audit verify`` on the log page does its real work.

Then the console runs on a live reactor with its TLS listener, an auditor
(who may also verify the log) signs in over HTTPS, and each page is fetched
``--repeat`` times after one warm-up: wall-clock time from request to the
last byte of the answer, p50/p95/max per page.

    python bench/bench_console.py                       # 1,000,000 cards
    python bench/bench_console.py --cards 100000 --record   # and append the figures to bench/RESULTS.md
"""

# test-case-name: tests.console.test_web

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl

from cardmgmt import audit, operators, reports, tls
from cardmgmt.context import Permission, Role
from cardmgmt.db import Database
from cardmgmt.models import Batch, Factory, Hall, HallLevel, IssueRequest
from cardmgmt.serials import make_serial
from cardmgmt.states import CardState, RequestStatus
from cardmgmt.system import CardSystem
from testkit import databases
from testkit.console import ConsoleClient, running_console
from testkit.install import PASSWORDS, settings_for
from testkit.keys import make_key_dir
from testkit.live_api import running_reactor

TODAY = dt.date.today()
PAGES = ("/requests", "/stock", "/halls", "/halls?from=2026-01-01&to=2026-06-30", "/audit", "/audit?verify=1", "/health",
         "/stock.csv?table=by_hall", "/reports", f"/reports?from={TODAY - dt.timedelta(days=30)}&to={TODAY}",
         f"/reports?from={TODAY - dt.timedelta(days=364)}&to={TODAY}", "/reports?value=1", "/reversals",
         f"/settlement?day={TODAY}")
CHANNELS = ("hotline", "pos", "web")
BATCHES = 10
FACE_VALUES = (2000, 5000, 10000)


def populate(db: Database, cards: int, counties: int, halls: int, days: int) -> None:
    """Halls, batches, cards (COPY), daily sales and pending requests, written straight into the tables."""
    today = dt.date.today()
    with db.transaction() as s:
        factory = Factory(name="Bench Factory", public_key_pem="(bench)", fingerprint="bench")
        s.add(factory)
        city = Hall(code="CITY", name="city", level=HallLevel.CITY)
        s.add(city)
        s.flush()
        county_rows = [Hall(code=f"C{i:02d}", name=f"county {i}", level=HallLevel.COUNTY, parent_id=city.id)
                       for i in range(counties)]
        s.add_all(county_rows)
        s.flush()
        hall_rows = [Hall(code=f"H{i:04d}", name=f"hall {i}", level=HallLevel.HALL, parent_id=county_rows[i % counties].id)
                     for i in range(halls)]
        s.add_all(hall_rows)
        s.flush()
        per_batch = cards // BATCHES
        batch_rows = []
        for b in range(BATCHES):
            first = b * per_batch + 1
            batch_rows.append(Batch(batch_no=f"BB{b:02d}", face_value=FACE_VALUES[b % len(FACE_VALUES)], quantity=per_batch,
                                    box_size=100, expiry=today + dt.timedelta(days=400 + 30 * b),
                                    first_serial=make_serial(first), last_serial=make_serial(first + per_batch - 1),
                                    factory_id=factory.id, new_card_digest="0" * 64, created_by="alice"))
        s.add_all(batch_rows)
        s.flush()
        hall_ids = [h.id for h in hall_rows]
        for b, batch in enumerate(batch_rows):
            rows = []
            for k in range(per_batch):
                seq = b * per_batch + k + 1
                share = seq % 20  # 20 % in stock, 30 % issued, 45 % sold, 5 % redeemed
                state = (CardState.IN_STOCK if share < 4 else CardState.ISSUED if share < 10
                         else CardState.SOLD if share < 19 else CardState.REDEEMED)
                hall = None if state is CardState.IN_STOCK else hall_ids[seq % len(hall_ids)]
                rows.append((batch.id, make_serial(seq), k // 100 + 1, hashlib.sha256(b"bench%d" % seq).digest(),
                             state.value, hall))
            raw = s.connection().connection.driver_connection
            with raw.cursor() as cur, cur.copy("COPY cards (batch_id, serial, box_no, pin_hash, state, hall_id) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            bl.log(f"batch {b + 1}/{BATCHES}: {per_batch:,} cards")
        raw = s.connection().connection.driver_connection
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
        with raw.cursor() as cur, cur.copy(
            "COPY sales (hall_id, channel, seller, first_serial, last_serial, quantity, amount, sold_at, day) FROM STDIN"
        ) as copy:
            for d in range(days):
                at = start + dt.timedelta(days=d, hours=3)
                for i, hid in enumerate(hall_ids):
                    n = 5 + (i + d) % 20
                    copy.write_row((hid, "counter", "alice", make_serial(1), make_serial(n), n, n * 5000, at, at.date()))
        for i in range(30):
            s.add(IssueRequest(face_value=5000, quantity=100 + i, hall_id=hall_ids[i % len(hall_ids)],
                               status=RequestStatus.PENDING, reason="weekly", requested_by="alice"))
    bl.log(f"{days * halls:,} sales, 30 pending requests")


def write_recharges(db: Database, count: int, days: int) -> None:
    """``count`` recharges (COPY), one per card from the first, evenly over the last ``days`` days up to now."""
    now = dt.datetime.now(dt.UTC)
    step = dt.timedelta(days=days) / max(count, 1)
    with db.transaction() as s:
        raw = s.connection().connection.driver_connection
        with raw.cursor() as cur:
            cur.execute("SELECT c.id, c.serial, b.face_value FROM cards c JOIN batches b ON b.id = c.batch_id "
                        "ORDER BY c.id LIMIT %s", (count,))
            cards = cur.fetchall()
        with raw.cursor() as cur, cur.copy(
            "COPY recharges (key, call_id, channel, caller, card_id, card_serial, account_no, amount, committed_at, "
            "post_status, post_attempts, next_attempt_at, posted_at) FROM STDIN"
        ) as copy:
            for i, (card_id, serial, face_value) in enumerate(cards):
                at = now - dt.timedelta(days=days) + step * i
                posted = at < now - dt.timedelta(hours=1)
                copy.write_row((f"bench-{i}#1", f"bench-{i}", CHANNELS[i % len(CHANNELS)], "13800138000", card_id, serial,
                                f"31{i % 10**8:08d}", face_value, at, "posted" if posted else "pending", 1 if posted else 0,
                                at, at + dt.timedelta(seconds=30) if posted else None))
    bl.log(f"{len(cards):,} recharges over {days} days")


def close_days(db: Database) -> None:
    """Close every ended business day, as the recharge servers' ``close-days`` job does, a month of days a unit."""
    t, closed = time.perf_counter(), 0
    while True:
        with db.transaction() as s:
            done = reports.close_days(s)
        if not done:
            break
        closed += len(done)
    bl.log(f"{closed} business days closed in {time.perf_counter() - t:.1f} s")


def write_log(system: CardSystem, entries: int) -> None:
    """``entries`` real operation-log entries (hash-chained, anchored), in units of 5,000."""
    done = 0
    while done < entries:
        with system.unit(Permission.MANAGE_CARDS) as ctx:
            for _ in range(min(5000, entries - done)):
                ctx.log("bench.entry", f"entry {done}", before={"n": done}, after={"n": done + 1})
                done += 1
    bl.log(f"{entries:,} log entries")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cards", type=int, default=1_000_000)
    parser.add_argument("--counties", type=int, default=10)
    parser.add_argument("--halls", type=int, default=200)
    parser.add_argument("--days", type=int, default=365, help="Days of daily sales per hall.")
    parser.add_argument("--recharges", type=int, default=1_000_000, help="Recharges over the same days (at most --cards).")
    parser.add_argument("--log-entries", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--record", action="store_true", help="Append the figures to bench/RESULTS.md.")
    args = parser.parse_args()
    machine = bl.machine_summary(bl.PG_ADMIN_URL)
    name = databases.create_database("console_bench")
    try:
        url = databases.migrate(databases.pg_url(name))
        work = Path(tempfile.mkdtemp(prefix="console-bench-"))
        key_dir = make_key_dir(work / "keys")  # with the installation's CA and the servers' certificate
        system = CardSystem(settings_for(url, key_dir, "alice"))
        system.initialise("alice", PASSWORDS["alice"])
        with system.unit(Permission.MANAGE_OPERATORS) as ctx:
            operators.create(ctx.session, "carol", Role.AUDITOR, PASSWORDS["carol"])
        t0 = time.perf_counter()
        populate(system.db, args.cards, args.counties, args.halls, args.days)
        write_recharges(system.db, args.recharges, args.days)
        close_days(system.db)
        write_log(system, args.log_entries)
        with system.db.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        bl.log(f"installation ready in {time.perf_counter() - t0:.0f} s")
        with system.db.transaction() as s:
            assert audit.count(s) >= args.log_entries
        system.close()
        rows = []
        with running_reactor() as reactor, running_console(settings_for(url, key_dir, None), reactor) as server:
            client = ConsoleClient(server.url, str(key_dir / tls.CA_CERT))
            assert client.sign_in("carol").status == 303
            for page in PAGES:
                assert client.get(page).status == 200, page  # warm-up
                times = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    r = client.get(page)
                    times.append((time.perf_counter() - t) * 1000)
                    assert r.status == 200
                rows.append([page, f"{statistics.median(times):.0f}", f"{pct(times, 0.95):.0f}", f"{max(times):.0f}",
                             f"{len(r.body) / 1024:.0f}"])
                bl.log(f"{page}: p50 {rows[-1][1]} ms, p95 {rows[-1][2]} ms")
    finally:
        databases.drop_database(name)
    table = bl.markdown_table(["page", "p50 ms", "p95 ms", "max ms", "answer KiB"], rows)
    body = (f"{args.cards:,} cards in {BATCHES} batches, 1 city, {args.counties} counties, {args.halls} halls, "
            f"{args.days * args.halls:,} sales ({args.days} days), {min(args.recharges, args.cards):,} recharges over the same days, "
            f"30 pending requests, {args.log_entries:,} log entries; "
            f"signed in as an auditor (`/audit?verify=1` runs `audit verify` over the whole log); {args.repeat} fetches "
            f"per page after one warm-up, one at a time, over HTTPS on the loopback.\n\n{table}")
    print(body)
    if args.record:
        bl.record("bench_console: web console page times", " ".join(["python", *sys.argv]), body, bl.PG_ADMIN_URL, machine)


if __name__ == "__main__":
    main()
