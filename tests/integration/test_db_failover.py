"""Chaos on the real parts: the card database's primary, the leading recharge server, and both, killed under load.

The card database lives on the failover topology (``db_topology``: a
pg_auto_failover monitor, a primary and a synchronous standby, started once
per run); the stand-in marketing database on the tests' PostgreSQL server.
Two ``cli.py serve`` processes reach the card database through its
multi-host URL.  Callers (``testkit.load.SteadyLoad``) recharge steadily,
repeating a step answered ``service_unavailable`` with the same call id as
the dialog does.  After each kill, and the killed part's return, the books
must hold: no card spent twice, every recharge told ``ok`` recorded and
posted exactly once, every card spent iff recorded, and the day reconciles
(``cli.py marketing reconcile`` exits 0); and recharges resume within
``RESUME_BOUND`` seconds of the kill.  Below the application, writers
committing as fast as they can while the primary is killed find every
acknowledged row on the promoted standby (synchronous commit).
"""

import threading
import time
from collections import Counter

import psycopg
import pytest

from marketing_iface.standin import SAMPLE_ACCOUNTS
from testkit import books
from testkit.chaos import kill_db_primary, kill_leading_server, wait_for
from testkit.lifecycle import paired_installation
from testkit.load import SteadyLoad
from testkit.pair import Server
from testkit.ports import free_tcp_port
from tests.integration.test_server_pair import check_books

ACCOUNTS = [a.account_no for a in SAMPLE_ACCOUNTS]
CARDS_PER_SCENARIO = 150
# Seconds from a kill to the first recharge begun and completed after it: the goal is 5 s for the
# database (bench/bench_failover.py measures it); the test allows for the shared machine.
RESUME_BOUND = 12.0


@pytest.fixture(scope="module")
def ha(db_topology, tmp_path_factory, factory_key_files):
    with paired_installation(tmp_path_factory.mktemp("ha"), factory_key_files, "H1", 3 * CARDS_PER_SCENARIO + 20,
                             card_url=db_topology.url()) as inst:
        inst.topology = db_topology
        yield inst


def chaos(inst, slot: int, kill, *, in_flight: bool = False) -> float:
    """Steady load on one slice of cards; ``kill()`` mid-run returns what to restore; the books checked after."""
    cards = inst.cards[slot * CARDS_PER_SCENARIO:(slot + 1) * CARDS_PER_SCENARIO]
    load = SteadyLoad(lambda: inst.client(), cards, ACCOUNTS, prefix=f"chaos{slot}", workers=3, think=0.1).start()
    assert wait_for(lambda: load.ok_count() >= 10, 20), "recharges flow before the kill"
    killed_at, restore = kill()
    resumed = wait_for(lambda: load.resumed_after(killed_at), RESUME_BOUND + 5)
    time.sleep(1.0)
    calls = load.stop()
    restore()
    assert resumed is not None and resumed < RESUME_BOUND, f"recharges resumed {resumed}s after the kill"
    outcomes = Counter(c.answer.get("outcome") for c in calls)
    assert set(outcomes) == {"ok"}, outcomes
    if in_flight:
        # Calls under way when the database died were answered service_unavailable and repeated by their key.
        assert any(c.repeats for c in calls), "the kill caught calls in flight"
    check_books(inst, [s for s, _ in cards], [(c.key, c.serial, c.answer) for c in calls])
    code, out = books.reconciles(inst.env())
    assert code == 0, out
    print(f"resumed {resumed:.2f}s after the kill; {len(calls)} calls, {sum(1 for c in calls if c.repeats)} repeated a step")
    return resumed


def test_kill_the_database_primary(ha):
    chaos(ha, 0, lambda: kill_db_primary(ha), in_flight=True)


def test_kill_the_leading_recharge_server(ha):
    chaos(ha, 1, lambda: kill_leading_server(ha))


def test_kill_the_database_primary_and_the_leading_server_at_once(ha):
    def both():
        at_server, restore_server = kill_leading_server(ha)
        at_db, restore_db = kill_db_primary(ha)

        def restore():
            restore_db()
            restore_server()

        return max(at_server, at_db), restore  # recharges begun after both are dead

    chaos(ha, 2, both, in_flight=True)


def test_the_card_database_commits_synchronously(ha):
    status = ha.topology.status()
    assert status["healthy"], status
    assert status["synchronous_standby_names"].startswith("ANY 1 ("), status
    with ha.card_engine.connect() as c:
        assert c.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"


def _serve_once(inst, url: str, timeout: float = 20) -> tuple[Server, str]:
    env = inst.env() | {"CARDS_DATABASE_URL": url}
    server = Server("C", free_tcp_port(), free_tcp_port(), env, inst.workdir / f"server-C-{time.time_ns()}.log")
    server.start()
    try:
        server.wait_ready(timeout)
    except RuntimeError:
        pass
    return server, server.log.read_text()


def test_a_url_naming_no_writable_host_is_refused_in_one_line(ha):
    topo = ha.topology
    standby = next(n for n in topo.nodes if n != topo.primary())
    url = f"postgresql://postgres@127.0.0.1:{topo.nodes[standby].port}/cards?target_session_attrs=read-write"
    server, log = _serve_once(ha, url)
    try:
        assert not server.alive and server.proc.returncode != 0
    finally:
        server.stop()
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) == 1, log
    assert "no writable database host among 127.0.0.1:" in lines[0] and "Traceback" not in log


def test_a_standby_unreachable_at_start_is_one_warning_line(ha):
    topo = ha.topology
    primary = topo.nodes[topo.primary()].port
    dead = free_tcp_port()
    url = f"postgresql://postgres@127.0.0.1:{primary},127.0.0.1:{dead}/cards?target_session_attrs=read-write"
    server, _ = _serve_once(ha, url)
    try:
        assert server.alive, server.log.read_text()
        time.sleep(0.5)
        log = server.log.read_text()
    finally:
        server.stop()
    warnings = [line for line in log.splitlines() if f"127.0.0.1:{dead}" in line]
    assert len(warnings) == 1, log
    assert "unreachable" in warnings[0] and "no standby to fail over to" in warnings[0]


def test_every_acknowledged_commit_survives_the_primarys_death(ha):
    """Synchronous commit: whatever the primary acknowledged is on the standby it promotes, to the last row."""
    topo = ha.topology
    with psycopg.connect(topo.url("postgres"), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS durability")
        c.execute("CREATE DATABASE durability")
    url = topo.url("durability")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE acked (id int PRIMARY KEY)")
    acked: list[int] = []
    stop = threading.Event()

    def writer(first: int) -> None:
        i = first
        while not stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=2) as c:
                    while not stop.is_set():
                        c.execute("INSERT INTO acked VALUES (%s)", (i,))
                        acked.append(i)  # the commit was acknowledged
                        i += 4
            except psycopg.Error:
                i += 4  # this one's fate is unknown: never reuse its id
                time.sleep(0.05)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    [t.start() for t in threads]
    restore = None
    try:
        assert wait_for(lambda: len(acked) > 200, 20)
        _, restore = kill_db_primary(ha)
        at_kill = len(acked)
        assert wait_for(lambda: len(acked) > at_kill + 200, 30), "writes resume on the promoted standby"
    finally:
        stop.set()
        [t.join() for t in threads]
        if restore is not None:
            restore()
    with psycopg.connect(url) as c:
        found = {i for (i,) in c.execute("SELECT id FROM acked")}
    assert set(acked) <= found, f"{len(set(acked) - found)} acknowledged commits lost"
    with psycopg.connect(topo.url("postgres"), autocommit=True) as c:
        c.execute("DROP DATABASE durability WITH (FORCE)")
