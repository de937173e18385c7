#!/usr/bin/env python
"""Benchmark: how soon recharges resume after a kill, and the price of the synchronous standby in throughput.

Two installations are built as the integration tests build one
(``testkit.install``, ``testkit.lifecycle``), each with its own server pair
(``cli.py serve A`` and ``B``) and a stand-in marketing database on the
PostgreSQL server at 127.0.0.1:5432:

``single``  the card database as today: one database on 127.0.0.1:5432;
``sync``    the card database on the failover topology (``testkit.dbcluster``):
            a pg_auto_failover monitor, a primary and a synchronous standby
            (``synchronous_commit = on``, ``ANY 1 (standby)``), reached by the
            multi-host URL.

**Throughput**: after ``--warmup`` seconds of unmeasured load on each,
callers (``testkit.load.SteadyLoad``, the real failover client, quote then
commit, no pause) recharge for ``--seconds`` against each pair in turn, alternating ``single``/``sync`` ``--rounds`` times so both
see the same machine; committed recharges per second per phase, and the
ratio of the medians.

**Failover**: against the ``sync`` pair under a steady paced load, repeated
``--runs`` times each: (db) kill -9 the database primary (keeper, postmaster
and backends: a machine that died); (server) kill -9 the leading recharge
server; (both) the two at once.  Measured: seconds from the kill to the end
of the first successful recharge begun after it, median and worst; the killed
parts are brought back (the old primary rejoins as the standby) and the
topology is whole again before the next run.

    .venv/bin/python bench/bench_failover.py [--runs 5] [--seconds 10] [--rounds 2] [--record]

``--record`` appends the figures to bench/RESULTS.md.  Goals: recharges
resume within 5 s of the database primary's death; throughput with the
synchronous standby at least 70 % of the single database's.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl

from cardmgmt.context import Role
from cardmgmt.system import CardSystem
from marketing_iface.standin import SAMPLE_ACCOUNTS
from testkit.chaos import kill_db_primary, kill_leading_server, leader, wait_for
from testkit.dbcluster import DbTopology
from testkit.factory import make_factory_keys
from testkit.install import PASSWORDS, Installation
from testkit.lifecycle import Bench, sold_batch
from testkit.load import SteadyLoad

ACCOUNTS = [a.account_no for a in SAMPLE_ACCOUNTS]


class Cards:
    """The installation's sold cards, handed out in slices so that no card is recharged twice."""

    def __init__(self, cards: list[tuple[str, str]]) -> None:
        self.cards, self.used = cards, 0

    def take(self, n: int) -> list[tuple[str, str]]:
        if self.used + n > len(self.cards):
            raise SystemExit(f"out of cards ({len(self.cards)}); raise --cards")
        out = self.cards[self.used:self.used + n]
        self.used += n
        return out


def build(workdir: Path, card_url: str, n_cards: int, factory_keys: tuple[Path, Path], batch: str) -> Installation:
    inst = Installation(workdir, given_card_url=card_url)
    inst.setup()
    system = CardSystem(inst.settings())
    try:
        system.initialise("alice", PASSWORDS["alice"])
        bench = Bench(system, workdir, factory_keys)
        bench.add_operator("bob", Role.FINANCE)
        t = time.monotonic()
        inst.pool = Cards(list(sold_batch(bench, batch, n_cards, box_size=100).items()))
        bl.log(f"{n_cards} cards sold in {time.monotonic() - t:.1f}s")
        bench.close_others()
    finally:
        system.close()
    settle(inst.card_url)
    inst.start_pair()
    wait_for(lambda: leader(inst), 20)
    return inst


def settle(url: str) -> None:
    """VACUUM ANALYZE and CHECKPOINT the new card database: cards are recharged days after they are loaded.

    Both databases then start from the same state.  Without it the replicated
    one would pay for the load again in the first phase: pg_auto_failover
    turns on ``wal_log_hints`` (for ``pg_rewind``), so the first read of each
    freshly loaded page writes it whole to the WAL, for the synchronous
    standby to flush.
    """
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def part_cpu(topo: DbTopology, name: str) -> float:
    """CPU seconds used so far by the live processes of one topology part (keeper, postmaster, backends)."""
    return sum(bl.proc_cpu_seconds(pid) or 0 for pid in topo.pids(name))


