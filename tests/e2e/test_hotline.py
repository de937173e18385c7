"""End-to-end phone tests: SIPp callers through a real Asterisk 22, the AGI dialog, both recharge servers, PostgreSQL.

Every call here is a script from ``tests/calls`` replayed by ``testkit.replay``
against the real Asterisk sandbox (a Debian sid root under chroot, built on
first use, about a minute), which plays the real prompt WAVs and runs the
dialog's AGI under its own Python; the AGI reaches the two recharge
servers (``cli.py serve A`` and ``B``, real processes) on the host's
loopback, and they keep the cards and the stand-in marketing system on the
real PostgreSQL server at 127.0.0.1:5432.  These tests need root, the
Asterisk sandbox, SIPp, PostgreSQL, espeak-ng and sox, and they never skip:
without any of them they fail and say why.

The call-script format and how ``testkit.replay`` judges what a scenario logged
are tested without any of that in ``tests/testkit/test_callscript.py`` and
``tests/testkit/test_replay.py``; ``cli.py replay`` is called here once against
this hotline.

Each script phones with accounts and caller numbers of its own, so that
wrong PINs counted against one never lock another out, and with cards
prepared through the card services (issued, voided, frozen, in stock, of an
expired batch, held by another call, already used).  The scripts that need
nothing of each other run at once, one SIPp each; the ones that kill
servers run alone.

Both AGI modes run here.  Every script is replayed with the dialplan's
default, the FastAGI service beside Asterisk (``ivr.fastagi``); the
independent scripts are replayed a second time, again all at once, with the
dialplan set to process AGI (``ivr.agi_main``, a Python per call), with
cards and callers of their own.  The scripts that stop servers, kill the
FastAGI service or need the agent's phone (a SIPp UAS, ``testkit.agent``)
run by FastAGI only; the fallback to process AGI when the service is down
is tested with a recharge of its own.  Timings are the benchmark's business
(``bench/bench_hotline.py``): nothing here asserts how fast a call went.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli import cli
from testkit.agent import AgentPhone
from testkit.callscript import Injection, load
from testkit.hotline import BALANCES, CALLS, Hotline
from testkit.replay import ScriptResult

pytestmark = pytest.mark.slow

FACE = 5000  # fen: the main batch's cards
AGENT_RING = 4  # seconds the agents' phone rings before the caller hears agents-busy (the dialplan's default is 20)
CONCURRENT = 50
WRONG_PIN = "100000000000000001"  # 18 digits that are no card's PIN (a real PIN is 18 random digits)

# One account and one caller per concern: the lockout counts wrong PINs per caller and per account.
ACCOUNT = {
    "recharge-one-card": "3100000010",   # its balance is checked against the marketing system
    "recharge-english": "3100000002",
    "recharge-two-cards": "3100000003",
    "reenter-account": "3100000001",
    "star-goes-back": "3100000001",
    "silence": "",
    "wrong-pin-then-right": "3100000004",
    "wrong-pin-three-times": "3100000005",  # locked out by the end of the module
    "locked-out": "3100000005",
    "card-used": "3100000006",
    "card-voided": "3100000006",
    "card-frozen": "3100000006",
    "card-expired": "3100000006",
    "card-not-issued": "3100000006",
    "card-not-sold": "3100000006",
    "card-held": "3100000006",
    "unknown-account": "3100000007",
    "decline": "3100000008",
    "service-unavailable": "3100000009",
    "unavailable-at-pin": "3100000009",
    "recharge-failover": "3100000011",
    "recharge-quick": "3100000012",
    "transfer-to-agent": "3100000007",
    "transfer-no-agent": "",
    "dialog-lost": "",
}
CALLER = {name: f"1380000{i:04d}" for i, name in enumerate(sorted(ACCOUNT), start=1)}


@dataclass
class Cards:
    """The cards each script uses, as (serial, PIN)."""

    named: dict[str, tuple[str, str]] = field(default_factory=dict)
    load: list[tuple[str, str]] = field(default_factory=list)

    def pin(self, name: str) -> str:
        return self.named[name][1]

    def serial(self, name: str) -> str:
        return self.named[name][0]


@pytest.fixture(scope="module")
def cards() -> Cards:
    return Cards()


@pytest.fixture(scope="module")
def hotline(hotline_factory: Callable[[Callable[[Hotline], None]], Hotline], cards: Cards) -> Hotline:
    def prepare(h: Hotline) -> None:
        # The expired batch is issued first, and the stock batch taken in last, so that each
        # issue request (by face value) collects the batch meant for it.
        expired = h.issue("X1", 2, face_value=3000, expiry=dt.date.today() + dt.timedelta(days=1))
        main = h.issue("E1", 80)
        unsold = h.issue("U1", 2, face_value=1000, sold=False)
        in_stock = h.stock("S1", 2, face_value=2000)
        h.expire("X1")
        names = ["one-card", "english", "two-a", "two-b", "wrong-then-right", "decline", "failover",
                 "unavailable-at-pin", "used", "voided", "frozen", "held", "quick", "cli-ok", "cli-fail",
                 "transfer", "fallback", *(f"p-{n}" for n in PROCESS_CARDS)]
        cards.named = dict(zip(names, main, strict=False))
        cards.named["expired"] = expired[0]
        cards.named["not-issued"] = in_stock[0]
        cards.named["not-sold"] = unsold[0]
        cards.named["spare"] = main[-1]
        cards.load = main[len(names):len(names) + CONCURRENT]
        h.void(cards.serial("voided"))
        h.freeze(cards.serial("frozen"))

    h = hotline_factory(prepare)
    assert h.sandbox is not None
    h.sandbox.rx(f"dialplan set global AGENT_RING {AGENT_RING}")  # nobody answers: the caller waits this long
    # A card that has already recharged an account, through the same servers a caller reaches.
    client = h.client()
    quote = client.quote(call_id="before-the-tests", seq=1, account_no=ACCOUNT["card-used"], pin=cards.pin("used"),
                         caller="")
    assert quote["outcome"] == "ok", quote
    assert client.commit(call_id="before-the-tests", seq=1)["outcome"] == "ok"
    return h


def variables(name: str, **more: str) -> dict[str, str]:
    """The values a script takes: its own caller and account, the main batch's face value, and ``more``."""
    return {"CALLER": CALLER[name], "ACCOUNT": ACCOUNT[name], "AMOUNT": str(FACE), **more}


