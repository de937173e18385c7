#!/usr/bin/env python
"""Benchmark: sell a range of N issued cards (``cardmgmt.sales.sell``) against a bare SQL loop doing the same work.

For each backend, on fresh installations (``benchlib.Workspace.install``),
a batch of N cards is made with ``batches.create`` and, untimed, put straight
into ``issued`` at hall H01 by one ``UPDATE`` (the walk through the factory
file, the check and an issue request is not what is measured here).  Then
one of two steps is timed, each on an installation of its own:

``ours``  ``with system.unit(SELL_CARDS) as ctx: sales.sell(ctx, "H01",
          Selection(first_serial=..., last_serial=...))`` — what ``cli.py sale
          record --from --to`` does: schema check, keys, operator sign-in
          (scrypt), the hall and the selection resolved, the cards counted by
          state and by hall, the sale row, the conditional ``UPDATE`` of the
          range to ``sold`` with its row count checked, the operation log, the
          commit and the log's anchor.
``bare``  the same writes straight through the driver (``sqlite3`` /
          psycopg), in one transaction: insert the sale row, one
          ``UPDATE cards SET state='sold', sale_id=... WHERE batch_id=... AND
          serial BETWEEN ... AND hall_id=... AND state='issued'``, check the row
          count, set the sale's quantity and amount, commit.

Both are then checked: N cards ``sold`` under one sale of N × face value.
Wall time is ``time.perf_counter`` around the step; "work" leaves out the
unit's opening (sign-in).  Target: ours ≤ 1.5 × bare.

    .venv/bin/python bench/bench_sales.py                      # 100,000 cards, both backends
    .venv/bin/python bench/bench_sales.py --backend postgresql --repeat 3 --record
"""

from __future__ import annotations

import argparse
import shlex
import sqlite3
import sys
import time
from typing import Any

import benchlib as bl

TARGET_RATIO = 1.5
HALL = "H01"


def prepare(ws: bl.Workspace, backend: str, label: str, n: int) -> tuple[bl.Installation, dict[str, Any]]:
    """A fresh installation holding N cards issued to hall H01 (untimed); the facts the steps need."""
    from sqlalchemy import func, select, text, update

    from cardmgmt import batches, halls
    from cardmgmt.context import Permission
    from cardmgmt.models import Card

    inst = ws.install(backend, label)
    system = inst.system()
    try:
        with system.unit(Permission.MANAGE_CARDS) as ctx:
            batch = batches.create(ctx, batch_no=bl.BATCH_NO, face_value=bl.FACE_VALUE, quantity=n,
                                   box_size=bl.BOX_SIZE, expiry=bl.expiry(), factory_name=bl.FACTORY,
                                   out=inst.home / "batch.newcard")
            hall = halls.add(ctx, HALL, "bench hall")
            facts = {"batch_id": batch.id, "hall_id": hall.id, "first": batch.first_serial, "last": batch.last_serial}
        with system.db.transaction() as s:
            s.execute(update(Card).where(Card.batch_id == facts["batch_id"])
                      .values(state="issued", hall_id=facts["hall_id"]))
            assert s.scalar(select(func.count()).select_from(Card).where(Card.state == "issued")) == n
        if backend == "postgresql":
            # Both variants start from the same table: the setup's dead row versions gone, statistics fresh.
            with system.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE cards"))
    finally:
        system.close()
    return inst, facts


def step_ours(inst: bl.Installation, facts: dict[str, Any]) -> dict[str, float]:
    from cardmgmt import sales, stock
    from cardmgmt.context import Permission

    system = inst.system()
    try:
        system.keys()  # the key directory is read once per process, as a server would
        started = time.perf_counter()
        with system.unit(Permission.SELL_CARDS) as ctx:
            opened = time.perf_counter()
            sales.sell(ctx, HALL, stock.Selection(first_serial=facts["first"], last_serial=facts["last"]))
        ended = time.perf_counter()
    finally:
        system.close()
    return {"wall": ended - started, "open": opened - started, "work": ended - opened}


