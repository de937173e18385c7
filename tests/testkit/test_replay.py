"""Unit tests for testkit.replay: judging what a scenario logged, and the replay command's refusals, without Asterisk.

The judging tests feed ``read_logs``/``read_trace`` the lines a SIPp run
writes; the command tests call ``main`` (``python -m testkit.replay``) and
``run_job`` with inputs that are refused before any call, and probe a fake
SIP server on a loopback UDP socket.  A replay through the real Asterisk is
in ``tests/e2e/test_hotline.py``; ``cli.py replay`` is in ``tests/test_cli.py``.
"""

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit import replay as replay_module
from testkit.callscript import compile_script, parse
from testkit.ports import free_udp_port
from testkit.replay import (
    KEYED_FILES,
    ReplayError,
    ReplayJob,
    forget_keys,
    judge,
    probe,
    read_logs,
    read_secrets,
    read_trace,
    run_job,
    run_sipp,
    sipp_complaint,
)

CALLS = Path(__file__).resolve().parents[1] / "calls"
PIN = "918273645546372819"

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


# --- the command: refused before any call ------------------------------------------------------


def test_bad_values_are_usage_errors_and_bad_scripts_are_refused_before_any_call(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as usage:
        replay_module.main(["x.call", "--var", "no-equals-sign"])
    assert usage.value.code == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        replay_module.main(["x.call", "--concurrent", "0"])
    assert usage.value.code == 2
    capsys.readouterr()
    good, bad = CALLS / "silence.call", tmp_path / "bad.call"
    bad.write_text("expect prompt=welcome\nsend 1x\nexpect bye\n", encoding="utf-8")
    work = tmp_path / "work"
    assert replay_module.main([str(good), str(bad), "--var", "CALLER=1", "--workdir", str(work)]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"replay: error: {bad}:2: 'x' is not a phone key (keys are 0-9, * and #)\n"
    assert captured.out == ""
    assert not work.exists(), "nothing was phoned: the good script before the bad one did not run either"


def test_nothing_listening_is_refused_in_a_second(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_udp_port()
    started = time.monotonic()
    code = replay_module.main([str(CALLS / "silence.call"), "--var", "CALLER=1", "--port", str(port)])
    assert code == 1 and time.monotonic() - started < 2
    assert capsys.readouterr().err == (f"replay: error: nothing listens for SIP on udp 127.0.0.1:{port} "
                                       "(is Asterisk running? python -m testkit.sandbox start)\n")


def test_a_missing_sipp_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_module, "SIPP", "no-such-sipp")
    with pytest.raises(ReplayError, match="^no-such-sipp is not installed"):
        run_job(ReplayJob((CALLS / "silence.call",), variables={"CALLER": "1"}))


# --- secrets ----------------------------------------------------------------------------------------


def test_secrets_are_read_a_line_each_and_never_shown() -> None:
    assert read_secrets(["PIN", "PIN2"], io.StringIO(f"{PIN}\n 123 \n")) == {"PIN": PIN, "PIN2": "123"}
    assert read_secrets(["PIN"], io.StringIO(""), ask=lambda name: PIN) == {"PIN": PIN}
    for names, text, given, message in [
        (["PIN", "PIN2"], f"{PIN}\n", (), "standard input ended before the value of PIN2"),
        (["PIN"], "\n", (), "the value of PIN is empty"),
        (["PIN"], f"{PIN}\n", ("PIN",), "PIN is given twice"),
        (["PIN", "PIN"], f"{PIN}\n{PIN}\n", (), "PIN is given twice"),
        (["P-1"], f"{PIN}\n", (), "'P-1': expected a variable name"),
    ]:
        stream = io.StringIO(text)
        with pytest.raises(ReplayError) as caught:
            read_secrets(names, stream, given=given)
        assert message in str(caught.value) and PIN not in str(caught.value)
        if "twice" in message or "name" in message:
            assert stream.tell() == 0, "a bad name is refused before anything is read"


def test_forget_keys_deletes_the_files_that_held_the_keys_and_keeps_the_rest(tmp_path: Path) -> None:
    kept = ["call.logs.log", "call.screen.log"]
    for name in [p.format(name="call") for p in KEYED_FILES] + kept:
        (tmp_path / name).write_text("x")
    forget_keys(tmp_path, "call")
    assert sorted(p.name for p in tmp_path.iterdir()) == kept


# --- probing for a SIP server -----------------------------------------------------------------------


@pytest.fixture
def sip_server() -> Iterator[tuple[int, list[bytes]]]:
    """A UDP socket on loopback that answers every request with ``404 Not Found``; its port and what it received."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    received: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            received.append(data)
            sock.sendto(b"SIP/2.0 404 Not Found\r\nContent-Length: 0\r\n\r\n", peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1], received
    stop.set()
    thread.join(5)
    sock.close()


def test_any_sip_answer_passes_the_probe(sip_server: tuple[int, list[bytes]]) -> None:
    port, received = sip_server
    probe("127.0.0.1", port)
    assert len(received) == 1 and received[0].startswith(b"OPTIONS sip:95598@127.0.0.1:")
    assert b"\r\nCSeq: 1 OPTIONS\r\n" in received[0] and received[0].endswith(b"\r\n\r\n")


def test_a_silent_port_fails_the_probe_after_its_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, so no ICMP refusal: it just never answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ReplayError, match=rf"^no SIP answer from udp 127.0.0.1:{port} within 0.6 s"):
            probe("127.0.0.1", port, timeout=0.6)
        assert 0.5 < time.monotonic() - started < 2


# --- running SIPp (no Asterisk: nothing answers) -----------------------------------------------------


def test_sipp_runs_in_a_relative_workdir_and_a_scenario_it_refuses_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    xml = compile_script(parse("expect prompt=a\nsend 1\nexpect bye"), {}).xml
    run = run_sipp(xml, free_udp_port(), Path("work"), timeout=1.0)
    assert run.started, run.screen
    assert run.workdir == tmp_path / "work"
    assert (tmp_path / "work" / "call.xml").stat().st_mode & 0o777 == 0o600, "a scenario holds the keys it sends"
    broken = run_sipp("<scenario>", free_udp_port(), Path("work"), timeout=1.0, name="broken")
    assert not broken.started and not broken.ok
    assert sipp_complaint(broken).startswith("Unable to load or parse"), broken.screen


# --- what the caller heard (testkit.hearing's sounds, judged without Asterisk) -----------------------------


def _heard(*sounds: tuple[str, str, float]) -> list:
    from testkit.hearing import Heard

    return [Heard(sid, lang, at, at + 0.5, 1.0, 0.999, True) for sid, lang, at in sounds]


def test_an_audible_expect_is_checked_in_the_call_language_and_says_what_was_heard() -> None:
    from testkit.replay import _Ear

    heard = _heard(("welcome", "zh", 0.1), ("enter-account", "en", 1.0), ("you-entered", "en", 5.0),
                   ("digits/3", "en", 6.0), ("digits/1", "en", 6.6), ("confirm-account", "zh", 8.0))
    ear = _Ear(heard, 0.0)
    assert ear.lang == "en"
    assert ear.check("prompt=welcome", 0.05) == (True, 0.1, "heard welcome (zh) at 0.10 s, match 0.999")
    ok, _, said = ear.check("prompt=enter-account", 0.95)
    assert ok and said.startswith("heard enter-account (en)")
    ok, _, said = ear.check("prompt=you-entered", None)
    assert ok
    ok, _, said = ear.check("digits=31", None)
    assert ok and said.startswith("heard digits 31 (3 1 at 6.00 s")
    ok, _, said = ear.check("prompt=confirm-account", 7.9)
    assert not ok and said == "heard confirm-account (zh) at 8.00 s, match 0.999, but the call is in en"


def test_a_prompt_not_played_fails_naming_what_came_instead() -> None:
    from testkit.replay import _Ear

    ear = _Ear(_heard(("enter-pin", "zh", 1.0), ("goodbye", "zh", 9.0)), 0.0)
    ok, at, said = ear.check("prompt=enter-account", 0.9)
    assert not ok and at is None
    assert said == "enter-account not heard; heard instead: enter-pin (zh) at 1.00 s, match 0.999; goodbye (zh) at 9.00 s, match 0.999"


def test_amounts_are_read_back_as_values_one_after_another() -> None:
    from testkit.replay import _Ear

    ear = _Ear(_heard(("card-value", "zh", 0.0), ("digits/50", "zh", 2.0), ("currency-yuan", "zh", 2.6),
                      ("digits/1", "zh", 3.2), ("currency-fen", "zh", 3.8), ("digits/60", "zh", 6.0),
                      ("currency-yuan", "zh", 6.6)), 0.0)
    assert ear.check("prompt=card-value", None)[0]
    ok, _, said = ear.check("amount=5000", None)
    assert ok and said.startswith("heard amount 5000 (50 currency-yuan")
    ok, _, said = ear.check("amount=1", None)
    assert ok, said
    ok, _, said = ear.check("amount=5000", None)
    assert not ok and said.startswith("heard amount 6000 (60 currency-yuan") and said.endswith("not 5000")


def test_a_prompt_keyed_over_before_it_began_is_not_a_failure_of_what_was_heard() -> None:
    from testkit.media import Key
    from testkit.replay import _keyed_over

    heard = _heard(("enter-account", "zh", 10.5))
    assert _keyed_over(10.0, [Key("1", 10.3, "info")], heard) is not None  # the key came before any sound
    assert _keyed_over(10.0, [Key("1", 10.6, "info")], heard) is None  # the prompt had begun: it must be heard
    assert _keyed_over(10.0, [Key("1", 12.0, "info")], []) is None  # no key soon after: the prompt is missing