def report(result: ScriptResult) -> str:
    return "\n" + result.report() + ("\n" + result.run.explain() if result.run else "")


# --- the scripts that need nothing of each other, all at once ------------------------------------

INDEPENDENT = {
    "recharge-one-card": {"PIN": "one-card"},
    "recharge-english": {"PIN": "english"},
    "recharge-two-cards": {"PIN": "two-a", "PIN2": "two-b"},
    "recharge-quick": {"PIN": "quick"},
    "reenter-account": {"WRONG_ACCOUNT": "3100000099"},
    "star-goes-back": {},
    "silence": {},
    "wrong-pin-then-right": {"PIN": "wrong-then-right", "WRONG_PIN": WRONG_PIN},
    "card-used": {"PIN": "used"},
    "card-voided": {"PIN": "voided"},
    "card-frozen": {"PIN": "frozen"},
    "card-expired": {"PIN": "expired"},
    "card-not-issued": {"PIN": "not-issued"},
    "card-not-sold": {"PIN": "not-sold"},
    "card-held": {"PIN": "held"},
    "unknown-account": {"UNKNOWN_ACCOUNT": "9999999999"},
    "decline": {"PIN": "decline"},
}
LOCKOUT = ("wrong-pin-three-times", "locked-out")  # in this order, as one caller
ALONE = {"service-unavailable", "unavailable-at-pin", "recharge-failover",  # they stop servers
         "transfer-to-agent", "transfer-no-agent",  # an agent's phone of their own
         "dialog-lost"}  # kills the FastAGI service
# The cards the independent scripts spend, again for their replay by process AGI.
PROCESS_CARDS = ("one-card", "english", "two-a", "two-b", "wrong-then-right", "decline", "quick")


@dataclass(frozen=True)
class Library:
    """The independent scripts' results, by name, and what the books said before they ran."""

    results: dict[str, ScriptResult]
    balance_before: int

    def __getitem__(self, name: str) -> ScriptResult:
        return self.results[name]