def step_bare(inst: bl.Installation, facts: dict[str, Any]) -> dict[str, float]:
    """The sale's writes as plain SQL in one transaction, with the same row-count check."""
    import datetime as dt

    from cardmgmt.days import business_day

    now = dt.datetime.now(dt.UTC)
    args = dict(facts, hall_id=facts["hall_id"], now=now, day=business_day(now))
    if inst.backend == "sqlite":
        conn = sqlite3.connect(inst.url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        sale_id = conn.execute(
            "INSERT INTO sales (hall_id, channel, seller, first_serial, last_serial, quantity, amount, sold_at, day)"
            " VALUES (?, 'counter', ?, ?, ?, 0, 0, ?, ?) RETURNING id",
            (args["hall_id"], bl.ADMIN, args["first"], args["last"], now.isoformat(), args["day"].isoformat()),
        ).fetchone()[0]
        count = conn.execute(
            "UPDATE cards SET state = 'sold', prior_state = NULL, sale_id = ? WHERE batch_id = ?"
            " AND serial BETWEEN ? AND ? AND hall_id = ? AND state = 'issued'",
            (sale_id, args["batch_id"], args["first"], args["last"], args["hall_id"]),
        ).rowcount
        conn.execute("UPDATE sales SET quantity = ?, amount = ? WHERE id = ?", (count, count * bl.FACE_VALUE, sale_id))
        conn.execute("COMMIT")
        ended = time.perf_counter()
        conn.close()
    else:
        import psycopg

        with psycopg.connect(inst.url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            started = time.perf_counter()
            with conn.transaction():
                sale_id = conn.execute(
                    "INSERT INTO sales (hall_id, channel, seller, first_serial, last_serial, quantity, amount, sold_at,"
                    " day) VALUES (%s, 'counter', %s, %s, %s, 0, 0, %s, %s) RETURNING id",
                    (args["hall_id"], bl.ADMIN, args["first"], args["last"], now, args["day"]),
                ).fetchone()[0]  # type: ignore[index]
                count = conn.execute(
                    "UPDATE cards SET state = 'sold', prior_state = NULL, sale_id = %s WHERE batch_id = %s"
                    " AND serial BETWEEN %s AND %s AND hall_id = %s AND state = 'issued'",
                    (sale_id, args["batch_id"], args["first"], args["last"], args["hall_id"]),
                ).rowcount
                conn.execute("UPDATE sales SET quantity = %s, amount = %s WHERE id = %s",
                             (count, count * bl.FACE_VALUE, sale_id))
            ended = time.perf_counter()
    if count != args["quantity"]:
        raise RuntimeError(f"the bare loop sold {count} cards, not {args['quantity']}")
    return {"wall": ended - started, "open": 0.0, "work": ended - started}


def check(inst: bl.Installation, n: int) -> None:
    """N cards sold, one sale of N cards owing N × face value: a step that did less cannot look fast."""
    from sqlalchemy import func, select

    from cardmgmt.models import Card, Sale

    system = inst.system()
    try:
        with system.db.transaction() as s:
            sold = s.scalar(select(func.count()).select_from(Card).where(Card.state == "sold", Card.sale_id.is_not(None)))
            rows = s.execute(select(Sale.quantity, Sale.amount)).all()
    finally:
        system.close()
    if sold != n or [tuple(r) for r in rows] != [(n, n * bl.FACE_VALUE)]:
        raise RuntimeError(f"expected {n} cards sold in one sale, found {sold} sold and sales {rows}")


def measure(ws: bl.Workspace, backend: str, variant: str, n: int, i: int) -> dict[str, Any]:
    inst, facts = prepare(ws, backend, f"{backend}-{variant}-{i}", n)
    facts["quantity"] = n
    try:
        ws.before_measurement(backend)
        busy0 = bl.machine_busy_seconds()
        cpu0 = time.process_time()
        result = (step_ours if variant == "ours" else step_bare)(inst, facts)
        result["client_cpu"] = time.process_time() - cpu0
        result["other_cpu"] = max(0.0, bl.machine_busy_seconds() - busy0 - result["client_cpu"])
        check(inst, n)
    finally:
        ws.discard(inst)
    bl.log(f"{backend} {variant}: {result['wall']:.2f} s")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bl.common_arguments(parser, default_quantity=100_000)
    args = parser.parse_args(argv)
    machine = bl.machine_summary(args.pg_url if args.backend != "sqlite" else None)
    ws = bl.Workspace(args.workdir, args.pg_url, args.keep, args.quiet_wait)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        for backend in bl.backends(args.backend):
            for i in range(args.repeat):
                # Alternate the order between repeats, so neither variant always runs on a warmer machine.
                for variant in (("ours", "bare") if i % 2 == 0 else ("bare", "ours")):
                    runs.setdefault((backend, variant), []).append(measure(ws, backend, variant, args.quantity, i))
    finally:
        ws.close()
    rows, verdicts = [], []
    for backend in bl.backends(args.backend):
        med = {v: {k: bl.median([r[k] for r in runs[(backend, v)]]) for k in runs[(backend, v)][0]} for v in ("ours", "bare")}
        for v in ("ours", "bare"):
            m = med[v]
            rows.append([backend, v, f"{m['wall']:.3f}", f"{m['open']:.3f}", f"{m['work']:.3f}",
                         bl.fmt(m["client_cpu"], 2), bl.fmt(m["other_cpu"], 1)])
        ratio = med["ours"]["wall"] / med["bare"]["wall"]
        work_ratio = med["ours"]["work"] / med["bare"]["wall"]
        verdicts.append([backend, f"{med['ours']['wall']:.3f} s", f"{med['bare']['wall']:.3f} s", f"{ratio:.2f}×",
                         f"{work_ratio:.2f}×", "PASS" if ratio <= TARGET_RATIO else "MISS"])
    body = (
        f"`sales.sell` of a {args.quantity:,}-card serial range (one batch issued to one hall) against the bare SQL "
        f"doing the same writes; median of {args.repeat} run(s), each on a fresh database; \"open\" is the unit's "
        "opening (schema check, sign-in), \"work\" the sale and the commit; client CPU is this process's CPU "
        "during the step; other CPU is what the rest of the machine used meanwhile (PostgreSQL's backend included).\n\n"
        + bl.markdown_table(["backend", "variant", "wall s", "open s", "work s", "client CPU s", "other CPU s"], rows)
        + "\n\n"
        + bl.markdown_table(["backend", "ours", "bare", "ours / bare", "work / bare", f"≤ {TARGET_RATIO}×"], verdicts)
    )
    print(body)
    if args.record:
        command = "bench/bench_sales.py " + shlex.join(argv if argv is not None else sys.argv[1:])
        bl.record(f"bench_sales, {args.quantity:,} cards", command, body, args.pg_url, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
