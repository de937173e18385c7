"""End-to-end phone tests: SIPp callers through a real Asterisk 22, the AGI dialog, both recharge servers, PostgreSQL.

Every call here is a script from ``tests/calls`` replayed by ``ivr.replay``
against the real Asterisk sandbox (a Debian sid root under chroot, built on
first use, about a minute), which plays the real prompt WAVs and runs the
dialog's AGI under its own Python; the AGI reaches the two recharge
servers (``cli.py serve A`` and ``B``, real processes) on the host's
loopback, and they keep the cards and the stand-in marketing system on the
real PostgreSQL server at 127.0.0.1:5432.  These tests need root, the
Asterisk sandbox, SIPp, PostgreSQL, espeak-ng and sox, and they never skip:
without any of them they fail and say why.

The first tests need none of that: they pin the call-script format
(``ivr.callscript``) and how ``ivr.replay`` judges what a scenario logged.

Each script phones with accounts and caller numbers of its own, so that
wrong PINs counted against one never lock another out, and with cards
prepared through the card services (issued, voided, frozen, in stock, of an
expired batch, held by another call, already used).  The scripts that need
nothing of each other run at once, one SIPp each; the ones that kill
servers run alone.  Timings are the benchmark's business
(``bench/bench_hotline.py``): nothing here asserts how fast a call went.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli import cli
from ivr import replay as replay_module
from ivr.callscript import (
    SCENARIO_LIMIT,
    ExpectText,
    Injection,
    Pause,
    ScriptError,
    compile_script,
    load,
    parse,
)
from ivr.replay import ScriptResult, judge, read_logs, read_trace
from tests.e2e.conftest import BALANCES, CALLS, Hotline

pytestmark = pytest.mark.slow

FACE = 5000  # fen: the main batch's cards
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
    "card-held": "3100000006",
    "unknown-account": "3100000007",
    "decline": "3100000008",
    "service-unavailable": "3100000009",
    "unavailable-at-pin": "3100000009",
    "recharge-failover": "3100000011",
    "recharge-quick": "3100000012",
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
        main = h.issue("E1", 70)
        in_stock = h.stock("S1", 2, face_value=2000)
        h.expire("X1")
        names = ["one-card", "english", "two-a", "two-b", "wrong-then-right", "decline", "failover",
                 "unavailable-at-pin", "used", "voided", "frozen", "held", "quick", "cli-ok", "cli-fail"]
        cards.named = dict(zip(names, main, strict=False))
        cards.named["expired"] = expired[0]
        cards.named["not-issued"] = in_stock[0]
        cards.named["spare"] = main[-1]
        cards.load = main[len(names):len(names) + CONCURRENT]
        h.void(cards.serial("voided"))
        h.freeze(cards.serial("frozen"))

    h = hotline_factory(prepare)
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


# --- the format, without Asterisk ------------------------------------------------------------------

EXAMPLE = """\
# successful recharge
# (a second comment line is not part of the title)
call 95598 from 13800000001
expect prompt=welcome
send 1