@pytest.fixture(scope="module")
def library(hotline: Hotline, cards: Cards) -> Library:
    """Every independent script, replayed at once; results by script name."""
    jobs = {}
    for name, extra in INDEPENDENT.items():
        values = {k: (cards.pin(v) if k.startswith("PIN") else v) for k, v in extra.items()}
        jobs[name] = variables(name, **values)
    # Another call holds this card (quoted, not confirmed) for the whole run: the hold lasts two minutes.
    hold = hotline.client().quote(call_id="another-call", seq=1, account_no="3100000001", pin=cards.pin("held"),
                                  caller="13900000000")
    assert hold["outcome"] == "ok", hold
    before = hotline.balance(ACCOUNT["recharge-one-card"])
    # The lock-out takes two calls in a row, on an account and a caller of their own: alongside the others.
    lockout = variables("wrong-pin-three-times", WRONG_PIN=WRONG_PIN)
    with ThreadPoolExecutor(max_workers=len(jobs) + 1) as pool:
        chain = pool.submit(lambda: [hotline.call(name, lockout) for name in LOCKOUT])
        futures = {name: pool.submit(hotline.call, name, values) for name, values in jobs.items()}
        results = {name: f.result() for name, f in futures.items()}
        results.update(zip(LOCKOUT, chain.result(), strict=True))
    return Library(results, before)


def test_the_library_covers_every_script_and_every_script_is_run_here() -> None:
    assert {p.stem for p in CALLS.glob("*.call")} == set(INDEPENDENT) | set(LOCKOUT) | ALONE == set(ACCOUNT)


@pytest.mark.parametrize("name", sorted(INDEPENDENT))
def test_script_passes(library: Library, name: str) -> None:
    result = library[name]
    assert result.passed, report(result)


def test_a_recharge_reaches_the_marketing_system_exactly_once(hotline: Hotline, cards: Cards,
                                                              library: Library) -> None:
    assert library["recharge-one-card"].passed, report(library["recharge-one-card"])
    account = ACCOUNT["recharge-one-card"]
    assert hotline.card_state(cards.serial("one-card")) == "redeemed"
    assert hotline.wait_until_posted(), "the outbox drains"
    rows = hotline.interface_rows(account)
    assert [(amount, serial) for _ref, amount, serial in rows] == [(FACE, cards.serial("one-card"))]
    (recharge,) = hotline.recharges([cards.serial("one-card")])
    assert rows[0][0] == recharge.ref
    assert library.balance_before == BALANCES[account]
    assert hotline.balance(account) == library.balance_before + FACE


def test_two_cards_in_one_call_are_two_recharges(hotline: Hotline, cards: Cards,
                                                 library: Library) -> None:
    assert library["recharge-two-cards"].passed, report(library["recharge-two-cards"])
    serials = [cards.serial("two-a"), cards.serial("two-b")]
    recharges = hotline.recharges(serials)
    assert sorted(r.card_serial for r in recharges) == sorted(serials)
    assert len({r.call_id for r in recharges}) == 1, "one call"
    assert sorted(r.key.rsplit("#", 1)[1] for r in recharges) == ["1", "2"], "its first and second card"


def test_refused_and_declined_cards_are_not_spent(hotline: Hotline, cards: Cards,
                                                  library: Library) -> None:
    expected = {"decline": "sold", "voided": "voided", "frozen": "frozen", "expired": "sold",
                "not-issued": "in_stock", "not-sold": "issued", "held": "sold", "wrong-then-right": "redeemed"}
    states = {name: hotline.card_state(cards.serial(name)) for name in expected}
    assert states == expected
    untouched = [cards.serial(n) for n in ("decline", "voided", "frozen", "expired", "not-issued", "not-sold", "held")]
    assert hotline.recharges(untouched) == []


