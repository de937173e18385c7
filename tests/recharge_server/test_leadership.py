"""Tests for recharge_server.leadership: the jobs lease, heartbeats and the peer watch, on SQLite and PostgreSQL.

Time is a ``Clock``; the database is real (the ``database_url`` fixture), and
the blocking work runs at once on the test's thread instead of in a pool.
"""

import json
import threading
from typing import Any

import pytest
from sqlalchemy import select
from twisted.internet import defer
from twisted.internet.task import Clock

from cardmgmt.config import Settings
from cardmgmt.db import Database
from cardmgmt.models import Lease, ServerHeartbeat
from recharge_server.leadership import LeaseKeeper, PeerMonitor, release, try_acquire, utc_at
from recharge_server.service import ha_status
from testkit.live_api import run_now

START = 1_780_000_000.0
TTL, RENEW = 3.0, 1.0


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.advance(START)
    return c


def keeper(db: Database, clock: Clock, name: str, **kw: Any) -> LeaseKeeper:
    return LeaseKeeper(
        db=db, name=name, address=f"http://127.0.0.1:844{ord(name[0]) - 64}", reactor=clock, run_blocking=run_now,
        ttl=TTL, renew_every=RENEW, **kw,
    )


def lease_row(db: Database) -> Lease:
    with db.transaction() as s:
        return s.execute(select(Lease)).scalar_one()


def advance(clock: Clock, seconds: float, *keepers: LeaseKeeper) -> None:
    """Step the clock a second at a time, checking that there is never more than one leader."""
    for _ in range(int(seconds)):
        clock.advance(1)
        assert sum(k.is_leader for k in keepers) <= 1


def test_the_first_server_takes_the_lease_and_keeps_it(db: Database, clock: Clock) -> None:
    a, b = keeper(db, clock, "A"), keeper(db, clock, "B")
    a.startService()
    b.startService()
    assert a.is_leader and a.role == "leader" and a.token == 1
    assert not b.is_leader and b.role == "standby"
    advance(clock, 30, a, b)
    assert a.is_leader and not b.is_leader
    assert lease_row(db).token == 1
    assert a.status() == {"role": "leader", "lease_token": 1}


def test_a_dead_leader_is_replaced_within_the_ttl_and_the_token_goes_up(db: Database, clock: Clock) -> None:
    a, b = keeper(db, clock, "A"), keeper(db, clock, "B")
    a.startService()
    b.startService()
    advance(clock, 5, a, b)
    assert a.renewal is not None
    a.renewal.stop()  # A dies: no more renewals, and no goodbye
    died = clock.seconds()
    while not b.is_leader:
        advance(clock, 1, a, b)
        assert clock.seconds() - died <= TTL + RENEW, "the standby took too long to take over"
    assert b.token == 2 and lease_row(db).holder == "B"
    assert not a.is_leader


def test_a_leader_that_comes_back_finds_itself_standby(db: Database, clock: Clock) -> None:
    a, b = keeper(db, clock, "A"), keeper(db, clock, "B")
    a.startService()
    b.startService()
    assert a.renewal is not None
    a.renewal.stop()
    advance(clock, 5, a, b)
    assert b.is_leader
    a2 = keeper(db, clock, "A")  # restarted
    a2.startService()
    advance(clock, 10, a2, b)
    assert b.is_leader and not a2.is_leader and lease_row(db).token == 2


def test_a_clean_stop_hands_the_lease_over_at_the_next_renewal(db: Database, clock: Clock) -> None:
    a, b = keeper(db, clock, "A"), keeper(db, clock, "B")
    a.startService()
    b.startService()
    advance(clock, 3, a, b)
    a.stopService()
    assert not a.is_leader
    clock.advance(RENEW)
    assert b.is_leader and b.token == 2
    with db.transaction() as s:
        roles = dict(s.execute(select(ServerHeartbeat.name, ServerHeartbeat.role)).all())
    assert roles == {"A": "stopped", "B": "leader"}


def test_a_leader_cut_off_from_the_database_stops_leading_before_its_lease_ends(db: Database, clock: Clock) -> None:
    a = keeper(db, clock, "A")
    a.startService()
    renewed = clock.seconds()
    unreachable = Database("postgresql://nobody@127.0.0.1:1/nothing")  # connection refused at once
    try:
        a.db = unreachable
        clock.advance(1)
        assert a.is_leader  # one missed renewal is tolerated
        clock.advance(1)
        assert not a.is_leader
        assert clock.seconds() < renewed + TTL  # ...and it let go before anyone else could take it
    finally:
        a.db = db
        unreachable.dispose()
    clock.advance(1)
    assert a.is_leader and a.token == 1  # nobody took it in between: the same token


