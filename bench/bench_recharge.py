#!/usr/bin/env python
"""Benchmark: recharges per second through the recharge servers (quote + commit), and failover.

For each backend a fresh installation is built the way the integration tests
build one (``testkit.install``, ``testkit.lifecycle``): a migrated
card database, a stand-in marketing database, a key directory, operators, and
one batch of N cards made, produced by the stand-in factory, checked, taken
into stock and issued to a hall; the PINs are read back from the new-card
file as the factory would.  On SQLite both server processes share one card
database file (and one marketing file).

A *recharge* is what the phone dialog does once the caller has keyed the
PIN: ``quote`` then ``commit``, two signed HTTPS requests.  The phases, each
against the same installation, each with its own slice of cards:

``sql``      the database's own limit: the statements one recharge makes
             on its fast path (per request one transaction: the nonce insert,
             then the quote's failure count, hold and quote upsert, or the
             commit's quote, spend and record), written as raw SQL on the
             DB-API driver, one connection per thread; the account summary
             comes from the service's cache in steady state and is left out;
``service``  ``RechargeService.quote`` and ``commit``, each with a nonce,
             called in one process from N threads, exactly what a server's
             thread pool runs, with no HTTP, no Twisted, no signing;
``single``   N callers against server A alone (B not running);
``pair``     N callers against the pair, both serving: half prefer A, half B;
``paced``    N callers against the pair (half prefer A, half B) who, like
             people on the phone, pause between steps: an exponentially
             distributed think time before the quote and before the commit,
             so that together they offer each of the ``--paced-rates`` in
             turn (recharges per second); latency is the quote's plus the commit's (the pauses
             are not counted).  A closed loop cannot show latency at 200
             callers: with no pause each caller's wait is simply
             200 / throughput;
``failover`` N callers all preferring A (the documented set-up, B standby),
             A is SIGKILLed mid-run; per caller, the time from the kill to
             its first successful answer, and the longest single request.

Callers run in a separate pool of processes (``--client-procs``), each with
threads that use the real failover client ``ivr.client.RechargeClient``
(a new connection per request, default timeouts 0.5 s / 1 s), and retry a
step that answered ``service_unavailable`` as the dialog does.  Client,
server and PostgreSQL backend CPU are measured per phase, and so is the CPU
everybody else on the machine used (other people's tests), with the load
average: on two cores a recharge's whole CPU cost (client + server +
database) is what bounds the rate.

Targets (PostgreSQL): >= 300 committed recharges/s, p99 < 50 ms at 200
concurrent callers, failover wait <= 2 s.

    .venv/bin/python bench/bench_recharge.py                            # both backends, 1/50/200 callers
    .venv/bin/python bench/bench_recharge.py --backend postgresql --record
    .venv/bin/python bench/bench_recharge.py --backend postgresql --clients 200 --phases single --profile
    .venv/bin/python bench/bench_recharge.py --backend postgresql --phases pair --clients 5,10,20,40,200 --cpu-burner

Overload: ``--phases pair --clients 5,10,20,40,200``.  The pair's capacity
is the fewest closed-loop callers that reach 95 % of the run's peak rate
(callers with no think time: from there on more callers only queue), found
in the same run; each row is named as a multiple of it, and the target
(≥ 90 % of the peak, every round answered within the client's deadline)
applies from 1x to 4x; rows outside are shown against it without a verdict.
Each row says how many of the callers' rounds (one client request, failover
and back-off included) ended busy or unavailable, the longest, and how many
took longer than the client's deadline.  ``--cpu-burner`` keeps one of the
cores busy throughout each phase.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import re
import resource
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib as bl

ROOT = bl.ROOT

TARGET_RPS = 300.0
TARGET_P99_MS = 50.0
TARGET_FAILOVER_S = 2.0
# Run order: the HTTP phases first (the servers' outbox keeps up with their own recharges), then the direct ones.
PHASES = ("single", "pair", "paced", "failover", "service", "sql")
SHOWN = ("sql", "service", "single", "pair", "paced", "failover")  # table order
# Share of the cards each phase gets (raw SQL runs several times faster than the rest).
WEIGHT = {"sql": 6.0, "service": 1.5, "single": 1.0, "pair": 1.2, "paced": 1.0, "failover": 1.0}
FACE_VALUE = 5000


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"load average: {loadavg()}"


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), nearest rank; None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


# ==========================================================================
# Worker processes: the callers (HTTP), the in-process service, raw SQL.
# Everything below runs in a spawned interpreter; project modules are
# imported inside the functions.


def _sleep_until(t: float) -> None:
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


def _accounts() -> list[str]:
    from marketing_iface.standin import SAMPLE_ACCOUNTS

    return [a.account_no for a in SAMPLE_ACCOUNTS]


class _Recorder:
    """One caller's timings: per recharge (start, quote answered, end, ok, retries, why) and per request."""

    def __init__(self, keep_requests: bool) -> None:
        self.recharges: list[tuple[float, float, float, bool, int, str]] = []
        self.requests: list[tuple[float, float, bool]] = []
        # Every round of the client (one request, failover and back-off included): start, length,
        # None if answered, else whether the last word was "busy".
        self.rounds: list[tuple[float, float, bool | None]] = []
        self.keep_requests = keep_requests
        self.exhausted_at: float | None = None
        self.step: Any = None


def _run_threads(spec: dict[str, Any], make_caller: Any) -> dict[str, Any]:
    """Start one thread per card list in ``spec["lists"]``, each looping until the stop time or its last card."""
    stop_at = spec["stop_at"]
    recorders = [_Recorder(spec.get("keep_requests", False)) for _ in spec["lists"]]
    ready = threading.Barrier(len(spec["lists"]) + 1)

    def work(i: int, cards: list[list[str]]) -> None:
        rec = recorders[i]
        step = make_caller(i, rec)
        rec.step = step  # its connections stay open until the parent has sampled the backends' CPU
        ready.wait()
        _sleep_until(spec["start_at"])
        for n, (serial, pin, call_id, account, caller) in enumerate(cards):
            if time.monotonic() >= stop_at:
                return
            step(serial, pin, call_id, account, caller, n)
        rec.exhausted_at = time.monotonic()

    threads = [threading.Thread(target=work, args=(i, c), daemon=True) for i, c in enumerate(spec["lists"])]
    for t in threads:
        t.start()
    ready.wait()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    _sleep_until(spec["start_at"])
    for t in threads:
        t.join()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    # keep the connections open until the parent has read the PostgreSQL backends' CPU at the stop time
    _sleep_until(spec["stop_at"] + 0.5)
    return {
        "cpu": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
        "recharges": [r for rec in recorders for r in rec.recharges],
        "requests": [rec.requests for rec in recorders],
        "rounds": [r for rec in recorders for r in rec.rounds],
        "exhausted": [rec.exhausted_at for rec in recorders if rec.exhausted_at is not None],
    }