def test_cli_replay_phones_the_hotline_and_exits_3_when_a_step_fails(hotline: Hotline, cards: Cards,
                                                                     library: Library, tmp_path: Path) -> None:
    assert hotline.sandbox is not None
    account = "3100000002"  # no test counts this account's recharges
    script = CALLS / "recharge-one-card.call"

    def replay(card: str, amount: int, workdir: Path) -> Result:
        args = [str(script), "--port", str(hotline.sandbox.sip_port), "--var", "CALLER=13900000077",
                "--var", f"ACCOUNT={account}", "--var", f"AMOUNT={amount}", "--secret", "PIN", "--workdir", str(workdir)]
        return CliRunner().invoke(cli, ["replay", *args], input=cards.pin(card) + "\n")

    ok = replay("cli-ok", FACE, tmp_path / "ok")
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith(f"PASS {script}") and "\n  FAIL" not in ok.stdout
    assert "1 of 1 scripts passed (1 calls)" in ok.stdout
    assert hotline.card_state(cards.serial("cli-ok")) == "redeemed"

    wrong = replay("cli-fail", FACE + 1, tmp_path / "fail")  # the script expects another amount than the card's
    assert wrong.exit_code == 3, wrong.output
    step = next(n for n, s in enumerate(load(script).steps, start=1) if s.describe() == "expect amount=${AMOUNT}")
    assert f"FAILED {script} at step {step} (line 21): expect amount=${{AMOUNT}}" in wrong.stdout
    assert not escaped(wrong) and "Traceback" not in wrong.output

    for result, card, workdir in ((ok, "cli-ok", tmp_path / "ok"), (wrong, "cli-fail", tmp_path / "fail")):
        pin = cards.pin(card)
        assert pin not in result.output
        kept = {f.name: f.read_text(errors="replace") for f in workdir.rglob("*") if f.is_file()}
        assert kept and not [name for name, text in kept.items() if pin in text], "files that held the PIN are gone"


def escaped(result: Result) -> bool:
    return result.exception is not None and not isinstance(result.exception, SystemExit)


# --- the scripts that run alone ----------------------------------------------------------------------


def test_five_wrong_pins_lock_the_caller_out_and_not_the_owner(hotline: Hotline, cards: Cards, library: Library) -> None:
    for name in LOCKOUT:
        assert library[name].passed, report(library[name])
    # Even the right PIN is now refused from that number, in any spelling of it.
    caller = CALLER["wrong-pin-three-times"]
    answer = hotline.client().quote(call_id="after-lockout", seq=1, account_no=ACCOUNT["locked-out"],
                                    pin=cards.pin("spare"), caller="+86" + caller)
    assert answer["outcome"] == "locked_out", answer
    assert hotline.card_state(cards.serial("spare")) == "sold"
    # The account's owner, calling from their own number, is not locked out by a stranger's wrong PINs.
    answer = hotline.client().quote(call_id="owner-after-lockout", seq=1, account_no=ACCOUNT["locked-out"],
                                    pin=cards.pin("spare"), caller="13900000001")
    assert answer["outcome"] == "ok", answer
    hotline.client().cancel(call_id="owner-after-lockout", seq=1)
    assert hotline.card_state(cards.serial("spare")) == "sold"


def test_with_no_server_answering_the_caller_hears_the_card_was_not_used(hotline: Hotline, cards: Cards,
                                                                         library: Library) -> None:
    for server in hotline.inst.servers:
        server.kill()
    try:
        result = hotline.call("service-unavailable", variables("service-unavailable"))
    finally:
        hotline.restart_stopped_servers()
    assert result.passed, report(result)


def test_servers_lost_before_the_pin_leave_the_card_unused(hotline: Hotline, cards: Cards,
                                                           library: Library) -> None:
    def kill_both() -> None:
        for server in hotline.inst.servers:
            server.kill()

    name = "unavailable-at-pin"
    try:
        result = hotline.call_while(name, variables(name, PIN=cards.pin("unavailable-at-pin")),
                                    when_step=_step(hotline, name, "expect prompt=enter-pin"), action=kill_both)
    finally:
        hotline.restart_stopped_servers()
    assert result.passed, report(result)
    assert hotline.card_state(cards.serial("unavailable-at-pin")) == "sold"
    assert hotline.recharges([cards.serial("unavailable-at-pin")]) == []