def single_backends(inst: Installation) -> list[int]:
    """The backends of the single card database on 127.0.0.1:5432 (its servers' pooled connections)."""
    if not inst.card_db:
        return []
    import psycopg

    with psycopg.connect(bl.PG_ADMIN_URL, autocommit=True) as conn:
        return [pid for (pid,) in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (inst.card_db,))]


def cpu_meters(topo: DbTopology, backends: list[int]) -> dict[str, float]:
    """CPU seconds so far: each topology part, the single database's backends, the whole machine (busy time)."""
    out = {name: part_cpu(topo, name) for name in ("monitor", *topo.nodes)}
    out["single db backends"] = sum(bl.proc_cpu_seconds(pid) or 0 for pid in backends)
    out["machine"] = bl.machine_busy_seconds()
    return out


def throughput(inst: Installation, seconds: float, workers: int, tag: str, topo: DbTopology) -> tuple[float, str]:
    load = SteadyLoad(lambda: inst.client(timeout=2.0, total_timeout=4.0), inst.pool.take(int(seconds * 400)),
                      ACCOUNTS, prefix=f"tp-{tag}", workers=workers).start()
    time.sleep(1.0)  # warm: connections made, caches filled
    first = load.ok_count()
    backends = single_backends(inst)
    before = cpu_meters(topo, backends)
    servers = [bl.proc_cpu_seconds(s.proc.pid) for s in inst.servers]
    t = time.monotonic()
    time.sleep(seconds)
    n = load.ok_count() - first
    elapsed = time.monotonic() - t
    after = cpu_meters(topo, backends)
    servers_after = [bl.proc_cpu_seconds(s.proc.pid) for s in inst.servers]
    rate = n / elapsed
    load.stop()
    per = {k: 1000 * (after[k] - before[k]) / max(n, 1) for k in after}
    per["servers"] = 1000 * sum((b or 0) - (a or 0) for a, b in zip(servers, servers_after, strict=True)) / max(n, 1)
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in per.items())
    return rate, cpu