def worker_http(spec: dict[str, Any]) -> dict[str, Any]:
    """Callers: threads with ``RechargeClient``; a step answered ``service_unavailable`` is repeated (idempotent)."""
    import logging

    from ivr.client import RechargeClient, tls_context

    logging.getLogger("ivr.client").setLevel(logging.CRITICAL)  # failover runs would print thousands of lines
    key = bytes.fromhex(spec["api_key"])
    tls = tls_context(spec["ca_file"])
    retries = spec["retries"]

    def make_caller(i: int, rec: _Recorder) -> Any:
        client = RechargeClient(
            [tuple(s) for s in spec["servers"][i]], key, timeout=spec["timeout"], total_timeout=spec["total_timeout"],
            tls=tls,
        )
        # A call's first request (the account look-up, not measured here) opens its connection to the
        # server it prefers: so does each caller before the phase starts, so that a paced phase's few
        # recharges per caller are not charged a TLS handshake a real call pays earlier.
        client.health()

        def ask(f: Any, **kw: Any) -> tuple[dict[str, Any], int]:
            tries = 0
            while True:
                t0 = time.monotonic()
                answer = f(**kw)
                t1 = time.monotonic()
                good = answer.get("outcome") != "service_unavailable"
                rec.rounds.append((t0, t1 - t0, answer.get("error") == "busy" if not good else None))
                if rec.keep_requests:
                    rec.requests.append((t0, t1, good))
                if good or tries >= retries:
                    return answer, tries
                tries += 1

        think = spec.get("think", 0.0)
        rng = random.Random(i)

        def pause() -> float | None:
            """A caller's pause before a step (paced phase): its length, or ``None`` if the run ends first."""
            if not think:
                return 0.0
            d = rng.expovariate(1.0 / think)
            if time.monotonic() + d >= spec["stop_at"]:
                # Not a burst of every caller at the stop time: the step is simply not taken.
                _sleep_until(spec["stop_at"])
                return None
            time.sleep(d)
            return d

        def hang_up(answer: dict[str, Any]) -> None:
            """Told "service unavailable": the dialog plays its prompt and says goodbye before this line calls again."""
            if answer.get("outcome") == "service_unavailable" and spec["refused_pause"]:
                _sleep_until(min(spec["stop_at"], time.monotonic() + spec["refused_pause"]))

        def step(serial: str, pin: str, call_id: str, account: str, caller: str, _n: int) -> None:
            if pause() is None:
                return
            t0 = time.monotonic()
            q, r1 = ask(client.quote, call_id=call_id, seq=1, account_no=account, pin=pin, caller=caller)
            t1 = time.monotonic()
            if q.get("outcome") != "ok":
                rec.recharges.append((t0, t1, t1, False, r1, "quote:" + str(q.get("error") or q.get("outcome"))))
                hang_up(q)
                return
            # The pause is not the service's time: shift the start so that t2 - t0 is quote + commit.
            waited = pause()
            if waited is None:
                client.cancel(call_id=call_id, seq=1)
                return
            t0, t1 = t0 + waited, t1 + waited
            c, r2 = ask(client.commit, call_id=call_id, seq=1)
            t2 = time.monotonic()
            ok = c.get("outcome") == "ok"
            rec.recharges.append((t0, t1, t2, ok, r1 + r2, "ok" if ok else "commit:" + str(c.get("error") or c.get("outcome"))))
            if not ok:
                hang_up(c)

        return step

    return _run_threads(spec, make_caller)


def worker_service(spec: dict[str, Any]) -> dict[str, Any]:
    """What a server's pool thread runs, called directly: ``RechargeService.quote`` then ``commit``, each with a nonce."""

    from cardmgmt.db import Database
    from cardmgmt.keys import load_keyring
    from cardmgmt.recharge import Policy, RechargeService
    from ivr import protocol
    from marketing_iface.sql import SqlMarketing
    from recharge_server.service import ServerOptions

    db = Database(spec["card_url"], pool_size=ServerOptions().threads, pre_ping=False)  # as a server's
    mkt = SqlMarketing(spec["marketing_url"])
    svc = RechargeService(db, mkt, load_keyring(Path(spec["key_dir"])).pin_key, Policy())
    db.check_schema()

    def make_caller(i: int, rec: _Recorder) -> Any:
        def step(serial: str, pin: str, call_id: str, account: str, caller: str, _n: int) -> None:
            t0 = time.monotonic()
            try:
                q = svc.quote(
                    call_id=call_id, seq=1, account_no=account, pin=pin, caller=caller, nonce=protocol.new_nonce()
                ).to_dict()
                t1 = time.monotonic()
                if q["outcome"] != "ok":
                    rec.recharges.append((t0, t1, t1, False, 0, "quote:" + q["outcome"]))
                    return
                c = svc.commit(call_id=call_id, seq=1, nonce=protocol.new_nonce()).to_dict()
            except Exception as e:  # noqa: BLE001 - counted, like a 5xx
                t = time.monotonic()
                rec.recharges.append((t0, t, t, False, 0, "error:" + type(e).__name__))
                return
            t2 = time.monotonic()
            ok = c["outcome"] == "ok"
            rec.recharges.append((t0, t1, t2, ok, 0, "ok" if ok else "commit:" + c["outcome"]))

        return step

    try:
        return _run_threads(spec, make_caller)
    finally:
        db.dispose()
        mkt.close()


# The statements one recharge makes through the server, as raw SQL (``%s``; ``?`` on SQLite).
# Quote: nonce; recharge-by-key and two pin-failure counts; the account; the card, its hold,
# the quote row.  Commit: nonce; recharge-by-key, the quote, the spend, the serial, the
# recharge row, the quote's state.  Each group is one transaction, as in RechargeService.
SQL = {
    "nonce": "INSERT INTO request_nonces (nonce, seen_at) VALUES (%s, %s)",
    "failures": "SELECT (SELECT count(*) FROM pin_failures WHERE account_no = %s AND at > %s AND cleared_by IS NULL), "
    "(SELECT count(*) FROM pin_failures WHERE caller = %s AND at > %s AND cleared_by IS NULL)",
    "hold": "UPDATE cards SET hold_key = %s, hold_until = %s WHERE cards.pin_hash = %s AND cards.state IN ('issued') "
    "AND (cards.hold_key IS NULL OR cards.hold_key = %s OR cards.hold_until < %s) RETURNING cards.id, cards.serial, "
    "(SELECT face_value FROM batches WHERE batches.id = cards.batch_id), "
    "(SELECT expiry FROM batches WHERE batches.id = cards.batch_id)",
    "quote_upsert": "INSERT INTO recharge_quotes (key, call_id, channel, caller, account_no, card_id, amount, state, "
    "hold_until, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
    "account_no = excluded.account_no, card_id = excluded.card_id, amount = excluded.amount, state = excluded.state, "
    "hold_until = excluded.hold_until, caller = excluded.caller WHERE recharge_quotes.state IN ('cancelled', 'expired') "
    "OR (recharge_quotes.state = 'held' AND recharge_quotes.card_id = excluded.card_id) RETURNING key",
    "take_quote": "UPDATE recharge_quotes SET state = 'committed' WHERE key = %s AND state = 'held' "
    "RETURNING call_id, channel, caller, account_no, card_id, amount",
    "spend": "UPDATE cards SET state = 'redeemed', hold_key = NULL, hold_until = NULL WHERE cards.id = %s "
    "AND cards.state IN ('issued') AND cards.hold_key = %s AND cards.hold_until >= %s RETURNING serial",
    "recharge_ins": "INSERT INTO recharges (key, call_id, channel, caller, card_id, card_serial, account_no, amount, "
    "committed_at, post_status, post_attempts, next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "RETURNING id",
}


def worker_sql(spec: dict[str, Any]) -> dict[str, Any]:
    """The same statements on the bare driver: psycopg (one connection per thread) or sqlite3."""
    import datetime as dt
    import hmac as hmac_
    import secrets

    from cardmgmt.keys import load_keyring
    from cardmgmt.recharge import Policy

    pin_key = load_keyring(Path(spec["key_dir"])).pin_key
    hold = dt.timedelta(seconds=Policy().hold_seconds)
    lockout = dt.timedelta(hours=Policy().lockout_hours)
    pg = spec["backend"] == "postgresql"
    sql = dict(SQL) if pg else {k: v.replace("%s", "?").replace(" FOR UPDATE", "") for k, v in SQL.items()}

    def connect(url: str) -> Any:
        if pg:
            import psycopg

            return psycopg.connect(url)
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
        for pragma in ("foreign_keys=ON", "journal_mode=WAL", "synchronous=NORMAL"):
            conn.execute(f"PRAGMA {pragma}")
        conn.commit()
        return conn

    def ts(t: dt.datetime) -> Any:
        # SQLAlchemy stores SQLite datetimes as text in this form (UTC, no zone)
        return t if pg else t.strftime("%Y-%m-%d %H:%M:%S.%f")

    def make_caller(i: int, rec: _Recorder) -> Any:
        card_db = connect(spec["card_url"])

        def x(conn: Any, name: str, *args: Any) -> Any:
            return conn.execute(sql[name], args)

        def step(serial: str, pin: str, call_id: str, account: str, caller: str, _n: int) -> None:
            key = f"{call_id}#1"
            t0 = time.monotonic()
            now = dt.datetime.now(dt.UTC)
            x(card_db, "nonce", secrets.token_hex(16), ts(now))
            x(card_db, "failures", account, ts(now - lockout), caller, ts(now - lockout)).fetchall()
            digest = hmac_.digest(pin_key, pin.encode("ascii"), "sha256")
            until = now + hold
            held = x(card_db, "hold", key, ts(until), digest, key, ts(now)).fetchall()
            card_id, _serial, face_value, _expiry = held[0]
            x(card_db, "quote_upsert", key, call_id, "hotline", caller, account, card_id, face_value, "held", ts(until),
              ts(now)).fetchall()
            card_db.commit()
            t1 = time.monotonic()
            now = dt.datetime.now(dt.UTC)
            x(card_db, "nonce", secrets.token_hex(16), ts(now))
            quote = x(card_db, "take_quote", key).fetchall()
            spent = x(card_db, "spend", card_id, key, ts(now)).fetchall()
            x(card_db, "recharge_ins", key, call_id, "hotline", caller, card_id, spent[0][0], account, face_value,
              ts(now), "pending", 0, ts(now)).fetchall()
            card_db.commit()
            t2 = time.monotonic()
            ok = len(held) == 1 and len(quote) == 1 and len(spent) == 1
            rec.recharges.append((t0, t1, t2, ok, 0, "ok" if ok else "not spent"))

        return step

    return _run_threads(spec, make_caller)


