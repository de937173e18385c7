"""Two Asterisk front ends behind the Kamailio dispatcher: calls spread over both, and one killed under calls.

The hotline here is the e2e one with two Asterisks (the e2e root and a copy
of it, ``Hotline.start_front_ends``) behind Kamailio (``testkit.dispatcher``);
every call is placed on the dispatcher.  Killing an Asterisk with SIGKILL is
a front-end machine dying: its calls in progress are lost with it (the
caller hears nothing more; a recharge it had committed stays committed, one
it had only quoted is released when its hold lapses), the calls on the other
finish, and new calls are answered by the other within a bound.  The books
must hold whatever happened: every caller told "ok" has the recharge
recorded and posted once, no card is spent twice, and the day reconciles.
How fast new calls are answered again is measured in ``bench/bench_front_ends.py``;
here it is only bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cardmgmt.keys import load_api_key
from ivr.client import RechargeClient, tls_context
from testkit import books
from testkit.callscript import Injection, compile_script, load
from testkit.frontends import second_root
from testkit.hotline import Hotline
from testkit.ports import free_udp_port
from testkit.replay import ScriptResult, run_compiled
from testkit.sandbox import Sandbox

pytestmark = pytest.mark.slow

ACCOUNTS = [f"31000000{i:02d}" for i in (1, 2, 3, 7, 12)]
SPREAD = 4  # calls placed one after another: round robin puts two on each front end
LOAD = 8  # calls under way when a front end is killed
ANSWERED_AGAIN_WITHIN = 6.0  # seconds from the kill to a new call answered (the bench measures; goal 3 s)

ANSWER_ONLY = """\
# A call that is answered and hangs up after the welcome: what a probe of the front ends needs.
call 95598 from ${CALLER}
expect prompt=welcome
hangup
"""


def topology(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m testkit.topology ...`` as a process of its own, as a tester runs it."""
    return subprocess.run([sys.executable, "-m", "testkit.topology", *args], capture_output=True, text=True,
                          timeout=600, check=False)


def test_the_command_line_starts_shows_and_stops_the_phone_edge(e2e_sandbox_root: Path, prompt_sounds: Path,
                                                                 tmp_path: Path) -> None:
    """``topology phones``, before this module's hotline takes the same roots."""
    where = ["--dir", str(tmp_path / "edge")]
    started = topology("phones", "start", *where, "--root", str(e2e_sandbox_root), "--prompts", str(prompt_sounds),
                       "--port", str(free_udp_port()))
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith("call 95598 at udp:127.0.0.2:")
        shown = topology("phones", "status", *where, "--json")
        assert shown.returncode == 0, shown.stderr
        status = json.loads(shown.stdout)
        assert status["dispatcher"]["running"]
        assert [(a["running"], a["dispatcher_sees"]) for a in status["asterisks"]] == [(True, "live")] * 2
    finally:
        stopped = topology("phones", "stop", *where)
    assert stopped.returncode == 0 and stopped.stdout == "stopped\n", stopped.stderr
    assert "run start first" in topology("phones", "status", *where).stderr
    assert not any(Sandbox(root).is_running() for root in (e2e_sandbox_root, second_root(e2e_sandbox_root)))
    assert not [p for p in Path("/proc").glob("[0-9]*") if _is_kamailio_of(p, tmp_path / "edge")]


def test_the_whole_topology_starts_takes_a_call_and_a_request_and_stops(e2e_sandbox_root: Path, tmp_path: Path) -> None:
    """``topology all``: the failover database, the server pair on it, two Asterisks behind the dispatcher."""
    where = ["--dir", str(tmp_path / "all")]
    started = topology("all", "start", *where, "--root", str(e2e_sandbox_root))
    try:
        assert started.returncode == 0, started.stderr
        shown = topology("all", "status", *where, "--json")
        assert shown.returncode == 0, shown.stderr
        status = json.loads(shown.stdout)
        assert status["db"]["healthy"] and [s["running"] for s in status["servers"]] == [True, True]
        assert [a["dispatcher_sees"] for a in status["phones"]["asterisks"]] == ["live", "live"]
        host, port = status["call"].split(":")
        probe = tmp_path / "answer-only.call"
        probe.write_text(ANSWER_ONLY, encoding="utf-8")
        answered = run_compiled(compile_script(load(probe), {"CALLER": "13770000000"}), host, int(port),
                                tmp_path / "call")
        assert answered.passed, answered.report()
        keys = tmp_path / "all" / "install" / "keys"
        client = RechargeClient([("127.0.0.1", s["port"]) for s in status["servers"]], load_api_key(keys),
                                tls=tls_context(str(keys / "tls-ca.pem")))
        assert client.account(call_id="topology-all", account_no=ACCOUNTS[0])["outcome"] == "ok"
    finally:
        stopped = topology("all", "stop", *where)
    assert stopped.returncode == 0, stopped.stderr
    assert not (tmp_path / "all").exists()
    assert not any(Sandbox(root).is_running() for root in (e2e_sandbox_root, second_root(e2e_sandbox_root)))