def failover_run(inst: Installation, kind: str, i: int) -> dict[str, float | int]:
    load = SteadyLoad(lambda: inst.client(), inst.pool.take(600), ACCOUNTS, prefix=f"fo-{kind}-{i}",
                      workers=3, think=0.05).start()
    if not wait_for(lambda: load.ok_count() >= 10, 20):
        raise SystemExit("no recharges before the kill")
    if kind == "db":
        at, restore = kill_db_primary(inst)
    elif kind == "server":
        at, restore = kill_leading_server(inst)
    else:
        at_s, restore_s = kill_leading_server(inst)
        at_d, restore_d = kill_db_primary(inst)
        at = max(at_s, at_d)  # recharges begun after both are dead

        def restore() -> None:
            restore_d()
            restore_s()
    resumed = wait_for(lambda: load.resumed_after(at), 60, step=0.02)
    calls = load.stop()
    restore()
    wait_for(lambda: leader(inst), 20)
    outcomes = {c.answer.get("outcome") for c in calls}
    repeated = sum(1 for c in calls if c.repeats)
    bl.log(f"{kind} #{i}: resumed after {resumed:.2f}s; {len(calls)} calls, {repeated} repeated a step; {outcomes}")
    if outcomes != {"ok"}:
        raise SystemExit(f"a call ended {outcomes}")
    return {"resumed": resumed, "calls": len(calls), "repeated": repeated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="kills of each kind (default 5)")
    parser.add_argument("--seconds", type=float, default=10, help="length of each throughput phase (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="single/sync throughput alternations (default 2)")
    parser.add_argument("--warmup", type=float, default=5,
                        help="seconds of unmeasured load on each installation first (default 5)")
    parser.add_argument("--workers", type=int, default=8, help="callers in the throughput phases (default 8)")
    parser.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    args = parser.parse_args()
    logging.getLogger("ivr.client").setLevel(logging.ERROR)  # each failover is hundreds of "trying the next server"
    machine = bl.machine_summary(bl.PG_ADMIN_URL)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    work = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    topo = DbTopology.create()
    n_cards = int((args.rounds * args.seconds + args.warmup) * 400 + 3 * args.runs * 600 + 100)
    single = sync = None
    try:
        t = time.monotonic()
        topo.start()
        bl.log(f"topology up in {time.monotonic() - t:.1f}s")
        keys = make_factory_keys(work / "factory")
        (work / "single").mkdir()
        (work / "sync").mkdir()
        single = build(work / "single", "", int((args.rounds * args.seconds + args.warmup) * 400 + 100), keys, "S1")
        sync = build(work / "sync", topo.url(), n_cards, keys, "H1")
        sync.topology = topo
        for name, inst in (("single", single), ("sync", sync)):
            if args.warmup:
                throughput(inst, args.warmup, args.workers, f"{name}-warm", topo)
        rates: dict[str, list[float]] = {"single": [], "sync": []}
        cpus: dict[str, list[str]] = {"single": [], "sync": []}
        for r in range(args.rounds):
            for name, inst in (("single", single), ("sync", sync)):
                rate, cpu = throughput(inst, args.seconds, args.workers, f"{name}{r}", topo)
                rates[name].append(rate)
                cpus[name].append(cpu)
                bl.log(f"throughput {name} round {r}: {rate:.1f} recharges/s; CPU ms per recharge: {cpu}")
        runs: dict[str, list[dict[str, float | int]]] = {"db": [], "server": [], "both": []}
        for i in range(args.runs):
            for kind in runs:
                runs[kind].append(failover_run(sync, kind, i))
    finally:
        for inst in (single, sync):
            if inst is not None:
                inst.teardown()
        topo.stop()
        shutil.rmtree(work, ignore_errors=True)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    med = {k: statistics.median(v) for k, v in rates.items()}
    rows = [[kind, str(len(v)), bl.fmt(statistics.median(x["resumed"] for x in v), 2),
             bl.fmt(max(x["resumed"] for x in v), 2), str(sum(int(x["repeated"]) for x in v))]
            for kind, v in runs.items() if v]
    body = ("" if not rows else
        "Failover (kill -9 under steady load, 3 callers; seconds from the kill to the end of the first "
        "successful recharge begun after it):\n\n"
        + bl.markdown_table(["killed", "runs", "median s", "worst s", "calls that repeated a step"], rows)
        + "\n\n") + ("Throughput of the pair, committed recharges/s "
        f"({args.workers} callers without pause, {args.seconds:.0f} s phases after {args.warmup:.0f} s of warm-up, "
        f"alternated {args.rounds}x):\n\n"
        + bl.markdown_table(["card database", "phases", "median", "all"],
                            [[k, str(len(v)), bl.fmt(med[k]), ", ".join(bl.fmt(x) for x in v)]
                             for k, v in rates.items()])
        + "\n\nCPU milliseconds per committed recharge, per phase (each topology part: keeper, postmaster and backends; "
        "servers A+B; machine = all busy CPU, other people's work included):\n\n"
        + "\n".join(f"- {k} round {i}: {c}" for k, v in cpus.items() for i, c in enumerate(v))
        + f"\n\nsynchronous standby / single database: {100 * med['sync'] / med['single']:.0f} % (goal ≥ 70 %). "
        f"Load average before {' '.join(load_before)}, after {' '.join(load_after)} "
        "(2 cores, shared with other people's tests and builds)."
    )
    print(body)
    print(json.dumps({"rates": rates, "runs": runs}))
    if args.record:
        bl.record("database failover and synchronous replication", "bench/bench_failover.py "
                  + " ".join(sys.argv[1:]), body, bl.PG_ADMIN_URL, machine)


if __name__ == "__main__":
    main()