def test_primary_killed_mid_call_the_recharge_completes_on_the_standby(hotline: Hotline, cards: Cards,
                                                                      library: Library) -> None:
    name = "recharge-failover"
    account = ACCOUNT[name]
    before = hotline.balance(account)
    primary = hotline.primary
    try:
        result = hotline.call_while(name, variables(name, PIN=cards.pin("failover")),
                                    when_step=_step(hotline, name, "expect prompt=account-found"), action=primary.kill)
        assert not primary.alive, "the primary was dead for the PIN, the confirmation and the commit"
        assert result.passed, report(result)
        assert hotline.card_state(cards.serial("failover")) == "redeemed"
        assert hotline.wait_until_posted(), "the standby took the outbox over and drained it"
    finally:
        hotline.restart_stopped_servers()
    assert [amount for _ref, amount, _serial in hotline.interface_rows(account)] == [FACE]
    assert hotline.balance(account) == before + FACE


def test_fifty_concurrent_calls_each_with_its_own_card_all_pass(hotline: Hotline, cards: Cards,
                                                                library: Library) -> None:
    accounts = [f"31000000{i:02d}" for i in (1, 2, 3, 7, 12)]
    rows = tuple((f"1371000{i:04d}", accounts[i % len(accounts)], pin) for i, (_serial, pin) in enumerate(cards.load))
    injection = Injection(("CALLER", "ACCOUNT", "PIN"), rows)
    result = hotline.call("recharge-quick", {}, injection=injection, calls=CONCURRENT, concurrent=CONCURRENT,
                          trace_messages=True)
    assert len(result.calls) == CONCURRENT
    assert result.passed, report(result)
    serials = [serial for serial, _pin in cards.load]
    recharges = hotline.recharges(serials)
    assert sorted(r.card_serial for r in recharges) == sorted(serials), "every card spent, once"
    assert len({r.call_id for r in recharges}) == CONCURRENT, "by fifty different calls"
    assert hotline.wait_until_posted()


# --- the FastAGI service, transfers to an agent ----------------------------------------------------


def test_the_library_s_calls_ran_in_the_fastagi_service(hotline: Hotline, library: Library) -> None:
    assert hotline.sandbox is not None
    served = hotline.sandbox.fastagi_log().count(": start (servers ")
    assert served >= len(INDEPENDENT) + len(LOCKOUT), hotline.sandbox.fastagi_log()[-2000:]
    assert "did not take it" not in hotline.sandbox.messages_log(), "no call fell back to process AGI"


def test_key_zero_with_a_held_card_releases_it_and_an_agent_answers(hotline: Hotline, cards: Cards,
                                                                    library: Library, tmp_path: Path) -> None:
    assert hotline.sandbox is not None
    with AgentPhone(hotline.sandbox.agent_port, tmp_path / "agent", answer=True) as agent:
        result = hotline.call("transfer-to-agent", variables("transfer-to-agent", PIN=cards.pin("transfer")))
    assert result.passed, report(result)
    assert agent.run is not None and agent.run.ok, "the agent's phone was answered and talked to: " + agent.run.explain()
    assert result.calls[0].text_at("prompt=agents-busy") is None
    assert hotline.card_state(cards.serial("transfer")) == "sold", "released, not spent"
    assert hotline.recharges([cards.serial("transfer")]) == []


def test_when_no_agent_answers_the_caller_hears_so_and_goodbye(hotline: Hotline, library: Library,
                                                               tmp_path: Path) -> None:
    assert hotline.sandbox is not None
    with AgentPhone(hotline.sandbox.agent_port, tmp_path / "agent", answer=False) as agent:
        result = hotline.call("transfer-no-agent", variables("transfer-no-agent"))
    assert result.passed, report(result)
    assert agent.run is not None and agent.run.ok, "the agent's phone rang and was cancelled: " + agent.run.explain()
    call = result.calls[0]
    rang = (call.text_at("result=agent-unanswered") or 0) - (call.text_at("prompt=transfer-agent") or 0)
    assert rang < (AGENT_RING + 10) * 1000, "bounded: the ring time and the transfer prompt"


