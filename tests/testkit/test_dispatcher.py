"""The Kamailio dispatcher on its own: probes mark front ends live and down, no live front end is a 503, bad set-up is one line.

A real Kamailio (Debian's ``kamailio``) with front ends that are plain UDP
sockets of this test: one answers the dispatcher's OPTIONS probes with
200, as an Asterisk does, the other says nothing, as a dead machine.  The
calls through it to real Asterisks are in ``tests/e2e/test_front_ends.py``.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.dispatcher import Dispatcher, DispatcherError
from testkit.sandbox import DISPATCHER_ADDR


class FrontEnd:
    """A UDP socket on 127.0.0.1 that answers every OPTIONS with 200 while ``alive``."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.alive = True
        self.probes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            text = data.decode("utf-8", "replace")
            if not text.startswith("OPTIONS "):
                continue
            self.probes += 1
            if not self.alive:
                continue
            head = [line for line in text.split("\r\n") if re.match(r"(?i)(via|from|to|call-id|cseq):", line)]
            self.sock.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join(head) + "\r\nContent-Length: 0\r\n\r\n").encode(), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def front_ends() -> Iterator[list[FrontEnd]]:
    made = [FrontEnd(), FrontEnd()]
    yield made
    for f in made:
        f.close()


def test_probes_take_a_silent_front_end_out_and_bring_it_back(tmp_path: Path, front_ends: list[FrontEnd]) -> None:
    a, b = front_ends
    b.alive = False
    with Dispatcher(tmp_path, [("127.0.0.1", a.port), ("127.0.0.1", b.port)]) as d:
        assert d.wait_live(1, timeout=10) == [f"sip:127.0.0.1:{a.port}"]
        assert d.states()[f"sip:127.0.0.1:{b.port}"] == "down"
        b.alive = True
        assert len(d.wait_live(2, timeout=10)) == 2, "a front end that answers again is put back"
        assert a.probes >= 2 and b.probes >= 2


def test_with_no_live_front_end_a_call_is_refused_503_with_retry_after(tmp_path: Path,
                                                                      front_ends: list[FrontEnd]) -> None:
    for f in front_ends:
        f.alive = False
    with Dispatcher(tmp_path, [("127.0.0.1", f.port) for f in front_ends]) as d:
        d.wait_live(0, timeout=10)
        caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        caller.bind(("127.0.0.1", 0))
        caller.settimeout(5)
        port = caller.getsockname()[1]
        invite = (f"INVITE sip:95598@{DISPATCHER_ADDR}:{d.port} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-test-1;rport\r\n"
                  f"From: <sip:13800138000@127.0.0.1:{port}>;tag=t1\r\nTo: <sip:95598@{DISPATCHER_ADDR}>\r\n"
                  "Call-ID: no-front-end-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
                  f"Contact: <sip:13800138000@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n")
        caller.sendto(invite.encode(), (DISPATCHER_ADDR, d.port))
        answers = []
        while not any(a.startswith("SIP/2.0 503") for a in answers):
            answers.append(caller.recv(65535).decode())
        caller.close()
    refused = answers[-1]
    assert "No hotline front end available" in refused and "Retry-After: 5" in refused


def test_bad_set_up_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(DispatcherError, match="at least one Asterisk front end"):
        Dispatcher(tmp_path, [])
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind((DISPATCHER_ADDR, 0))
    try:
        with pytest.raises(DispatcherError) as e:
            Dispatcher(tmp_path, [("127.0.0.1", 9)], port=busy.getsockname()[1]).start(timeout=5)
        assert "\n" not in str(e.value) and "kamailio" in str(e.value)
    finally:
        busy.close()
