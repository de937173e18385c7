"""The hot-standby pair under load and failure: real server processes, real PostgreSQL.

Needs the PostgreSQL server on 127.0.0.1:5432 (never skipped).  Two
``cli.py serve`` processes share one card database and one stand-in marketing
database created for this module; callers are threads using the real
failover client.  The invariants checked after every scenario are the
contract's: no card spent twice, no account credited twice, no recharge
lost, and every call either completed or was refused with its card untouched.
"""

import random
import re
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, select, text

from marketing_iface.standin import SAMPLE_ACCOUNTS
from recharge_server.service import ServerOptions
from testkit import books
from testkit.chaos import leader, wait_for
from testkit.databases import set_reachable
from testkit.lifecycle import paired_installation

ACCOUNTS = [a.account_no for a in SAMPLE_ACCOUNTS]


@pytest.fixture(scope="module")
def inst(tmp_path_factory, factory_key_files):
    with paired_installation(tmp_path_factory.mktemp("pair"), factory_key_files, "P1", 600, box_size=100) as inst:
        yield inst


def check_books(inst, serials, calls):
    """The contract's invariants over the given cards (``testkit.books``), and each call's answer against them."""
    recharges = books.settled(inst.card_engine, inst.marketing_engine, serials)
    for key, serial, answer in calls:
        if answer.get("outcome") == "ok":
            assert key in recharges and recharges[key].card_serial == serial, f"{key}: told ok, so recorded"
            assert answer["recharge_ref"] == recharges[key].ref
        else:
            assert key not in recharges, f"{key}: refused ({answer.get('outcome')}), so nothing spent"
    return recharges


def recharge_call(client, call_id, serial, pin, account, caller, think: float = 0.0):
    """What the dialog does: quote, let the caller listen, commit, repeating an unanswered commit (idempotent)."""
    q = client.quote(call_id=call_id, seq=1, account_no=account, pin=pin, caller=caller)
    if q.get("outcome") != "ok":
        return q
    time.sleep(think)
    for _ in range(3):
        answer = client.commit(call_id=call_id, seq=1)
        if answer.get("outcome") != "service_unavailable":
            break
    return answer


def run_callers(jobs, workers, think: float = 0.0):
    results, lock = [], threading.Lock()
    queue = list(jobs)
    start = threading.Barrier(workers)

    def work(client):
        start.wait()
        while True:
            with lock:
                if not queue:
                    return
                job = queue.pop()
            answer = recharge_call(client, *job, think=random.uniform(0, think))
            with lock:
                results.append((f"{job[0]}#1", job[1], answer))

    return results, work