WORKERS = {"http": worker_http, "service": worker_service, "sql": worker_sql}


def _worker_entry(spec: dict[str, Any], out: Any) -> None:
    # Dozens of caller threads share this interpreter: with the default 5 ms switch interval a thread back
    # from the socket waits for the lock long enough to miss its own deadlines, which no real caller
    # (a process, or a FastAGI thread among few) would.
    sys.setswitchinterval(0.001)
    try:
        out.put(WORKERS[spec["mode"]](spec))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        import traceback

        out.put({"failed": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})


# ==========================================================================
# The parent: installations, servers, phases, measurements.


@dataclass
class Install:
    backend: str
    home: Path
    card_url: str
    marketing_url: str
    key_dir: Path
    cards: list[tuple[str, str]]
    api_key: bytes
    servers: dict[str, Any] = field(default_factory=dict)
    next_card: int = 0

    def take(self, n: int) -> list[tuple[str, str]]:
        got = self.cards[self.next_card : self.next_card + n]
        self.next_card += len(got)
        return got

    @property
    def left(self) -> int:
        return len(self.cards) - self.next_card

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARDS_")}
        env.update(
            CARDS_DATABASE_URL=self.card_url, CARDS_MARKETING_URL=self.marketing_url, CARDS_KEY_DIR=str(self.key_dir),
            PYTHONPATH=str(ROOT),
        )
        return env

    def pg_names(self) -> list[str]:
        if self.backend != "postgresql":
            return []
        return [self.card_url.rsplit("/", 1)[1], self.marketing_url.rsplit("/", 1)[1]]


def install(ws: bl.Workspace, backend: str, n_cards: int) -> Install:
    """A fresh installation with ``n_cards`` issued cards and their PINs (``testkit.lifecycle``'s way)."""
    from cardmgmt.context import Role
    from cardmgmt.db import make_engine, upgrade
    from cardmgmt.keys import load_api_key
    from cardmgmt.system import CardSystem
    from marketing_iface.standin import create_standin
    from testkit.install import PASSWORDS, settings_for
    from testkit.keys import copy_key_dir
    from testkit.lifecycle import Bench, sold_batch

    home = ws.dir / backend
    home.mkdir()
    card_url = ws.new_database(backend, f"{backend}-cards") if backend == "postgresql" else f"sqlite:///{home / 'cards.db'}"
    mkt_url = ws.new_database(backend, f"{backend}-mkt") if backend == "postgresql" else f"sqlite:///{home / 'marketing.db'}"
    engine = make_engine(card_url)
    upgrade(engine)
    engine.dispose()
    create_standin(mkt_url)
    key_dir = copy_key_dir(ws.master_keys(), home / "keys")
    system = CardSystem(settings_for(card_url, key_dir, "alice"))
    try:
        system.initialise("alice", PASSWORDS["alice"])
        bench = Bench(system, home, ws.factory_keys())
        bench.add_operator("bob", Role.FINANCE)
        t0 = time.perf_counter()
        pins = sold_batch(bench, "BR1", n_cards, box_size=100)
        bl.log(f"{backend}: {n_cards:,} cards issued in {time.perf_counter() - t0:.1f} s")
        bench.close_others()
    finally:
        system.close()
    cards = sorted(pins.items())
    random.Random(1).shuffle(cards)
    return Install(backend, home, card_url, mkt_url, key_dir, cards, load_api_key(key_dir))


def start_server(inst: Install, name: str, ports: dict[str, int], shared: bool = False) -> Any:
    """Server ``name`` (A or B, or A2, B2 … with ``--processes-per-server``: more processes on A's or B's port)."""
    from testkit.pair import Server

    host = name[0]
    peer = "B" if host == "A" else "A"
    server = Server(name, ports[host], ports[peer], inst.env(), inst.home / f"server-{name}.log", shared=shared)
    server.start()
    server.wait_ready()
    inst.servers[name] = server
    _wait_healthy(server)
    return server


def _wait_healthy(server: Any, timeout: float = 20) -> None:
    import ssl
    import urllib.request

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            context = ssl.create_default_context(cafile=str(Path(server.env["CARDS_KEY_DIR"]) / "tls-ca.pem"))
            with urllib.request.urlopen(f"https://127.0.0.1:{server.port}/v1/health", timeout=1, context=context) as r:
                if json.loads(r.read()).get("db") == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server {server.name} not healthy")


def stop_servers(inst: Install) -> None:
    for s in inst.servers.values():
        s.stop()
    inst.servers.clear()


# --- measurements around a phase ---------------------------------------------


def pg_backends(pg_admin_url: str, names: list[str]) -> list[int]:
    if not names:
        return []
    import psycopg

    with psycopg.connect(pg_admin_url, autocommit=True) as c:
        return [r[0] for r in c.execute("SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s)", (names,))]


class CpuMeter:
    """CPU of the servers and of the installation's PostgreSQL backends, and of the whole machine, over a window."""

    def __init__(self, pg_admin_url: str, inst: Install) -> None:
        self.pg_admin_url, self.inst = pg_admin_url, inst

    def sample(self) -> dict[str, Any]:
        servers = {n: bl.proc_cpu_seconds(s.proc.pid) for n, s in self.inst.servers.items() if s.alive}
        pg = {pid: bl.proc_cpu_seconds(pid) for pid in pg_backends(self.pg_admin_url, self.inst.pg_names())}
        return {"t": time.monotonic(), "machine": bl.machine_busy_seconds(), "servers": servers, "pg": pg,
                "load": os.getloadavg()[0]}

    @staticmethod
    def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        server = sum((b["servers"][n] or 0) - (a["servers"].get(n) or 0) for n in b["servers"])
        pg = sum((cpu or 0) - (a["pg"].get(pid) or 0) for pid, cpu in b["pg"].items())
        return {"wall": b["t"] - a["t"], "machine": b["machine"] - a["machine"], "server": server, "pg": pg,
                "load0": a["load"], "load1": b["load"]}


PG_LOG = Path("/var/log/postgresql/postgresql-15-main.log")
_CHECKPOINT_LINE = re.compile(r"^(\S+ \S+) UTC \[\d+\] LOG:  checkpoint (starting|complete): (.*)$")