# A frozen service (alive, listening, answering nobody) is killed by its supervisor after three unanswered
# probes (ivr.fastagi), and its calls then end as on a death.
@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP], ids=["dies", "freezes"])
def test_a_service_that_dies_or_freezes_mid_call_leaves_no_silence_and_is_started_again(
    hotline: Hotline, library: Library, fault: signal.Signals
) -> None:
    sandbox = hotline.sandbox
    assert sandbox is not None
    worker = sandbox.fastagi_worker()
    assert worker is not None

    def fail_service() -> None:
        os.kill(worker, fault)

    name = "dialog-lost"
    result = hotline.call_while(name, variables(name), when_step=_step(hotline, name, "expect prompt=enter-account"),
                                action=fail_service)
    assert result.passed, report(result)
    assert "the dialog ended without ending the call" in sandbox.messages_log()
    end = time.monotonic() + 15
    while sandbox.fastagi_worker() in (None, worker) and time.monotonic() < end:
        time.sleep(0.2)
    assert sandbox.fastagi_worker() not in (None, worker), "the supervisor started the service again"


def test_with_the_service_down_a_call_runs_by_process_agi(hotline: Hotline, cards: Cards, library: Library) -> None:
    sandbox = hotline.sandbox
    assert sandbox is not None
    sandbox.stop_fastagi()
    try:
        values = {"CALLER": "13810009999", "ACCOUNT": "3100000012", "PIN": cards.pin("fallback")}
        result = hotline.call("recharge-quick", values)
    finally:
        sandbox.start_fastagi()
    assert result.passed, report(result)
    assert "the FastAGI service did not take it (AGISTATUS=FAILURE), process AGI takes it" in sandbox.messages_log()
    assert hotline.card_state(cards.serial("fallback")) == "redeemed"


# --- the same scripts by process AGI ----------------------------------------------------------------

# What differs when the independent scripts are replayed by process AGI: their own callers, their own cards,
# and accounts whose counts the first replay does not disturb.
PROCESS_ACCOUNT = {"recharge-one-card": "3100000002", "wrong-pin-then-right": "3100000001"}


@pytest.fixture(scope="module")
def process_library(hotline: Hotline, cards: Cards, library: Library) -> dict[str, ScriptResult]:
    """Every independent script again, at once, with the dialplan set to process AGI only."""
    assert hotline.sandbox is not None
    client = hotline.client()
    client.cancel(call_id="another-call", seq=1)  # the first hold may have lapsed by now: hold the card afresh
    hold = client.quote(call_id="another-call-2", seq=1, account_no="3100000001", pin=cards.pin("held"),
                        caller="13900000000")
    assert hold["outcome"] == "ok", hold
    jobs = {}
    for i, (name, extra) in enumerate(sorted(INDEPENDENT.items()), start=1):
        values = {k: cards.pin(f"p-{v}" if f"p-{v}" in cards.named else v) if k.startswith("PIN") else v
                  for k, v in extra.items()}
        jobs[name] = {**variables(name, **values), "CALLER": f"1381000{i:04d}"}
        if name in PROCESS_ACCOUNT:
            jobs[name]["ACCOUNT"] = PROCESS_ACCOUNT[name]
    hotline.sandbox.set_agi_mode("process")
    try:
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = {name: pool.submit(hotline.call, name, values) for name, values in jobs.items()}
            return {name: f.result() for name, f in futures.items()}
    finally:
        hotline.sandbox.set_agi_mode("fastagi")
        client.cancel(call_id="another-call-2", seq=1)


@pytest.mark.parametrize("name", sorted(INDEPENDENT))
def test_script_passes_by_process_agi(process_library: dict[str, ScriptResult], name: str) -> None:
    result = process_library[name]
    assert result.passed, report(result)


def test_the_process_agi_replay_ran_by_process_agi(hotline: Hotline, cards: Cards,
                                                   process_library: dict[str, ScriptResult]) -> None:
    assert hotline.sandbox is not None
    assert hotline.sandbox.messages_log().count('"recharge.agi")') >= len(INDEPENDENT)
    assert hotline.card_state(cards.serial("p-one-card")) == "redeemed"


def _step(hotline: Hotline, script: str, source: str) -> int:
    """The number of the first step of ``script`` written ``source``."""
    compiled = hotline.compile(script, {k: "1" * 18 for k in ("CALLER", "ACCOUNT", "PIN", "AMOUNT")})
    return next(n for n, step in enumerate(compiled.steps, start=1) if step.describe() == source)