def _is_kamailio_of(proc: Path, workdir: Path) -> bool:
    try:
        return str(workdir) in (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


@pytest.fixture(scope="module")
def hotline(hotline_factory: Callable[..., Hotline]) -> Hotline:
    cards: list[tuple[str, str]] = []

    def prepare(h: Hotline) -> None:
        cards.extend(h.issue("F1", SPREAD + LOAD + 2))

    h = hotline_factory(prepare, front_ends=True)
    h.cards = cards  # type: ignore[attr-defined]
    return h


def injection(cards: list[tuple[str, str]], prefix: str) -> Injection:
    return Injection(("CALLER", "ACCOUNT", "PIN"),
                     tuple((f"{prefix}{i:04d}", ACCOUNTS[i % len(ACCOUNTS)], pin) for i, (_s, pin) in enumerate(cards)))


def row(call_id: str) -> int:
    """The injection row a call used: SIPp numbers calls from 1 (``[call_number]-...``) and reads rows in order."""
    return int(call_id.split("-", 1)[0]) - 1


def served_by(hotline: Hotline, caller: str) -> list[int]:
    """Which front ends (0, 1) logged a call from ``caller``."""
    return [i for i, s in enumerate(hotline.sandboxes) if "hotline call" in s.messages_log() and f" from {caller}" in s.messages_log()]


def books_hold(hotline: Hotline, serials: list[str], told_ok: set[str]) -> None:
    """The money's invariants (``testkit.books``), every caller told ok recorded, and the day reconciled."""
    assert hotline.card_engine is not None and hotline.marketing_engine is not None
    recharges = books.settled(hotline.card_engine, hotline.marketing_engine, serials)
    assert told_ok <= {r.card_serial for r in recharges.values()}, "a caller told ok has the recharge recorded"
    code, out = books.reconciles(hotline.inst.env())
    assert code == 0, out


def test_the_dispatcher_sends_new_calls_round_robin_to_both_front_ends(hotline: Hotline) -> None:
    assert hotline.dispatcher is not None and len(hotline.dispatcher.live()) == 2
    cards = hotline.cards[:SPREAD]  # type: ignore[attr-defined]
    result = hotline.call("recharge-quick", {}, injection=injection(cards, "1372000"), calls=SPREAD, concurrent=1)
    assert result.passed, result.report()
    places = [served_by(hotline, f"1372000{i:04d}") for i in range(SPREAD)]
    assert sorted(p[0] for p in places) == [0, 0, 1, 1] and all(len(p) == 1 for p in places), places
    books_hold(hotline, [s for s, _pin in cards], {s for s, _pin in cards})


def test_an_asterisk_killed_under_calls_loses_its_calls_and_new_calls_go_to_the_other(hotline: Hotline,
                                                                                      tmp_path: Path) -> None:
    assert hotline.dispatcher is not None
    cards = hotline.cards[SPREAD:SPREAD + LOAD]  # type: ignore[attr-defined]
    victim = hotline.sandboxes[0]
    outcome: dict[str, object] = {}

    def load() -> None:
        outcome["load"] = hotline.call("recharge-quick", {}, injection=injection(cards, "1373000"), calls=LOAD,
                                       concurrent=LOAD, rate=4)

    loader = threading.Thread(target=load)
    loader.start()
    deadline = time.monotonic() + 30  # until every call of the load is under way on one front end or the other
    while time.monotonic() < deadline and sum(len(served_by(hotline, f"1373000{i:04d}")) for i in range(LOAD)) < LOAD:
        time.sleep(0.1)
    victims = {f"1373000{i:04d}" for i in range(LOAD) if served_by(hotline, f"1373000{i:04d}") == [0]}
    assert victims, "calls were under way on the front end about to die"
    victim.kill()
    killed_at = time.time()
    probe = tmp_path / "answer-only.call"
    probe.write_text(ANSWER_ONLY, encoding="utf-8")
    answered_at = None
    for n in range(20):
        answer = hotline.call(probe, {"CALLER": f"1374000{n:04d}"})
        if answer.passed and answer.calls[0].answered is not None:
            answered_at = answer.calls[0].answered
            break
    loader.join(120)
    assert answered_at is not None, "a new call was answered after the kill"
    assert answered_at - killed_at <= ANSWERED_AGAIN_WITHIN, f"answered {answered_at - killed_at:.1f} s after the kill"
    assert hotline.dispatcher.wait_live(1) == [hotline.dispatcher.uris[1]], "the dead front end is probed down"

    result = outcome["load"]
    assert isinstance(result, ScriptResult)
    lost = {row(c.call_id) for c in result.calls if not c.passed}
    assert {f"1373000{i:04d}" for i in lost} == victims, result.report()
    told_ok = {cards[row(c.call_id)][0] for c in result.calls if any(t.body == "result=ok" for t in c.texts)}
    assert len(told_ok) >= LOAD - len(victims)
    books_hold(hotline, [s for s, _pin in cards], told_ok)

    # Started again, the front end is probed live and takes calls again.
    victim.start()
    victim.start_fastagi()
    assert len(hotline.dispatcher.wait_live(2)) == 2
