"""Tests for ivr.fastagi: a call over a FastAGI connection, calls side by side, bad connections, the command.

A scripted stand-in for Asterisk connects to the service over TCP, sends
the request header and answers each command as Asterisk would.  The
recharge servers named in the configuration refuse connections, so a call
runs to "service unavailable" after the account is confirmed; the dialog
itself is tested in ``test_dialog``, the whole path by the SIPp call scripts.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.agi_main import prepare
from ivr.fastagi import PROBE_FAILURES, FastAGIServer, probe
from testkit.ports import free_tcp_port
from tests.ivr.test_agi_main import CA, KEY_HEX, python_path, write_config

HEADER = "agi_network: yes\nagi_network_script: recharge\nagi_request: agi://127.0.0.1/recharge\n" \
         "agi_channel: PJSIP/tester-00000001\nagi_language: zh\nagi_uniqueid: {uid}\nagi_callerid: 13800000000\n\n"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    key = tmp_path / "api.key"
    key.write_text(KEY_HEX + "\n")
    key.chmod(0o600)
    return write_config(tmp_path, f"[agi]\nservers = 127.0.0.1:{free_tcp_port()}\napi_key_file = {key}\n"
                                  f"ca_file = {CA}\nclient = hotline\ntimeout = 0.2\ntotal_timeout = 0.4\n")


@pytest.fixture
def server(config: Path) -> Iterator[FastAGIServer]:
    s = FastAGIServer(prepare(str(config)), "127.0.0.1", 0, max_calls=3, header_timeout=0.5, answer_timeout=1.0)
    thread = threading.Thread(target=s.serve_forever, daemon=True)
    thread.start()
    yield s
    s.shutdown()
    thread.join(5)


class Asterisk:
    """One call's Asterisk side: connects, sends the header, answers commands (``GET DATA`` from ``entries``)."""

    def __init__(self, address: tuple[str, int], uid: str = "1700000000.1") -> None:
        self.sock = socket.create_connection(address, timeout=5)
        self.file = self.sock.makefile("rw", encoding="utf-8", newline="\n")
        self.file.write(HEADER.format(uid=uid))
        self.file.flush()
        self.commands: list[tuple[float, str]] = []

    def command(self) -> str:
        line = self.file.readline().strip()
        self.commands.append((time.monotonic(), line))
        return line

    def answer(self, text: str = "200 result=0") -> None:
        self.file.write(text + "\n")
        self.file.flush()

    def run(self, entries: list[str]) -> list[str]:
        while line := self.command():
            self.answer(f"200 result={entries.pop(0)}" if line.startswith("GET DATA") and entries else "200 result=0")
        self.close()
        return [c for _t, c in self.commands if c]

    def closed_within(self, seconds: float) -> float:
        """Seconds until the service closes the connection; fails if it does not within ``seconds``."""
        start = time.monotonic()
        self.sock.settimeout(seconds)
        try:
            while self.sock.recv(4096):
                pass
        except ConnectionResetError:
            pass  # closed with our last line unread: a reset is a close too
        finally:
            self.close()
        return time.monotonic() - start

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_a_call_runs_the_dialog_and_marks_the_channel(server: FastAGIServer) -> None:
    commands = Asterisk(server.address).run(["3100000001", "1"])
    assert commands[0] == 'SET VARIABLE "RECHARGE_DIALOG" "fastagi"'
    texts = [c for c in commands if c.startswith("SEND TEXT")]
    assert texts[:2] == ['SEND TEXT "prompt=welcome"', 'SEND TEXT "result=lang-zh"']
    assert 'SEND TEXT "prompt=service-unavailable"' in texts and commands[-1] == "HANGUP"
    assert not any("3100000001" in c and "SEND TEXT" not in c and "SAY DIGITS" not in c for c in commands)


def test_a_stalled_call_does_not_delay_another_and_is_dropped_within_its_bound(server: FastAGIServer) -> None:
    slow = Asterisk(server.address, "1.1")
    assert slow.command().startswith("SET VARIABLE")  # and never answered
    started = time.monotonic()
    other = Asterisk(server.address, "1.2")
    commands = []
    while not (line := other.command()).startswith("STREAM FILE welcome"):
        commands.append(line)
        other.answer()
    assert time.monotonic() - started < 0.5, "the other call's first prompt waits for nobody"
    assert slow.closed_within(3.0) < 3.0  # answer_timeout 1 s
    other.answer("HANGUP")
    assert other.closed_within(3.0) < 3.0
    assert Asterisk(server.address, "1.3").run(["3100000001", "1"])[-1] == "HANGUP", "the service goes on serving"


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00",
                                     b"agi_request: x\n" + b"a" * 10000, b"", b"agi_uniqueid: 1\n"])
def test_garbage_or_silence_is_dropped_within_the_header_bound(server: FastAGIServer, garbage: bytes) -> None:
    with socket.create_connection(server.address, timeout=3) as sock:
        sock.sendall(garbage)
        start = time.monotonic()
        assert sock.recv(4096) == b"", "nothing is said to a connection that is not Asterisk"
        assert time.monotonic() - start < 1.5  # header_timeout 0.5 s
    assert Asterisk(server.address).run(["3100000001", "1"])[-1] == "HANGUP"
    assert server.dropped == 1


