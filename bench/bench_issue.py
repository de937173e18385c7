#!/usr/bin/env python
"""Benchmark: one issue request of N cards, filed, approved (reserving every card) and collected.

Finance's approval reserves the exact cards it approves and collection
issues exactly those (``cardmgmt.issuing``); a request may be for up to
1,000,000 cards, so both must stay set-based.  For each backend a fresh
installation gets N in-stock cards of one batch (bulk-inserted, untimed),
then a fresh Python process times the three steps an operator runs, each in
its own unit of work as ``cli.py`` opens it (schema check, keys, scrypt
sign-in, the service, the operation log, the commit):

``file``     ``issuing.file_request`` (counts the free stock)
``approve``  ``issuing.decide(approve=True)``: picks N cards, reserves them in chunks
``collect``  ``issuing.collect``: one set-based UPDATE, runs computed in the database

and reports wall time per step and the measuring process's peak RSS
(``VmHWM``).  Afterwards every card must be issued under the request.

    .venv/bin/python bench/bench_issue.py                         # 1,000,000 cards, both backends
    .venv/bin/python bench/bench_issue.py --quantity 100000 --backend sqlite
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def setup(url: str, key_dir: Path, n: int) -> None:
    """A fresh installation with ``n`` in-stock cards of batch BENCH1 (50 yuan), hall H1 and finance officer bob."""
    from cardmgmt import halls
    from cardmgmt.context import Permission, Role
    from cardmgmt.db import bulk_insert
    from cardmgmt.models import Batch, Factory
    from cardmgmt.operators import create
    from cardmgmt.serials import make_serial
    from cardmgmt.system import CardSystem
    from testkit.install import PASSWORDS, settings_for
    from testkit.keys import make_key_dir

    make_key_dir(key_dir)
    system = CardSystem(settings_for(url, key_dir, "alice"))
    system.initialise("alice", PASSWORDS["alice"])
    with system.unit(Permission.MANAGE_CARDS) as ctx:
        halls.add(ctx, "H1", "bench hall")
        create(ctx.session, "bob", Role.FINANCE, PASSWORDS["bob"])
        factory = Factory(name="F", public_key_pem="-", fingerprint="-")
        ctx.session.add(factory)
        ctx.session.flush()
        batch = Batch(batch_no="BENCH1", face_value=5000, quantity=n, box_size=100,
                      expiry=dt.date.today() + dt.timedelta(days=730), first_serial=make_serial(1),
                      last_serial=make_serial(n), factory_id=factory.id, new_card_digest="", created_by="alice")
        ctx.session.add(batch)
        ctx.session.flush()
        rows = [(batch.id, make_serial(i), (i - 1) // 100 + 1, hashlib.sha256(i.to_bytes(8, "big")).digest(), "in_stock")
                for i in range(1, n + 1)]
        bulk_insert(ctx.session, "cards", ("batch_id", "serial", "box_no", "pin_hash", "state"), rows)
    if url.startswith("postgresql"):
        from sqlalchemy import text

        with system.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE cards"))
            conn.execute(text("CHECKPOINT"))
    system.close()


def measure(url: str, key_dir: Path, n: int) -> dict[str, float]:
    """The three timed steps, in this (fresh) process."""
    from sqlalchemy import func, select

    from cardmgmt import issuing
    from cardmgmt.context import Permission
    from cardmgmt.models import Card
    from cardmgmt.system import CardSystem
    from testkit.install import settings_for

    alice = CardSystem(settings_for(url, key_dir, "alice"))
    bob = CardSystem(settings_for(url, key_dir, "bob"))
    out: dict[str, float] = {}
    t = time.perf_counter()
    with alice.unit(Permission.MANAGE_CARDS) as ctx:
        rid = issuing.file_request(ctx, face_value=5000, quantity=n, hall_code="H1", reason="bench").id
    out["file_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with bob.unit(Permission.DECIDE_REQUESTS) as ctx:
        issuing.decide(ctx, rid, approve=True, comment="bench")
    out["approve_s"] = time.perf_counter() - t
    out["rss_after_approve_mb"] = vm_hwm_mb()
    t = time.perf_counter()
    with alice.unit(Permission.MANAGE_CARDS) as ctx:
        runs = issuing.collect(ctx, rid)
    out["collect_s"] = time.perf_counter() - t
    out["peak_rss_mb"] = vm_hwm_mb()
    assert runs == [(runs[0][0], runs[-1][1], n)], runs[:3]
    with alice.db.transaction() as s:
        issued = s.execute(select(func.count()).select_from(Card).where(Card.issue_request_id == rid,
                                                                       Card.state == "issued")).scalar_one()
    assert issued == n, issued
    alice.close()
    bob.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quantity", type=int, default=1_000_000)
    p.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument("--measure", nargs=2, metavar=("URL", "KEY_DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]), args.quantity)))
        return
    from testkit import databases

    for backend in (("sqlite", "postgresql") if args.backend == "both" else (args.backend,)):
        with tempfile.TemporaryDirectory(prefix="bench-issue-") as tmp:
            if backend == "sqlite":
                url, name = f"sqlite:///{tmp}/cards.db", None
            else:
                name = databases.create_database("bench_issue")
                url = databases.pg_url(name)
            try:
                databases.migrate(url)
                t = time.perf_counter()
                setup(url, Path(tmp) / "keys", args.quantity)
                setup_s = time.perf_counter() - t
                done = subprocess.run([sys.executable, __file__, "--quantity", str(args.quantity), "--measure", url,
                                       str(Path(tmp) / "keys")], check=True, capture_output=True, text=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                print(json.dumps({"backend": backend, "cards": args.quantity, "setup_s": round(setup_s, 1),
                                  **{k: round(v, 2) for k, v in result.items()}}))
            finally:
                if name:
                    databases.drop_database(name)


if __name__ == "__main__":
    main()