expect prompt=enter-account
send ${ACCOUNT}#
expect holder=张*明
expect /amount=[0-9]+/
wait 500ms
expect bye
"""


def test_a_script_is_parsed_into_numbered_steps_with_their_lines() -> None:
    script = parse(EXAMPLE, name="example", path="example.call")
    assert (script.title, script.number, script.caller) == ("successful recharge", "95598", "13800000001")
    assert [(type(s).__name__, s.line) for s in script.steps] == [
        ("ExpectText", 4), ("Digits", 5), ("ExpectText", 7), ("Digits", 8), ("ExpectText", 9), ("ExpectText", 10),
        ("Pause", 11), ("ExpectBye", 12)]
    assert script.steps[0] == ExpectText("^prompt=welcome$", 4, "expect prompt=welcome")
    assert script.steps[4].regexp == r"^holder=张\*明$", "the whole text, literally"
    assert script.steps[5].regexp == "^(amount=[0-9]+)$", "a /regex/ must match the whole text too"
    assert script.steps[6] == Pause(500, 11, "wait 500ms")
    assert script.variables() == {"ACCOUNT"}


@pytest.mark.parametrize(("text", "line", "message"), [
    ("expect prompt=a\nsned 1\nexpect bye", 2, "unknown command 'sned'"),
    ("expect prompt=a\nsend 12a\nexpect bye", 2, "'a' is not a phone key"),
    ("expect prompt=a\nsend\nexpect bye", 2, "'send' needs keys"),
    ("expect /prompt=a\nexpect bye", 1, "closing slash"),
    ("expect prompt=a\nwait soon\nexpect bye", 2, "a duration like 500ms or 2s"),
    ("expect prompt=a\ncall 95598\nexpect bye", 2, "'call' must be the first command"),
    ("call 95598 to 1\nexpect bye", 1, "call NUMBER [from CALLER]"),
    ("expect bye\nexpect prompt=a", 2, "nothing can follow 'expect bye' (line 1)"),
    ("expect prompt=a\nsend 1", 2, "ends with 'expect bye'"),
    ("send ${PIN\nexpect bye", 1, "a variable is written ${NAME}"),
    ("hangup now", 1, "'hangup' takes nothing"),
])
def test_a_bad_script_gets_one_line_naming_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ScriptError) as caught:
        parse(text, path="bad.call")
    assert caught.value.line == line
    assert str(caught.value).startswith(f"bad.call:{line}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_variables_are_bound_at_replay_time_and_each_missing_one_is_named() -> None:
    script = parse(EXAMPLE, path="example.call")
    with pytest.raises(ScriptError, match=r"^example.call:8: \$\{ACCOUNT\} has no value \(give it with --var"):
        compile_script(script, {})
    with pytest.raises(ScriptError, match=r"example.call:8: \$\{ACCOUNT\} is sent as keys"):
        compile_script(script, {"ACCOUNT": "31000000O1"})
    expect_var = parse("expect digits=${ACCOUNT}.\nexpect bye")
    bound = compile_script(expect_var, {"ACCOUNT": "3100000001"})
    assert bound.steps[0].regexp == r"^digits=3100000001\.$", "a value is matched literally"


def test_the_scenario_waits_only_for_the_last_expect_before_each_action() -> None:
    compiled = compile_script(parse(EXAMPLE), {"ACCOUNT": "3100000001"})
    assert compiled.sync_steps == {1, 3}, "welcome before 'send 1', enter-account before the account"
    xml = compiled.xml
    assert xml.count("INFO sip:95598@") == 1 + 11, "one INFO per key"
    assert re.findall(r"Signal=(\S+)", xml) == list("1" + "3100000001#")
    assert 'regexp="^prompt=welcome$"' in xml and 'regexp="^prompt=enter-account$"' in xml
    assert xml.count("<pause") == 12, "300 ms before each key; the wait before an expect compiles to nothing"
    assert xml.count('milliseconds="300"') == 12
    assert "<recv request=\"BYE\" optional=\"true\" next=\"b8\"/>" in xml, "expect bye answers the hotline's BYE"
    for var in set(re.findall(r'assign_to="([^"]+)"', xml)):
        assert len(re.findall(rf"\[\${re.escape(var)}\]|test=\"{re.escape(var)}\"", xml)) >= 1, f"{var} is used"


def test_a_wait_holds_back_the_next_send_and_a_hangup_ends_the_call() -> None:
    xml = compile_script(parse("expect prompt=a\nwait 2s\nsend #\nwait 1.5s\nhangup"), {}).xml
    assert re.findall(r'<pause milliseconds="(\d+)"/>', xml) == ["2000", "300", "1500"]
    assert "BYE sip:95598@" in xml and "4 wait" in xml and "5 hangup" in xml


def test_per_call_values_come_from_an_injection_file_one_field_per_key() -> None:
    script = parse("call 95598 from ${CALLER}\nexpect prompt=enter-pin\nsend ${PIN}#\nexpect bye")
    injection = Injection(("CALLER", "PIN"), (("13800000001", "123"), ("13800000002", "456")))
    compiled = compile_script(script, {}, injection)
    # Each value whole, then (when all rows have it the same length) each of its characters.
    assert compiled.injection_csv == ("SEQUENTIAL\n13800000001;1;3;8;0;0;0;0;0;0;0;1;123;1;2;3;\n"
                                      "13800000002;1;3;8;0;0;0;0;0;0;0;2;456;4;5;6;\n")
    assert "From: <sip:[field0]@" in compiled.xml
    assert re.findall(r"Signal=(\S+)", compiled.xml) == ["[field13]", "[field14]", "[field15]", "#"]
    with pytest.raises(ScriptError, match=r":2: \$\{PIN\} comes from the injection file and cannot be used in expect"):
        compile_script(parse("expect prompt=enter-pin\nexpect digits=${PIN}\nexpect bye"), {}, injection)
    uneven = Injection(("PIN",), (("12",), ("345",)))
    with pytest.raises(ScriptError, match="every injected value needs the same length"):
        compile_script(parse("expect a=b\nsend ${PIN}\nexpect bye"), {}, uneven)


def test_a_script_too_long_for_sipp_is_refused_before_sipp_sees_it() -> None:
    keys = "1" * (SCENARIO_LIMIT // 300)
    with pytest.raises(ScriptError, match="more than SIPp reads"):
        compile_script(parse(f"expect a=b\nsend {keys}\nexpect bye"), {})


def test_every_library_script_compiles() -> None:
    for path in sorted(CALLS.glob("*.call")):
        script = load(path)
        assert script.title, f"{path.name} says what it is for in its first line"
        compiled = compile_script(script, {name: "1" * 18 for name in script.variables()})
        assert len(compiled.xml.encode()) < SCENARIO_LIMIT


T0 = time.mktime(time.strptime("2026-11-23 12:00:00", "%Y-%m-%d %H:%M:%S"))  # the traces' local clock, as epoch


def _log_line(call: str, at: float, event: str) -> str:
    return f"{call} 2026-11-23\t12:00:00.000000\t{at:.6f} {event}"


def _trace_block(at: str, method: str, call: str, cseq: int, body: str = "") -> str:
    return (f"----------------------------------------------- 2026-11-23 {at}\n"
            f"UDP message received [400] bytes :\n\n{method} sip:c@127.0.0.1 SIP/2.0\nCall-ID: {call}\n"
            f"CSeq: {cseq} {method}\nContent-Length: {len(body)}\n\n{body}\n\n")


def test_texts_are_judged_in_the_order_the_dialog_sent_them_not_the_order_they_came() -> None:
    compiled = compile_script(parse("expect a=1\nexpect b=2\nexpect c=3\nsend 1\nexpect d=4\nexpect bye"), {})
    assert compiled.sync_steps == {3}
    t0 = T0
    logs = read_logs("\n".join([
        _log_line("c1", t0, "answer"),
        _log_line("c1", t0 + 0.1, "text c=3 12"),  # a=1 and b=2 came late, as Asterisk sent them again
        _log_line("c1", t0 + 0.1, "3 sync 12"),
        _log_line("c1", t0 + 0.5, "4 sent"),
        _log_line("c1", t0 + 0.7, "text d=4 13"),
        _log_line("c1", t0 + 0.9, "6 bye"),
    ]))
    read_trace(_trace_block("12:00:00.600000", "MESSAGE", "c1", 10, "a=1")
               + _trace_block("12:00:00.600100", "MESSAGE", "c1", 11, "b=2"), logs)
    result = judge(compiled, logs["c1"])
    assert result.passed, result
    assert [t.body for t in result.texts] == ["a=1", "b=2", "c=3", "d=4"]
    assert [s.at_ms for s in result.steps] == [600, 600, 100, 500, 700, 900], "when each text first arrived"


def test_a_failed_step_says_what_came_instead_and_the_rest_are_not_reached() -> None:
    compiled = compile_script(parse("expect a=1\nsend 1\nexpect result=ok\nsend 2\nexpect bye"), {})
    t0 = T0
    logs = read_logs("\n".join([
        _log_line("c1", t0, "answer"),
        _log_line("c1", t0 + 0.1, "text a=1 5"),
        _log_line("c1", t0 + 0.1, "1 sync 5"),
        _log_line("c1", t0 + 0.4, "2 sent"),
        _log_line("c1", t0 + 0.5, "text result=wrong_pin 6"),
        _log_line("c1", t0 + 0.6, "fail hungup"),
    ]))
    read_trace(_trace_block("12:00:00.550000", "BYE", "c1", 7), logs)
    result = judge(compiled, logs["c1"])
    assert not result.passed
    assert [s.status for s in result.steps] == ["PASS", "PASS", "FAIL", "----", "----"]
    assert result.failed_step is not None and result.failed_step.line == 3
    assert result.failed_step.detail == "not seen; the hotline hung up; the hotline sent: result=wrong_pin"


def test_the_command_line_refuses_bad_values_and_bad_scripts_before_any_call(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as usage:
        replay_module.main(["x.call", "--var", "no-equals-sign"])
    assert usage.value.code == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err
    bad = tmp_path / "bad.call"
    bad.write_text("expect prompt=welcome\nsend 1x\nexpect bye\n", encoding="utf-8")
    assert replay_module.main([str(bad), "--workdir", str(tmp_path / "work")]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"replay: error: {bad}:2: 'x' is not a phone key (keys are 0-9, * and #)\n"
    assert captured.out == ""
    assert not (tmp_path / "work").exists()


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
    "card-held": {"PIN": "held"},
    "unknown-account": {"UNKNOWN_ACCOUNT": "9999999999"},
    "decline": {"PIN": "decline"},
}
LOCKOUT = ("wrong-pin-three-times", "locked-out")  # in this order, as one caller
ALONE = {"service-unavailable", "unavailable-at-pin", "recharge-failover"}  # they stop servers


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
    expected = {"decline": "issued", "voided": "voided", "frozen": "frozen", "expired": "issued",
                "not-issued": "in_stock", "held": "issued", "wrong-then-right": "redeemed"}
    states = {name: hotline.card_state(cards.serial(name)) for name in expected}
    assert states == expected
    untouched = [cards.serial(n) for n in ("decline", "voided", "frozen", "expired", "not-issued", "held")]
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


def test_five_wrong_pins_lock_the_caller_and_account_out(hotline: Hotline, cards: Cards, library: Library) -> None:
    for name in LOCKOUT:
        assert library[name].passed, report(library[name])
    # Even the right PIN is now refused, for the account whoever calls.
    answer = hotline.client().quote(call_id="after-lockout", seq=1, account_no=ACCOUNT["locked-out"],
                                    pin=cards.pin("spare"), caller="13900000001")
    assert answer["outcome"] == "locked_out", answer
    assert hotline.card_state(cards.serial("spare")) == "issued"


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
    assert hotline.card_state(cards.serial("unavailable-at-pin")) == "issued"
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


def _step(hotline: Hotline, script: str, source: str) -> int:
    """The number of the first step of ``script`` written ``source``."""
    compiled = hotline.compile(script, {k: "1" * 18 for k in ("CALLER", "ACCOUNT", "PIN", "AMOUNT")})
    return next(n for n, step in enumerate(compiled.steps, start=1) if step.describe() == source)