def test_calls_beyond_the_limit_are_refused_at_once(server: FastAGIServer) -> None:
    held = [Asterisk(server.address, f"2.{i}") for i in range(3)]
    for call in held:
        assert call.command().startswith("SET VARIABLE")
    with socket.create_connection(server.address, timeout=1.0) as extra:
        start = time.monotonic()
        assert extra.recv(4096) == b""
        assert time.monotonic() - start < 1.0
    for call in held:
        call.answer("HANGUP")
        call.closed_within(3.0)
    assert server.refused == 1


def module_env() -> dict[str, str]:
    """The environment ``python3 -m ivr.fastagi`` runs in: this tree on the path, nothing else inherited."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": python_path(), "LANG": "C"}


def run_module(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ivr.fastagi", *args], capture_output=True, text=True, env=module_env(),
                          timeout=30, **kw)  # type: ignore[call-overload]


def test_help_has_an_example_and_a_bad_configuration_is_one_line(tmp_path: Path) -> None:
    shown = run_module("--help")
    assert shown.returncode == 0 and "Example: python3 -m ivr.fastagi --config" in shown.stdout
    bad = run_module("--config", str(tmp_path / "missing.conf"))
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "cannot read the AGI configuration" in bad.stderr
    assert "Traceback" not in bad.stderr
    wrong = run_module("--listen", "nowhere")
    assert wrong.returncode == 2 and "is not HOST:PORT" in wrong.stderr and "Traceback" not in wrong.stderr


@contextlib.contextmanager
def supervisor(config: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python3 -m ivr.fastagi --supervise`` on a free port: (the supervisor, the port); stopped with SIGTERM."""
    port = free_tcp_port()
    parent = subprocess.Popen([sys.executable, "-m", "ivr.fastagi", "--config", str(config), "--listen",
                               f"127.0.0.1:{port}", "--supervise", *extra], env=module_env(), stderr=subprocess.DEVNULL)
    try:
        yield parent, port
    finally:
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(10) == 0


def test_the_supervisor_starts_the_service_again_when_it_dies(config: Path) -> None:
    with supervisor(config) as (parent, port):
        first = wait_for_child(parent.pid, None)
        assert Asterisk(("127.0.0.1", port)).run(["3100000001", "1"])[-1] == "HANGUP"
        os.kill(first, signal.SIGKILL)
        second = wait_for_child(parent.pid, first)
        assert second != first
        assert Asterisk(("127.0.0.1", port)).run(["3100000001", "1"])[-1] == "HANGUP"


def test_the_health_probe_is_answered_and_is_not_a_call(server: FastAGIServer) -> None:
    assert probe(server.address, 2.0)
    with socket.create_connection(server.address, timeout=2) as sock:
        sock.sendall(b"agi_network: yes\nagi_network_script: health\nagi_request: agi://127.0.0.1/health\n\n")
        assert sock.makefile("rb").read() == b"NOOP healthy\n"  # then closed
    assert (server.served, server.dropped) == (0, 0)
    assert not probe(("127.0.0.1", free_tcp_port()), 0.5), "nobody listening is no answer"


def test_a_frozen_service_is_killed_and_started_again(config: Path) -> None:
    with supervisor(config, "--probe-every", "0.3") as (parent, port):
        first = wait_for_child(parent.pid, None)
        time.sleep(0.5)  # it has answered a probe
        os.kill(first, signal.SIGSTOP)  # alive, listening, and answering nobody
        start = time.monotonic()
        second = wait_for_child(parent.pid, first, timeout=10)
        assert time.monotonic() - start < 0.3 * (PROBE_FAILURES + 2) + 5  # its probes, then a new start
        assert not Path(f"/proc/{first}").exists() or "Z" in Path(f"/proc/{first}/stat").read_text().split()[2]
        assert Asterisk(("127.0.0.1", port)).run(["3100000001", "1"])[-1] == "HANGUP"
        assert second != first


def test_a_full_service_is_not_taken_for_a_frozen_one(config: Path) -> None:
    with supervisor(config, "--probe-every", "0.5", "--max-calls", "1") as (parent, port):
        first = wait_for_child(parent.pid, None)
        held = Asterisk(("127.0.0.1", port), "3.1")
        try:
            assert held.command().startswith("SET VARIABLE")  # the one place is taken, and the call waits
            time.sleep(0.5 * (PROBE_FAILURES + 3))
            assert wait_for_child(parent.pid, None) == first, "refused at once is an answer"
            held.answer("HANGUP")
            held.closed_within(3.0)
        finally:
            held.close()


def test_a_probe_of_a_full_service_is_answered(server: FastAGIServer) -> None:
    held = [Asterisk(server.address, f"4.{i}") for i in range(3)]
    try:
        for call in held:
            assert call.command().startswith("SET VARIABLE")
        # Closed at once, before or after the probe's header arrived (a reset then): either is an answer.
        assert all(probe(server.address, 1.0) for _ in range(20))
        assert server.refused == 20
    finally:
        for call in held:
            call.close()


def wait_for_child(pid: int, not_this: int | None, timeout: float = 15.0) -> int:
    """The pid of ``pid``'s child once it listens (another than ``not_this``)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        listening = [int(c) for c in children if int(c) != not_this and _listens(int(c))]
        if listening:
            return listening[0]
        time.sleep(0.1)
    raise AssertionError("the supervisor started no service")


def _listens(pid: int) -> bool:
    try:
        inodes = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError:
        return False
    listening = {line.split()[9] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[3] == "0A"}
    return any(f"socket:[{inode}]" in inodes for inode in listening)