class Tracer:
    """What might stall both servers at once, sampled every ``step`` seconds during a phase (``--trace``).

    Per sample: the wait events of every active PostgreSQL backend (ours and
    everybody else's: WAL flushes, I/O, locks), whether an autovacuum worker
    runs (and on which database), the machine's busy cores, each server
    process's CPU and its number of threads; afterwards the checkpoints the
    server's log shows in the window.  ``summary`` lines these up against
    the slow recharges, in 100 ms buckets.
    """

    def __init__(self, pg_admin_url: str, inst: Install, step: float = 0.05) -> None:
        self.pg_admin_url, self.inst, self.step = pg_admin_url, inst, step
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.wall0 = time.time() - time.monotonic()  # monotonic -> wall clock

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import psycopg

        ours = set(self.inst.pg_names())
        pids = {n: s.proc.pid for n, s in self.inst.servers.items() if s.alive}
        with psycopg.connect(self.pg_admin_url, autocommit=True) as c:
            last_machine, last_t = bl.machine_busy_seconds(), time.monotonic()
            last_srv = {n: bl.proc_cpu_seconds(p) or 0.0 for n, p in pids.items()}
            while not self._stop.wait(self.step):
                rows = c.execute(
                    "SELECT datname, backend_type, state, wait_event_type, wait_event, "
                    "CASE WHEN query ILIKE 'DELETE FROM request_nonces%%' THEN 'nonce prune' "
                    "WHEN query ILIKE '%%post_status%%' THEN 'outbox' ELSE '' END "
                    "FROM pg_stat_activity WHERE pid <> pg_backend_pid()").fetchall()
                t = time.monotonic()
                machine = bl.machine_busy_seconds()
                srv = {n: bl.proc_cpu_seconds(p) or 0.0 for n, p in pids.items()}
                waits: Counter[str] = Counter()
                other_active = 0
                autovac = []
                jobs: set[str] = set()
                for datname, btype, state, wtype, wevent, job in rows:
                    if btype == "autovacuum worker":
                        autovac.append(f"{datname}{'*' if datname in ours else ''}")
                    if btype == "client backend" and state == "active":
                        if datname in ours and job:
                            jobs.add(job)
                        if datname in ours:
                            waits[f"{wtype}:{wevent}" if wtype else "cpu"] += 1
                        else:
                            other_active += 1
                    if btype in ("checkpointer", "walwriter", "background writer") and wtype and wevent and \
                            wtype not in ("Activity",):
                        waits[f"{btype}:{wtype}:{wevent}"] += 1
                dt_ = t - last_t
                self.samples.append({
                    "t": t, "waits": dict(waits), "autovacuum": autovac, "jobs": sorted(jobs), "other_active": other_active,
                    "machine": (machine - last_machine) / dt_ if dt_ > 0 else 0.0,
                    "servers": {n: (srv[n] - last_srv.get(n, 0.0)) / dt_ if dt_ > 0 else 0.0 for n in srv},
                })
                last_machine, last_t, last_srv = machine, t, srv

    def checkpoints(self, t0: float, t1: float) -> list[tuple[float, str, str]]:
        """(monotonic time, starting|complete, detail) of the checkpoints logged between t0 and t1."""
        import datetime as dt

        out = []
        try:
            lines = PG_LOG.read_text(errors="replace").splitlines()[-5000:]
        except OSError:
            return out
        for line in lines:
            m = _CHECKPOINT_LINE.match(line)
            if not m:
                continue
            wall = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=dt.UTC).timestamp()
            t = wall - self.wall0
            if t0 - 1 <= t <= t1 + 1:
                out.append((t, m.group(2), m.group(3)[:120]))
        return out

    def stalls(self, t0: float, t1: float, what: str, title: str) -> str:
        """How often, and how long at most, the servers logged ``what`` (a GC pause, a late reactor) in the window."""
        import datetime as dt

        out = []
        for name, server in sorted(self.inst.servers.items()):
            stalls = []
            try:
                text = server.log.read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                if what not in line:
                    continue
                wall = dt.datetime.strptime(line[:24], "%Y-%m-%dT%H:%M:%S%z").timestamp()
                if t0 - 1 <= wall - self.wall0 <= t1 + 1:
                    m = re.search(r"ms=([0-9.]+)", line)
                    stalls.append(float(m.group(1)) if m else 0.0)
            out.append(f"{name} {len(stalls)}"
                       + (f" (longest {max(stalls):.1f} ms, {sum(stalls) / 1000:.1f} s in all)" if stalls else ""))
        return f"{title} logged by the servers in the window: " + ", ".join(out)

    def summary(self, recs: list[tuple[float, float, float, bool, int, str]], t0: float, t1: float,
                slow_ms: float = 50.0) -> str:
        """The 100 ms buckets with slow recharges (by their end), with what the samples saw then and just before."""
        bucket = 0.1
        slow: Counter[int] = Counter()
        total: Counter[int] = Counter()
        for r in recs:
            if r[3] and t0 <= r[2] <= t1:
                b = int((r[2] - t0) / bucket)
                total[b] += 1
                if (r[2] - r[0]) * 1000 > slow_ms:
                    slow[b] += 1
        cps = self.checkpoints(t0, t1)
        cp_spans = []
        start = None
        for t, kind, _ in cps:
            if kind == "starting":
                start = t
            elif start is not None:
                cp_spans.append((start, t))
                start = None

        def near(b: int) -> dict[str, Any]:
            lo, hi = t0 + (b - 2) * bucket, t0 + (b + 1) * bucket  # the bucket and the 200 ms before it
            ss = [x for x in self.samples if lo <= x["t"] < hi]
            waits: Counter[str] = Counter()
            for x in ss:
                waits.update(x["waits"])
            return {
                "machine": max((x["machine"] for x in ss), default=0.0),
                "servers": "/".join(f"{max((x['servers'].get(n, 0.0) for x in ss), default=0.0):.2f}"
                                    for n in sorted(self.inst.servers)),
                "waits": ", ".join(f"{k} {v}" for k, v in waits.most_common(4) if k != "cpu"),
                "cpu": waits.get("cpu", 0),
                "autovacuum": sorted({a for x in ss for a in x["autovacuum"]}),
                "jobs": sorted({j for x in ss for j in x["jobs"]}),
                "other_active": max((x["other_active"] for x in ss), default=0),
                "checkpoint": any(a - 0.2 <= lo + 0.2 and hi <= b_ + 0.3 for a, b_ in cp_spans)
                or any(lo - 0.3 <= t <= hi for t, _, _ in cps),
            }

        lines = [f"{len(cps)} checkpoint log lines in the window: "
                 + "; ".join(f"{t - t0:+.2f}s {k}" + (f" ({d})" if k == "complete" else "") for t, k, d in cps)]
        n_slow = sum(slow.values())
        worst = sorted(slow, key=lambda b: -slow[b])[:12]
        lines.append(f"{n_slow} recharges over {slow_ms:g} ms in {len(slow)} of {len(total)} buckets of 100 ms; "
                     "the worst (time into the window: slow/all, machine busy cores max, server CPU max A/B, "
                     "our backends' waits, active, autovacuum, other databases' active backends, checkpoint, "
                     "the leader's jobs seen in the database):")
        for b in sorted(worst):
            n = near(b)
            lines.append(f"  {b * bucket:5.1f}s {slow[b]}/{total[b]}  machine {n['machine']:.2f}  servers {n['servers']}  "
                         f"waits [{n['waits']}] active-on-cpu {n['cpu']}  autovacuum {n['autovacuum'] or '-'}  "
                         f"others {n['other_active']}  checkpoint {'yes' if n['checkpoint'] else 'no'}  "
                         f"jobs {','.join(n['jobs']) or '-'}")
        # How much of the slowness the suspects cover: slow recharges in buckets where each was seen.
        cover: Counter[str] = Counter()
        buckets_with: Counter[str] = Counter()
        for b in total:
            n = near(b)
            flags = {"checkpoint": n["checkpoint"], "autovacuum": bool(n["autovacuum"]),
                     "WAL wait": "WAL" in n["waits"], "machine ≥ 1.9 cores": n["machine"] >= 1.9,
                     "other databases busy": n["other_active"] > 0,
                     "nonce prune": "nonce prune" in n["jobs"], "outbox": "outbox" in n["jobs"]}
            for k, v in flags.items():
                if v:
                    cover[k] += slow[b]
                    buckets_with[k] += 1
        lines.append(self.stalls(t0, t1, "gc pause", "garbage-collection pauses ≥ 5 ms"))
        lines.append(self.stalls(t0, t1, "reactor late", "reactor timers ≥ 50 ms late"))
        lines.append("slow recharges in buckets where each suspect was seen (share of all slow; share of buckets): "
                     + "; ".join(f"{k} {cover[k] / n_slow if n_slow else 0:.0%} ({buckets_with[k] / len(total) if total else 0:.0%})"
                                 for k in ("checkpoint", "autovacuum", "WAL wait", "machine ≥ 1.9 cores",
                                           "other databases busy", "nonce prune", "outbox")))
        return "\n".join(lines)


def outbox_pending(inst: Install) -> int:
    from sqlalchemy import func, select

    from cardmgmt.db import make_engine
    from cardmgmt.models import Recharge

    engine = make_engine(inst.card_url)
    try:
        with engine.connect() as c:
            return c.execute(select(func.count()).select_from(Recharge).where(Recharge.post_status == "pending")).scalar_one()
    finally:
        engine.dispose()


def recharges_with_prefix(inst: Install, prefix: str) -> int:
    from sqlalchemy import func, select

    from cardmgmt.db import make_engine
    from cardmgmt.models import Recharge

    engine = make_engine(inst.card_url)
    try:
        with engine.connect() as c:
            return c.execute(select(func.count()).select_from(Recharge).where(Recharge.key.like(prefix + "%"))).scalar_one()
    finally:
        engine.dispose()