def test_200_concurrent_callers_race_for_cards(inst):
    cards = inst.cards[0:100]
    jobs = [(f"race-{i}", *cards[i // 2], ACCOUNTS[i % len(ACCOUNTS)], f"1380000{i:04d}") for i in range(200)]
    random.Random(1).shuffle(jobs)
    results, work = run_callers(jobs, 200)
    # 200 requests arriving in the same millisecond queue up on two cores:
    # these callers wait longer than the failover bound a normal call uses.
    threads = [threading.Thread(target=work, args=(inst.client(timeout=8.0, total_timeout=16.0),)) for _ in range(200)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    outcomes = Counter(a.get("outcome") for _, _, a in results)
    assert set(outcomes) <= {"ok", "card_held", "card_used", "service_unavailable"}, outcomes
    assert outcomes["ok"] >= 95, outcomes
    check_books(inst, [s for s, _ in cards], results)


def _balances(inst) -> dict[str, int]:
    with inst.marketing_engine.connect() as m:
        return dict(m.execute(text("SELECT account_no, balance FROM accounts")).all())


def test_excess_requests_are_refused_at_once_and_nothing_is_lost_or_doubled(inst):
    """200 quotes at once on server A (bound: ServerOptions.max_in_flight): the excess is refused busy at once, not queued;
    the admitted ones complete; every caller, retrying as the hotline does, is recharged exactly once."""
    from cardmgmt.keys import load_api_key
    from ivr.client import RechargeClient

    cards = inst.cards[400:600]
    assert wait_for(lambda: books.unposted(inst.card_engine) == 0, 60)
    before = _balances(inst)
    key = load_api_key(inst.workdir / "keys")
    a = ("127.0.0.1", inst.servers[0].port)
    rush, lock = {}, threading.Lock()
    start = threading.Barrier(len(cards))

    def quote(i: int) -> None:
        # One server, no second try: what the server itself answers to a rush.
        with RechargeClient([a], key, timeout=5.0, total_timeout=5.0, tls=inst.tls(), backoff=None) as client:
            client.health()  # connected (TLS) before the rush
            start.wait()
            t0 = time.monotonic()
            answer = client.quote(call_id=f"rush-{i}", seq=1, account_no=ACCOUNTS[i % len(ACCOUNTS)],
                                  pin=cards[i][1], caller=f"1370000{i:04d}")
            took = time.monotonic() - t0
        with lock:
            rush[i] = (answer, took)

    threads = [threading.Thread(target=quote, args=(i,)) for i in range(len(cards))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    outcomes = Counter(answer.get("error") or answer["outcome"] for answer, _ in rush.values())
    assert set(outcomes) <= {"ok", "busy"}, outcomes
    # At least the bound's worth admitted (places freed during the rush are taken again, how often is timing).
    assert outcomes["busy"] >= 1 and outcomes["ok"] >= ServerOptions().max_in_flight, outcomes
    refused = sorted(took for answer, took in rush.values() if answer.get("error") == "busy")
    admitted = sorted(took for answer, took in rush.values() if answer["outcome"] == "ok")
    # The server's own account (its log; the client's clock also counts this machine's scheduling of 200
    # threads): beyond the bound a request is refused as it comes, in no time; one that waited its turn
    # too long is refused when its turn comes, unseen by the recharge core.
    log = inst.servers[0].log.read_text()
    at_door = [float(m) for m in re.findall(r"refused: busy: \d+ requests in progress.* ms=([0-9.]+)", log)]
    print(f"rush: {outcomes}; refused at the door (logged, within the log's budget) {len(at_door)}; "
          f"refusals p50 {refused[len(refused) // 2]:.3f} s, answers p50 {admitted[len(admitted) // 2]:.3f} s")
    assert at_door, "beyond the bound, requests are refused as they come, not queued"
    assert max(at_door) < 20, at_door

    # Then every caller finishes as the hotline would: the quoted commit theirs (repeated while unanswered),
    # the refused ones start again, on both servers, with the client's own deadlines and back-off.
    def finish(i: int) -> tuple[str, str, dict]:
        serial, pin = cards[i]
        client = inst.client()
        answer = {"outcome": "service_unavailable"}
        for _ in range(20):
            if rush[i][0]["outcome"] == "ok":
                answer = client.commit(call_id=f"rush-{i}", seq=1)
            else:
                answer = recharge_call(client, f"rush-{i}", serial, pin, ACCOUNTS[i % len(ACCOUNTS)], f"1370000{i:04d}")
            if answer.get("outcome") != "service_unavailable":
                break
        client.close()
        return (f"rush-{i}#1", serial, answer)

    calls, done = [], threading.Barrier(len(cards))

    def run(i: int) -> None:
        done.wait()
        call = finish(i)
        with lock:
            calls.append(call)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cards))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    finals = Counter(answer["outcome"] for _, _, answer in calls)
    assert finals == {"ok": len(cards)}, finals
    check_books(inst, [s for s, _ in cards], calls)
    after = _balances(inst)
    credited = Counter()
    for _, _, answer in calls:
        credited[answer["account_no"]] += answer["amount"]
    assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == dict(credited), "credited exactly once"


def test_kill_the_leader_at_random_moments(inst):
    cards = inst.cards[100:300]
    jobs = [(f"chaos-{i}", serial, pin, ACCOUNTS[i % len(ACCOUNTS)], f"1390000{i:04d}") for i, (serial, pin) in enumerate(cards)]
    results, work = run_callers(jobs, 8, think=0.6)
    threads = [threading.Thread(target=work, args=(inst.client(),)) for _ in range(8)]
    [t.start() for t in threads]
    rng, kills = random.Random(7), 0
    while any(t.is_alive() for t in threads):
        time.sleep(rng.uniform(0.2, 0.8))
        victim = leader(inst) or rng.choice(inst.servers)
        victim.kill()
        kills += 1
        time.sleep(rng.uniform(0.1, 0.5))
        victim.start()
        victim.wait_ready()
    [t.join() for t in threads]
    assert kills >= 3
    assert len(results) == len(jobs)
    outcomes = Counter(a.get("outcome") for _, _, a in results)
    assert outcomes["ok"] >= len(jobs) * 0.9, outcomes
    check_books(inst, [s for s, _ in cards], results)


def test_marketing_outage_loses_and_doubles_nothing(inst):
    cards = inst.cards[300:340]
    client = inst.client()
    for i, (_serial, pin) in enumerate(cards):
        assert client.quote(call_id=f"out-{i}", seq=1, account_no=ACCOUNTS[0], pin=pin, caller="13700000000")["outcome"] == "ok"
    with inst.marketing_engine.connect() as m:
        before = m.execute(text("SELECT balance FROM accounts WHERE account_no = :a"), {"a": ACCOUNTS[0]}).scalar_one()
    set_reachable(inst.marketing_db, False)
    try:
        calls = []
        for i, (serial, _pin) in enumerate(cards):
            answer = client.commit(call_id=f"out-{i}", seq=1)
            assert answer["outcome"] == "ok", answer
            calls.append((f"out-{i}#1", serial, answer))
        time.sleep(2.5)
        assert books.unposted(inst.card_engine) == len(cards), "accepted while the marketing system is down, none posted"
    finally:
        set_reachable(inst.marketing_db, True)
    check_books(inst, [s for s, _ in cards], calls)
    with inst.marketing_engine.connect() as m:
        after = m.execute(text("SELECT balance FROM accounts WHERE account_no = :a"), {"a": ACCOUNTS[0]}).scalar_one()
    assert after - before == sum(a["amount"] for _, _, a in calls), "credited exactly once"


def test_standby_takes_over_the_jobs_within_seconds(inst):
    first = wait_for(lambda: leader(inst), 10)
    assert first is not None
    other = next(s for s in inst.servers if s is not first)
    killed_at = time.monotonic()
    first.kill()
    assert wait_for(lambda: leader(inst) is other, 10), "the standby leads"
    takeover = time.monotonic() - killed_at
    assert takeover < 6, f"took {takeover:.1f}s"
    # the jobs run on the new leader: a recharge made now is posted
    serial, pin = inst.cards[340]
    calls = [("after-failover#1", serial, recharge_call(inst.client(), "after-failover", serial, pin, ACCOUNTS[1], "13600000000"))]
    assert calls[0][2]["outcome"] == "ok"
    check_books(inst, [serial], calls)
    first.start()
    first.wait_ready()


def _wrong_pins_in_parallel(inst, account, callers):
    """One wrong PIN per caller, all at once, half of them sent to each server first."""
    from cardmgmt.keys import load_api_key
    from ivr.client import RechargeClient

    key = load_api_key(inst.workdir / "keys")
    ports = [("127.0.0.1", s.port) for s in inst.servers]
    answers, lock = [], threading.Lock()
    start = threading.Barrier(len(callers))

    def call(i, caller):
        order = ports if i % 2 else ports[::-1]
        with RechargeClient(order, key, timeout=20.0, total_timeout=40.0, tls=inst.tls()) as client:
            start.wait()
            a = client.quote(call_id=f"guess-{account}-{i}", seq=1, account_no=account, pin=f"{i:018d}", caller=caller)
        with lock:
            answers.append(a.get("outcome"))

    threads = [threading.Thread(target=call, args=(i, c)) for i, c in enumerate(callers)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return Counter(answers)


def _failures(inst, **where):
    from cardmgmt.models import PinFailure

    with inst.card_engine.connect() as c:
        q = select(func.count()).select_from(PinFailure)
        for column, value in where.items():
            q = q.where(getattr(PinFailure, column) == value)
        return c.execute(q).scalar_one()


def _forget_failures(inst):
    with inst.card_engine.begin() as c:
        c.execute(text("DELETE FROM pin_failures"))


def test_200_parallel_wrong_pins_test_at_most_the_budget(inst):
    """Through both servers at once: one caller number, then withheld numbers; never more than 5 PINs tested."""
    try:
        # Requests queued behind the lock longer than a client waits are shed
        # (service_unavailable): refused without a PIN tested, like a lockout.
        refused = {"locked_out", "service_unavailable"}
        outcomes = _wrong_pins_in_parallel(inst, ACCOUNTS[2], ["+8613500000001"] * 100 + ["13500000001"] * 100)
        assert _failures(inst, caller="13500000001") == 5, outcomes
        assert outcomes["wrong_pin"] == 4 and set(outcomes) - {"wrong_pin"} <= refused, outcomes
        outcomes = _wrong_pins_in_parallel(inst, ACCOUNTS[3], [""] * 200)
        assert _failures(inst, caller="", account_no=ACCOUNTS[3]) == 5, outcomes
        assert outcomes["wrong_pin"] == 4 and set(outcomes) - {"wrong_pin"} <= refused, outcomes
        # The owner, calling from their own number, is locked out by neither.
        serial, pin = inst.cards[350]
        for account in (ACCOUNTS[2], ACCOUNTS[3]):
            answer = inst.client().quote(call_id=f"owner-{account}", seq=1, account_no=account, pin=pin, caller="13600000099")
            assert answer["outcome"] == "ok", answer
            inst.client().cancel(call_id=f"owner-{account}", seq=1)
    finally:
        _forget_failures(inst)


def test_the_service_wide_guard_holds_against_many_numbers(inst):
    """200 strangers with a number each: the guard (100 in 10 minutes) stops testing PINs for everyone."""
    try:
        outcomes = _wrong_pins_in_parallel(inst, ACCOUNTS[4], [f"1350001{i:04d}" for i in range(200)])
        tested = _failures(inst)
        # Requests already past the guard's count when it filled may still finish: at most one per pool thread.
        assert 100 <= tested <= 100 + 2 * 8, (tested, outcomes)
        assert outcomes["wrong_pin"] == tested and outcomes["service_unavailable"] == 200 - tested, outcomes
        serial, pin = inst.cards[351]
        answer = inst.client().quote(call_id="owner-guard", seq=1, account_no=ACCOUNTS[4], pin=pin, caller="13600000098")
        assert answer["outcome"] == "service_unavailable", "no PIN is tested while the guard holds"
    finally:
        _forget_failures(inst)
    answer = inst.client().quote(call_id="owner-guard-2", seq=1, account_no=ACCOUNTS[4], pin=pin, caller="13600000098")
    assert answer["outcome"] == "ok", answer
    inst.client().cancel(call_id="owner-guard-2", seq=1)