def test_takeovers_count_up_the_fencing_token(db: Database, clock: Clock) -> None:
    now = utc_at(clock.seconds())
    assert try_acquire(db, "A", now, TTL).token == 1
    assert try_acquire(db, "B", now, TTL).holder == "A"  # not expired yet
    later = utc_at(clock.seconds() + TTL + 1)
    state = try_acquire(db, "B", later, TTL)
    assert (state.holder, state.token) == ("B", 2)
    assert try_acquire(db, "B", later, TTL).token == 2  # a renewal is not a takeover
    assert release(db, "B", later)
    assert try_acquire(db, "A", later, TTL).token == 3


def test_racing_servers_get_one_winner(db: Database, clock: Clock) -> None:
    """Both ask for an expired lease at the same moment, many times over; the database picks one each time."""
    holder, token = "C", try_acquire(db, "C", utc_at(START), TTL).token
    for round_ in range(5):
        now = utc_at(START + (round_ + 1) * 100)
        barrier = threading.Barrier(2)
        results: dict[str, Any] = {}

        def contend(name: str, now: Any = now, barrier: Any = barrier, results: Any = results) -> None:
            barrier.wait()
            results[name] = try_acquire(db, name, now, TTL)

        threads = [threading.Thread(target=contend, args=(n,)) for n in ("A", "B")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results["A"] == results["B"]
        winner = results["A"]
        assert winner.token == (token if winner.holder == holder else token + 1)
        holder, token = winner.holder, winner.token


def test_heartbeats_and_ha_status(db: Database, clock: Clock, database_url: str, tmp_path: Any) -> None:
    peer_answers = {"A": {"name": "B", "role": "standby", "db": "ok"}}

    def fetch_for(me: str) -> Any:
        def fetch(url: str) -> defer.Deferred[dict[str, Any]]:
            if me in peer_answers:
                return defer.succeed(peer_answers[me])
            return defer.fail(ConnectionRefusedError("Connection refused"))

        return fetch

    a = keeper(db, clock, "A", peer=PeerMonitor("http://127.0.0.1:8442", clock, fetch=fetch_for("A")))
    b = keeper(db, clock, "B", peer=PeerMonitor("http://127.0.0.1:8441", clock, fetch=fetch_for("B")))
    a.startService()
    b.startService()
    advance(clock, 2, a, b)
    health = a.status()
    assert health["peer"]["reachable"] is True and health["peer"]["role"] == "standby"
    assert b.status()["peer"]["reachable"] is False and "refused" in b.status()["peer"]["error"]

    settings = Settings(database_url=database_url, key_dir=tmp_path)
    rows = {r["name"]: r for r in ha_status(settings, now=utc_at(clock.seconds()))}
    assert rows["A"]["role"] == "leader" and rows["A"]["holds_lease"] and rows["A"]["alive"]
    assert rows["B"]["role"] == "standby" and not rows["B"]["holds_lease"]
    assert rows["A"]["age_seconds"] == 0 and rows["A"]["lease_token"] == 1
    assert rows["A"]["address"] == "http://127.0.0.1:8441"
    assert rows["A"]["peer"]["role"] == "standby"

    assert a.renewal is not None and b.renewal is not None
    a.renewal.stop()
    b.renewal.stop()
    later = ha_status(settings, now=utc_at(clock.seconds() + 60))
    assert [r["alive"] for r in later] == [False, False]
    assert not any(r["lease_valid"] for r in later)

    with db.transaction() as s:
        detail = json.loads(s.get(ServerHeartbeat, "A").detail)  # type: ignore[union-attr]
    assert detail["token"] == 1


def test_a_renewal_stuck_in_the_pool_is_not_doubled(db: Database, clock: Clock) -> None:
    pending: list[Any] = []

    def stuck(f: Any, *a: Any, **kw: Any) -> defer.Deferred[Any]:
        pending.append((f, a, kw))
        return defer.Deferred()

    a = LeaseKeeper(db=db, name="A", address="x", reactor=clock, run_blocking=stuck, ttl=TTL, renew_every=RENEW)
    a.startService()
    clock.advance(TTL)  # the first renewal times out (its thread is still "running")
    clock.advance(RENEW)
    assert len(pending) == 1 and not a.is_leader


def test_the_renewal_must_be_shorter_than_the_ttl(db: Database, clock: Clock) -> None:
    with pytest.raises(ValueError):
        LeaseKeeper(db=db, name="A", address="x", reactor=clock, run_blocking=run_now, ttl=1, renew_every=1)