def wait_outbox(inst: Install, limit: float) -> int:
    """Let the leader post the previous phase's recharges first, so no phase pays for the one before."""
    if not inst.servers:
        return outbox_pending(inst)
    end = time.monotonic() + limit
    while True:
        n = outbox_pending(inst)
        if n == 0 or time.monotonic() > end:
            return n
        time.sleep(1)


def wait_servers_idle(inst: Install, limit: float) -> float:
    """Wait until the servers have worked off requests their callers gave up on (after an overload, they go on
    for a while); returns the CPU share they still used at the end."""
    end = time.monotonic() + limit
    while True:
        before = {n: bl.proc_cpu_seconds(s.proc.pid) or 0 for n, s in inst.servers.items() if s.alive}
        time.sleep(1)
        used = sum((bl.proc_cpu_seconds(s.proc.pid) or 0) - before.get(n, 0) for n, s in inst.servers.items() if s.alive)
        if used < 0.15 or time.monotonic() > end:
            return used


# --- one phase ------------------------------------------------------------------


@dataclass
class Phase:
    kind: str  # sql | service | single | pair | paced | failover
    clients: int
    label: str
    rate: float = 0.0  # paced: recharges per second offered


def run_phase(args: argparse.Namespace, inst: Install, phase: Phase, cards: list[tuple[str, str]],
              meter: CpuMeter, profile_out: Path | None = None) -> dict[str, Any]:
    """Run one phase's workers; returns the raw results and the measurements around them."""
    accounts = _accounts()
    n = phase.clients
    prefix = f"{inst.backend[:2]}-{phase.label}-"
    jobs = [
        [s, p, f"{prefix}{i}", accounts[i % len(accounts)], f"139{i:08d}"] for i, (s, p) in enumerate(cards)
    ]
    lists = [jobs[i::n] for i in range(n)]
    per_proc = args.callers_per_proc
    procs = 1 if phase.kind in ("sql", "service") else max(1, min(max(args.client_procs, -(-n // per_proc)), n))
    ports = {name: s.port for name, s in inst.servers.items()}
    a = ("127.0.0.1", ports.get("A", 0))
    b = ("127.0.0.1", ports.get("B", 0))
    if phase.kind == "single":
        order = [[a] for _ in range(n)]
    elif phase.kind in ("pair", "paced"):
        order = [[a, b] if i % 2 == 0 else [b, a] for i in range(n)]
    else:  # failover: everybody prefers A
        order = [[a, b] for _ in range(n)]
    failover = phase.kind == "failover"
    duration = args.failover_duration if failover else args.duration
    setup = 3.0 + n / 100 + (2.0 if phase.kind in ("sql", "service") else 0.0)
    start_at = time.monotonic() + setup
    stop_at = start_at + args.warmup + duration
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    workers = []
    for w in range(procs):
        idx = list(range(w, n, procs))
        spec = {
            "mode": "http" if phase.kind in ("single", "pair", "paced", "failover") else phase.kind,
            "think": n / phase.rate / 2 if phase.kind == "paced" else 0.0,
            "lists": [lists[i] for i in idx],
            "servers": [order[i] for i in idx],
            "api_key": inst.api_key.hex(),
            "ca_file": str(inst.key_dir / "tls-ca.pem"),
            "timeout": args.client_timeout,
            "total_timeout": args.client_total_timeout,
            "retries": args.retries,
            "refused_pause": args.refused_pause,
            "start_at": start_at,
            "stop_at": stop_at,
            "keep_requests": failover,
            "backend": inst.backend,
            "card_url": inst.card_url,
            "marketing_url": inst.marketing_url,
            "key_dir": str(inst.key_dir),
        }
        p = ctx.Process(target=_worker_entry, args=(spec, out), daemon=True)
        p.start()
        workers.append(p)
    _sleep_until(start_at + args.warmup)
    tracer = Tracer(args.pg_url, inst) if args.trace and inst.backend == "postgresql" else None
    if tracer is not None:
        tracer.start()
    before = meter.sample()
    spy = None
    if profile_out is not None and "A" in inst.servers:
        spy = start_profile(inst.servers["A"].proc.pid, profile_out, duration)
    kill_at = None
    if failover:
        _sleep_until(start_at + args.warmup + args.kill_after)
        kill_at = time.monotonic()
        for name in sorted(n for n in inst.servers if n.startswith("A")):
            inst.servers[name].kill()
            bl.log(f"  SIGKILLed server {name} (pid {inst.servers[name].proc.pid})")
    _sleep_until(stop_at)
    after = meter.sample()
    if tracer is not None:
        tracer.stop()
    results = []
    for _ in workers:
        r = out.get(timeout=120 + n)
        if "failed" in r:
            for p in workers:
                p.kill()
            raise RuntimeError(f"a {phase.kind} worker failed: {r['failed']}\n{r['traceback']}")
        results.append(r)
    for p in workers:
        p.join(30)
    if spy is not None:
        spy.wait(60)
    recorded = recharges_with_prefix(inst, prefix)
    trace = None
    if tracer is not None:
        recs = [r for res in results for r in res["recharges"]]
        trace = tracer.summary(recs, start_at + args.warmup, stop_at)
        print(f"\n--- trace, {phase.label} ---\n{trace}\n", flush=True)
    return {
        "trace": trace,
        "results": results, "t0": start_at + args.warmup, "stop": stop_at, "kill_at": kill_at, "cpu": CpuMeter.delta(before, after),
        "procs": procs, "recorded": recorded,
        # A round may overrun its deadline by one socket wait's rounding; more is a caller left waiting.
        "round_limit": args.client_total_timeout + 0.1, "burner": args.cpu_burner,
    }


def summarise_phase(inst: Install, phase: Phase, raw: dict[str, Any], n_cards: int) -> dict[str, Any]:
    recs = [r for res in raw["results"] for r in res["recharges"]]
    exhausted = [t for res in raw["results"] for t in res["exhausted"]]
    t0 = raw["t0"]
    t_end = min([raw["stop"], *exhausted])
    window = t_end - t0
    in_window = [r for r in recs if r[0] >= t0 and r[2] <= t_end]
    ok = [r for r in in_window if r[3]]
    fails = Counter(r[5] for r in in_window if not r[3])
    total_ms = [(r[2] - r[0]) * 1000 for r in ok]
    commit_ms = [(r[2] - r[1]) * 1000 for r in ok]
    quote_ms = [(r[1] - r[0]) * 1000 for r in ok]
    rounds = [r for res in raw["results"] for r in res.get("rounds", []) if t0 <= r[0] <= t_end]
    late = [r for r in rounds if r[1] > raw["round_limit"]]
    cpu = raw["cpu"]
    m0, m1 = t0, t0 + cpu["wall"]
    done_in_meter = sum(1 for r in recs if r[3] and m0 <= r[2] <= m1)
    all_ok = sum(1 for r in recs if r[3])
    direct = phase.kind in ("sql", "service")
    # The worker processes' CPU covers every recharge they made (warm-up included): per recharge over all of them.
    # In the direct phases the worker *is* the server, so its CPU is reported as server CPU.
    worker_cpu = sum(res["cpu"] for res in raw["results"])
    per_worker = worker_cpu * 1000 / all_ok if all_ok >= 10 else None
    per = (lambda x: x * 1000 / done_in_meter) if done_in_meter >= 10 else (lambda x: None)
    out = {
        "backend": inst.backend, "kind": phase.kind, "clients": phase.clients, "rate": phase.rate, "procs": raw["procs"], "cards": n_cards,
        "per_server": sum(1 for n in inst.servers if n.startswith("A")),
        "window": window, "committed": len(ok), "rps": len(ok) / window if window > 0 else 0.0,
        "failed": sum(fails.values()), "fail_reasons": dict(fails), "retries": sum(r[4] for r in in_window),
        "p50": pct(total_ms, 50), "p99": pct(total_ms, 99), "max": max(total_ms) if total_ms else None,
        "commit_p50": pct(commit_ms, 50), "commit_p99": pct(commit_ms, 99), "quote_p99": pct(quote_ms, 99),
        "worker_cpu": worker_cpu, "server_cpu": cpu["server"], "pg_cpu": cpu["pg"], "machine_cpu": cpu["machine"],
        "cpu_wall": cpu["wall"], "load0": cpu["load0"], "load1": cpu["load1"],
        "told_ok": all_ok, "recorded": raw["recorded"], "done_in_meter": done_in_meter,
        "rounds": len(rounds), "rounds_busy": sum(1 for r in rounds if r[2] is True),
        "rounds_unavailable": sum(1 for r in rounds if r[2] is False),
        "round_max": max((r[1] for r in rounds), default=None), "rounds_late": len(late),
        "round_limit": raw["round_limit"], "burner": raw.get("burner", False),
        "ms_client": None if direct else per_worker,
        "ms_server": per_worker if direct else per(cpu["server"]),
        "ms_pg": per(cpu["pg"]),
        "ms_machine": per(cpu["machine"]),
    }
    ours = cpu["server"] + cpu["pg"] + (per_worker or 0) * done_in_meter / 1000
    out["other_cpu"] = max(0.0, cpu["machine"] - ours)
    if raw["kill_at"] is not None:
        out.update(failover_figures(raw))
    return out


def failover_figures(raw: dict[str, Any]) -> dict[str, Any]:
    """Per caller: kill -> first successful answer; and the longest single request around the kill."""
    kill = raw["kill_at"]
    waits, longest, unanswered = [], [], 0
    debug: list[Any] = []
    for res in raw["results"]:
        for reqs in res["requests"]:
            after = [t1 for (t0_, t1, good) in reqs if good and t1 >= kill]
            if after:
                waits.append(min(after) - kill)
            else:
                unanswered += 1
                debug.append([(round(a - kill, 3), round(b - kill, 3), g) for (a, b, g) in reqs[-3:]])
            spanning = [t1 - t0_ for (t0_, t1, _g) in reqs if t1 >= kill and t0_ <= kill + 5.0]
            if spanning:
                longest.append(max(spanning))
    bad = sum(1 for res in raw["results"] for reqs in res["requests"] for (t0_, t1, good) in reqs if not good and t1 >= kill)
    return {
        "fo_wait_max": max(waits) if waits else None, "fo_wait_p99": pct(waits, 99), "fo_wait_p50": pct(waits, 50),
        "fo_longest_request": max(longest) if longest else None, "fo_unanswered_callers": unanswered,
        "fo_unavailable_answers": bad, "fo_unanswered_last_requests": debug[:5],
    }


# --- profiling -----------------------------------------------------------------------


class Spies:
    """Two py-spy recorders on one server: ``--gil`` (where its CPU goes) and all threads (where they wait)."""

    def __init__(self, pid: int, out: Path, duration: float) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.procs: list[subprocess.Popen[bytes]] = []
        if not Path(spy).exists():
            bl.log("py-spy not found (pip install py-spy into the venv); no profile")
            return
        for suffix, extra in (("gil", ["--gil"]), ("threads", [])):
            cmd = [spy, "record", "-p", str(pid), "-d", str(max(1, int(duration))), "-r", "100", "--format", "raw",
                   "-o", str(out.with_suffix(f".{suffix}.txt")), "--nonblocking", *extra]
            bl.log("  profiling: " + " ".join(cmd))
            self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def wait(self, timeout: float) -> None:
        for p in self.procs:
            p.wait(timeout)


def start_profile(pid: int, out: Path, duration: float) -> Spies:
    return Spies(pid, out, duration)


# What each sampled stack is charged to, first match from the innermost frame outward
# (py-spy's raw format: "frame;frame;... count", outermost first).
CATEGORIES = [
    ("signature check (protocol.verify/HMAC)", re.compile(r"\bverify \(ivr/protocol\.py")),
    ("nonce insert (nonces.record)", re.compile(r"\brecord \(cardmgmt/nonces\.py")),
    ("marketing account look-up", re.compile(r"\blookup_account \(marketing_iface/sql\.py")),
    ("quote (RechargeService.quote, rest)", re.compile(r"\bquote \(cardmgmt/recharge\.py")),
    ("commit (RechargeService.commit)", re.compile(r"\bcommit \(cardmgmt/recharge\.py")),
    ("outbox drain job", re.compile(r"\bdrain \(marketing_iface/outbox\.py")),
    ("lease/heartbeat", re.compile(r"recharge_server/leadership\.py")),
    ("expire-holds / prune jobs", re.compile(r"\b(expire_holds|prune) \(")),
    ("HTTP parsing & answering (twisted.web, reactor)", re.compile(r"twisted/(web|internet)/")),
    ("JSON / validation (api._post)", re.compile(r"\b_post \(recharge_server/api\.py")),
    ("thread pool idle (waiting for work)", re.compile(r"twisted/python/threadpool\.py|_threadpool|queue\.py")),
]


def analyse_profile(path: Path) -> str:
    """Charge each sampled stack to the first category that matches (outermost-first order of CATEGORIES)."""
    if not path.exists():
        return "(no profile written)"
    totals: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    sql_wait: Counter[str] = Counter()
    all_samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        all_samples += c
        frames = stack.split(";")
        name = "other"
        for label, rx in CATEGORIES:
            if any(rx.search(f) for f in frames):
                name = label
                break
        totals[name] += c
        leaf[_short(frames[-1])] += c
        if any("psycopg" in f or "sqlite" in f for f in frames):
            sql_wait["inside the DB driver (psycopg/sqlite3 frames)"] += c
        if any("sqlalchemy/" in f for f in frames) and not any("psycopg" in f for f in frames[-3:]):
            sql_wait["SQLAlchemy Python (ORM/Core, not in the driver)"] += c
        if any("pool/" in f and "sqlalchemy" in f for f in frames):
            sql_wait["SQLAlchemy pool (checkout, pre-ping, return)"] += c
    if not all_samples:
        return "(empty profile)"
    lines = [f"{all_samples} samples", ""]
    lines += [f"- {k}: {v * 100 / all_samples:.1f} %" for k, v in totals.most_common()]
    lines += [""] + [f"- {k}: {v * 100 / all_samples:.1f} %" for k, v in sql_wait.most_common()]
    lines += ["", "hottest leaf frames:"] + [f"- {k}: {v * 100 / all_samples:.1f} %" for k, v in leaf.most_common(12)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    return re.sub(r"\s*\((?:.*/)?(site-packages/)?", " (", frame)


# --- orchestration ----------------------------------------------------------------


def plan(args: argparse.Namespace) -> list[Phase]:
    phases = []
    for kind in args.phases:
        if kind == "sql":
            levels = sorted({min(c, args.sql_max_conns) for c in args.clients})
        elif kind == "failover":
            levels = [c for c in args.clients if c > 1] or args.clients
        elif kind == "paced":
            for rate in args.paced_rates:
                phases.append(Phase(kind, max(args.clients), f"paced{max(args.clients)}at{rate:g}", rate))
            continue
        else:
            levels = args.clients
        for c in levels:
            phases.append(Phase(kind, c, f"{kind}{c}"))
    return phases


BURNER = "import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end:\n    pass\n"


def start_burner(limit: float) -> subprocess.Popen[bytes]:
    """One process spinning on one core for at most ``limit`` seconds (stopped sooner by ``stop_burner``)."""
    return subprocess.Popen([sys.executable, "-c", BURNER.format(limit=limit)])


def stop_burner(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def run_backend(args: argparse.Namespace, ws: bl.Workspace, backend: str) -> list[dict[str, Any]]:
    bl.log(f"{backend}: setting up ({args.cards:,} cards)")
    inst = install(ws, backend, args.cards)
    burner = None
    meter = CpuMeter(args.pg_url, inst)
    phases = plan(args)
    from testkit.ports import free_tcp_port

    ports = {"A": free_tcp_port(), "B": free_tcp_port()}
    rows: list[dict[str, Any]] = []
    try:
        for i, phase in enumerate(phases):
            hosts = {"sql": set(), "service": set(), "single": {"A"}, "pair": {"A", "B"}, "paced": {"A", "B"},
                     "failover": {"A", "B"}}[phase.kind]
            per_host = args.processes_per_server
            want_servers = {host + (str(k) if k > 1 else "") for host in hosts for k in range(1, per_host + 1)}
            for name in sorted(set(inst.servers) - want_servers):
                inst.servers.pop(name).stop()
            for name in sorted(want_servers - set(inst.servers)):
                start_server(inst, name, ports, shared=per_host > 1)
            if phase.kind == "failover":
                time.sleep(2)  # both see each other; the lease settles
            busy = wait_servers_idle(inst, args.outbox_wait)
            if busy >= 0.15:
                bl.log(f"{backend}: the servers are still busy ({busy:.2f} cores) after {args.outbox_wait:g} s")
            pending = wait_outbox(inst, args.outbox_wait)
            ws.checkpoint(backend)
            stop_burner(burner)
            if args.quiet_wait > 0:
                bl.wait_for_quiet(args.quiet_wait)
            if args.cpu_burner:
                # Started after the wait for quiet (which it would defeat), bounded in case this process dies.
                burner = start_burner(args.duration + args.warmup + 60 + phase.clients / 10)
                bl.log(f"  CPU burner started (pid {burner.pid}): one core busy")
            weights = [WEIGHT[p.kind] for p in phases[i:]]
            n_cards = int(inst.left * weights[0] / sum(weights))
            cards = inst.take(n_cards)
            bl.log(f"{backend}: phase {phase.kind} with {phase.clients} callers, {len(cards):,} cards, load {loadavg()}"
                   + (f", outbox still {pending} pending" if pending else ""))
            prof = None
            if args.profile and phase.kind in ("single", "pair", "paced") and phase.clients == max(args.clients):
                prof = ws.dir / f"profile-{backend}-{phase.label}.txt"
            raw = run_phase(args, inst, phase, cards, meter, prof)
            row = summarise_phase(inst, phase, raw, len(cards))
            row["outbox_before"] = pending
            row["trace"] = raw.get("trace")
            if prof is not None:
                row["profile"] = (
                    "CPU (py-spy --gil: the thread holding the GIL, i.e. the server's Python CPU):\n"
                    + analyse_profile(prof.with_suffix(".gil.txt"))
                    + "\n\nAll threads (py-spy, non-idle threads: where the 16 pool threads and the reactor spend wall time):\n"
                    + analyse_profile(prof.with_suffix(".threads.txt"))
                )
                print(f"\n--- profile of server A, {backend} {phase.label} ---\n{row['profile']}\n", flush=True)
            rows.append(row)
            bl.log(f"  {row['rps']:.0f} recharges/s, p50 {bl.fmt(row['p50'])} ms, p99 {bl.fmt(row['p99'])} ms, "
                   f"commit p99 {bl.fmt(row['commit_p99'])} ms, failed {row['failed']} {row['fail_reasons'] or ''}, "
                   f"window {row['window']:.1f} s, load {row['load0']:.2f}->{row['load1']:.2f}"
                   + (f", failover wait max {bl.fmt(row.get('fo_wait_max'), 3)} s" if phase.kind == "failover" else ""))
            if row["recorded"] != row["told_ok"]:
                bl.log(f"  NOTE: callers were told ok {row['told_ok']} times, the database holds {row['recorded']} recharges "
                       "for this phase (a commit done but its answer lost, or the reverse)")
            stop_burner(burner)
            burner = None
            if phase.kind == "failover":
                for name in sorted(n for n in inst.servers if n.startswith("A")):
                    inst.servers.pop(name).stop()
    finally:
        stop_burner(burner)
        stop_servers(inst)
        if not args.keep:
            _drop(ws, inst)
    return rows


# --- reporting -------------------------------------------------------------------------

def kind_label(r: dict[str, Any]) -> str:
    """The setup column: the phase's kind, its offered rate, and the processes per server when more than one."""
    per = r.get("per_server", 1)
    return (KIND_LABEL[r["kind"]] + (f", {r['rate']:g} rec/s offered" if r["kind"] == "paced" else "")
            + (f", {per} processes per server" if per > 1 else ""))


KIND_LABEL = {
    "sql": "direct: raw SQL",
    "service": "direct: RechargeService",
    "single": "HTTP: server A alone",
    "pair": "HTTP: pair, half prefer A, half B",
    "paced": "HTTP: pair, callers pausing between steps",
    "failover": "HTTP: pair, all prefer A, A SIGKILLed",
}


# Overload (issue 12): the goodput target holds up to this multiple of the pair's capacity.
OVERLOAD_UP_TO = 4
CAPACITY_SHARE = 0.95  # capacity: the fewest callers reaching this share of the peak rate


def capacity_callers(pairs: list[dict[str, Any]]) -> int:
    """The fewest closed-loop callers whose rate reached ``CAPACITY_SHARE`` of the peak: the pair's capacity."""
    peak = max(r["rps"] for r in pairs)
    return min(r["clients"] for r in pairs if r["rps"] >= CAPACITY_SHARE * peak)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    f = bl.fmt
    headers = ["backend", "setup", "callers", "rec/s", "p50 ms", "p99 ms", "commit p50", "commit p99", "failed",
               "retries", "client CPU ms/rec", "server CPU ms/rec", "PG CPU ms/rec", "machine CPU ms/rec",
               "other CPU cores", "load 1m"]
    body = []
    rows = sorted(rows, key=lambda r: (r["backend"], SHOWN.index(r["kind"]), r["clients"], r["rate"]))
    for r in rows:
        other = r["other_cpu"] / r["cpu_wall"] if r["cpu_wall"] else None
        body.append([
            r["backend"], kind_label(r),
            str(r["clients"]), f(r["rps"], 0), f(r["p50"]), f(r["p99"]),
            f(r["commit_p50"]), f(r["commit_p99"]), str(r["failed"]) + (f" ({_reasons(r)})" if r["failed"] else ""),
            str(r["retries"]), f(r.get("ms_client"), 2), f(r.get("ms_server"), 2),
            f(r.get("ms_pg"), 2) if r["backend"] == "postgresql" else "n/a", f(r.get("ms_machine"), 2),
            f(other, 2), f"{r['load0']:.2f}→{r['load1']:.2f}",
        ])
    parts = [bl.markdown_table(headers, body)]

    # server / direct
    ratio_rows = []
    by = {(r["backend"], r["kind"], r["clients"]): r for r in rows}
    for (backend, kind, n), r in sorted(by.items()):
        if kind not in ("single", "pair"):
            continue
        svc = by.get((backend, "service", n))
        sql_best = max((x["rps"] for x in rows if x["backend"] == backend and x["kind"] == "sql"), default=None)
        ratio_rows.append([
            backend, kind_label(r), str(n), f(r["rps"], 0),
            f(svc["rps"], 0) if svc else "n/a", f(r["rps"] / svc["rps"], 2) if svc and svc["rps"] else "n/a",
            f(sql_best, 0) if sql_best else "n/a", f(r["rps"] / sql_best, 2) if sql_best else "n/a",
        ])
    if ratio_rows:
        parts.append(bl.markdown_table(
            ["backend", "setup", "callers", "server rec/s", "direct service rec/s (same N)", "server/direct",
             "raw SQL best rec/s", "server/raw SQL"], ratio_rows))

    fo = [r for r in rows if r["kind"] == "failover"]
    if fo:
        parts.append(bl.markdown_table(
            ["backend", "callers", "kill→first good answer p50 s", "p99 s", "max s", "longest single request s",
             "service_unavailable answers after kill", "callers never answered", "rec/s (whole run)", "load 1m"],
            [[r["backend"], str(r["clients"]), f(r["fo_wait_p50"], 3), f(r["fo_wait_p99"], 3), f(r["fo_wait_max"], 3),
              f(r["fo_longest_request"], 3), str(r["fo_unavailable_answers"]), str(r["fo_unanswered_callers"]),
              f(r["rps"], 0), f"{r['load0']:.2f}→{r['load1']:.2f}"] for r in fo]))

    http = [r for r in rows if r["kind"] in ("single", "pair", "paced") and r.get("rounds")]
    if http:
        parts.append(bl.markdown_table(
            ["backend", "setup", "callers", "CPU burner", "rec/s", "client rounds", "rounds ended busy",
             "rounds ended unavailable", "longest round s", f"rounds over {http[0]['round_limit']:g} s",
             "told ok / recorded", "load 1m"],
            [[r["backend"], kind_label(r),
              str(r["clients"]), "one core" if r["burner"] else "no", f(r["rps"], 0), str(r["rounds"]),
              str(r["rounds_busy"]), str(r["rounds_unavailable"]), f(r["round_max"], 3), str(r["rounds_late"]),
              f"{r['told_ok']} / {r['recorded']}", f"{r['load0']:.2f}→{r['load1']:.2f}"] for r in http]))

    verdicts = []
    for backend in sorted({r["backend"] for r in rows}):
        pairs = [r for r in rows if r["backend"] == backend and r["kind"] == "pair"]
        if len(pairs) > 1:
            peak = max(r["rps"] for r in pairs)
            capacity = capacity_callers(pairs)
            for r in pairs:
                times = r["clients"] / capacity
                ok = r["rps"] >= 0.9 * peak and r["rounds_late"] == 0 and r["told_ok"] == r["recorded"]
                verdict = (("PASS" if ok else "FAIL") if 1 <= times <= OVERLOAD_UP_TO
                           else "(below capacity)" if times < 1 else f"(beyond {OVERLOAD_UP_TO:g}×)")
                verdicts.append([backend, f"overload, {r['clients']} closed-loop callers ({times:g}× the capacity of "
                                 f"{capacity} callers): ≥ 90 % of the peak ({peak:.0f} rec/s), every round answered "
                                 f"within {r['round_limit']:g} s",
                                 f"{r['rps']:.0f} rec/s ({r['rps'] / peak:.0%}), {r['rounds_late']} late rounds, "
                                 f"longest {f(r['round_max'], 3)} s", verdict])
        best = [r for r in rows if r["backend"] == backend and r["kind"] in ("single", "pair")]
        at200 = [r for r in rows if r["backend"] == backend and r["kind"] == "paced"]
        if best:
            top = max(best, key=lambda r: r["rps"])
            verdicts.append([backend, f"≥ {TARGET_RPS:g} committed recharges/s",
                             f"{top['rps']:.0f} ({kind_label(top)}, {top['clients']} callers)",
                             "PASS" if top["rps"] >= TARGET_RPS else "FAIL"])
        for r in at200:
            verdicts.append([backend, f"p99 < {TARGET_P99_MS:g} ms at {r['clients']} callers "
                             f"(paced, {r['rate']:g} rec/s offered, {r['rps']:.0f} done)",
                             f"{f(r['p99'])} ms", "PASS" if r["p99"] is not None and r["p99"] < TARGET_P99_MS else "FAIL"])
        for r in (x for x in fo if x["backend"] == backend):
            ok = r["fo_wait_max"] is not None and r["fo_wait_max"] <= TARGET_FAILOVER_S and not r["fo_unanswered_callers"]
            verdicts.append([backend, f"failover wait ≤ {TARGET_FAILOVER_S:g} s ({r['clients']} callers, max)",
                             f"{f(r['fo_wait_max'], 3)} s", "PASS" if ok else "FAIL"])
    if verdicts:
        parts.append(bl.markdown_table(["backend", "target", "measured", "verdict"], verdicts))
    for r in rows:
        if r.get("trace"):
            parts.append(f"Trace ({r['backend']}, {kind_label(r)}, {r['clients']} callers):\n\n"
                         + "\n".join("    " + line for line in r["trace"].splitlines()))
        if r.get("profile"):
            parts.append(f"Profile of server A ({r['backend']}, {kind_label(r)}, {r['clients']} callers):\n\n"
                         + "\n".join("    " + line for line in r["profile"].splitlines()))
    return "\n\n".join(parts)


def _reasons(r: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(r["fail_reasons"].items(), key=lambda kv: -kv[1])[:3])


def note(args: argparse.Namespace) -> str:
    return (
        f"A recharge is quote + commit (2 signed HTTPS requests: TLS, a key per channel client). Closed loop, no think time: each caller starts its next "
        f"recharge when the last one is answered. Callers: {args.client_procs} client processes or more, "
        f"at most {args.callers_per_proc} callers each (`multiprocessing`, spawn; switch interval 1 ms) of threads using `ivr.client.RechargeClient` (timeout {args.client_timeout:g} s, "
        f"round {args.client_total_timeout:g} s; a step answered `service_unavailable` is repeated up to "
        f"{args.retries} times, as the dialog does; a caller whose recharge still failed so waits "
        f"{args.refused_pause:g} s, the dialog's prompt and goodbye, before the next). Each phase: {args.warmup:g} s warm-up not counted, then "
        f"{args.duration:g} s (failover: {args.failover_duration:g} s, A killed {args.kill_after:g} s in) or until "
        "the first caller runs out of cards; rec/s = recharges committed in that window / its length; latencies "
        "are of those recharges (quote start to commit answer; commit alone). Before each phase the outbox is "
        "left to drain and PostgreSQL checkpoints. CPU per recharge: client = the caller processes' CPU over "
        "their whole run; server, PG (the installation's backends) and machine (everything, incl. other "
        "people's tests) over the measured window. Other CPU cores = machine CPU not ours / window. "
        "Direct rows run the same work in one process from N threads with no server running: "
        "`service` = `RechargeService.quote` + `commit`, each with a nonce (exactly what a server's "
        "pool thread runs, with a server's pool of database connections); `raw SQL` = the same statements on the bare "
        f"driver, one connection per thread (at most {args.sql_max_conns})."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--clients", default="1,50,200", help="concurrent callers per phase (default %(default)s)")
    parser.add_argument("--cards", type=int, default=80_000, help="cards issued per backend (default %(default)s)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"which of {','.join(PHASES)} (default all)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds not counted at the start (default %(default)s)")
    parser.add_argument("--failover-duration", type=float, default=8.0)
    parser.add_argument("--paced-rates", default="100,200,300",
                        help="paced phases: recharges per second the callers offer together (default %(default)s)")
    parser.add_argument("--kill-after", type=float, default=3.0, help="failover: SIGKILL A this long into the window")
    parser.add_argument("--client-procs", type=int, default=4, help="caller processes, at least (default %(default)s)")
    parser.add_argument("--callers-per-proc", type=int, default=25,
                        help="more caller processes when a phase has more callers than this each (default %(default)s)")
    parser.add_argument("--client-timeout", type=float, default=0.5, help="RechargeClient timeout (default %(default)s)")
    parser.add_argument("--client-total-timeout", type=float, default=1.0)
    parser.add_argument("--retries", type=int, default=5, help="repeats of a step answered service_unavailable")
    parser.add_argument("--refused-pause", type=float, default=1.0,
                        help="seconds a caller told service_unavailable waits before its next recharge (the dialog's "
                             "prompt and goodbye; default %(default)s)")
    parser.add_argument("--sql-max-conns", type=int, default=16, help="raw SQL: at most this many connections")
    parser.add_argument("--outbox-wait", type=float, default=90.0, help="seconds to let the outbox drain before a phase")
    parser.add_argument("--quiet-wait", type=float, default=10.0,
                        help="before each phase wait up to this long for the machine to be idle (0 = don't)")
    parser.add_argument("--pg-url", default=bl.PG_ADMIN_URL)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work directory and databases")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy server A during the largest single/pair phase (figures are then perturbed)")
    parser.add_argument("--trace", action="store_true",
                        help="sample PostgreSQL's waits, autovacuum, checkpoints, CPU every 50 ms and line them up "
                             "against the slow recharges (PostgreSQL)")
    parser.add_argument("--processes-per-server", type=int, default=1,
                        help="server processes sharing each server's port (serve --shared-port; default 1)")
    parser.add_argument("--cpu-burner", action="store_true",
                        help="keep one core busy during every phase (a spinning process started by the benchmark)")
    parser.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    args = parser.parse_args()
    args.clients = [int(x) for x in args.clients.split(",") if x.strip()]
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    args.paced_rates = [float(x) for x in args.paced_rates.split(",") if x.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}")
    if args.record and args.profile:
        parser.error("--record cannot be combined with --profile (profiled figures are not representative)")
    chosen = bl.backends(args.backend)
    ws = bl.Workspace(args.workdir, args.pg_url, args.keep)
    bl.log(f"work directory {ws.dir}; {uptime()}")
    load_before = uptime()
    rows: list[dict[str, Any]] = []
    try:
        for b in chosen:
            rows += run_backend(args, ws, b)
    finally:
        ws.close()
    load_after = uptime()
    (bl.BENCH_DIR / "out").mkdir(exist_ok=True)
    (bl.BENCH_DIR / "out" / f"recharge-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
        json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "rows": rows},
                   indent=1, default=str))
    body = f"{note(args)}\n\nLoad: before `{load_before}`; after `{load_after}`.\n\n{report(rows, args)}"
    print()
    print(body)
    if args.record:
        command = "bench/bench_recharge.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        bl.record(f"bench_recharge, {','.join(map(str, args.clients))} callers"
                  + (", one core busy" if args.cpu_burner else ""), command, body,
                  args.pg_url if "postgresql" in chosen else None)


def _drop(ws: bl.Workspace, inst: Install) -> None:
    names = inst.pg_names()
    if not names:
        return
    with ws._pg_admin() as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if name in ws.pg_databases:
                ws.pg_databases.remove(name)


if __name__ == "__main__":
    main()
