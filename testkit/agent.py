"""An agent's phone for the transfer tests (转人工): a SIPp UAS where the sandbox's ``agent`` endpoint points.

``asterisk_conf/pjsip.conf`` sends ``Dial(PJSIP/agent)`` to
``sip:agent@127.0.0.1:<Sandbox.agent_port>``; this module puts a SIPp
there for the length of a call:

- ``answer=True`` picks up (180, then 200 with SDP) and stays on the line
  until the caller, bridged to it, hangs up (Asterisk's BYE): a run that
  passed proves the agent was reached and talked to.
- ``answer=False`` rings (180) and never picks up; the dialplan's Dial gives up
  after ``AGENT_RING`` seconds and CANCELs, which it answers (200, 487).

::

    with AgentPhone(sandbox.agent_port, workdir, answer=True) as agent:
        result = hotline.call("transfer-to-agent", variables)
    assert agent.run.ok and agent.run.calls == 1, agent.run.explain()
"""

# test-case-name: tests.e2e.test_hotline

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import TracebackType

from testkit.callscript import _cdata
from testkit.replay import SIPP, SippRun

_REPLY = ["[last_Via:]", "[last_From:]", "[last_To:];tag=[pid]SIPpTag01[call_number]", "[last_Call-ID:]", "[last_CSeq:]"]
_CONTACT = "Contact: <sip:agent@[local_ip]:[local_port];transport=[transport]>"
_SDP = ["v=0", "o=agent 53655765 2353687637 IN IP[local_ip_type] [local_ip]", "s=-",
        "c=IN IP[media_ip_type] [media_ip]", "t=0 0", "m=audio [media_port] RTP/AVP 0", "a=rtpmap:0 PCMU/8000"]


def _send(lines: list[str], attrs: str = "") -> str:
    return f"  <send{attrs}>\n{_cdata(lines)}  </send>\n"


def scenario(answer: bool) -> str:
    """The UAS scenario: answer and wait for the BYE, or ring until CANCELled."""
    ringing = _send(["SIP/2.0 180 Ringing", *_REPLY, _CONTACT, "Content-Length: 0"])
    body = ['<?xml version="1.0" encoding="UTF-8" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n',
            '<scenario name="agent">\n', '  <recv request="INVITE" crlf="true"/>\n', ringing]
    if answer:
        body += [
            _send(["SIP/2.0 200 OK", *_REPLY, _CONTACT, "Content-Type: application/sdp", "Content-Length: [len]", "",
                   *_SDP], ' retrans="500"'),
            '  <recv request="ACK"/>\n',
            '  <recv request="BYE"/>\n',  # the caller, bridged to this phone, hangs up
            _send(["SIP/2.0 200 OK", *_REPLY, "Content-Length: 0"]),
        ]
    else:
        body += [
            '  <recv request="CANCEL"/>\n',
            _send(["SIP/2.0 200 OK", *_REPLY, "Content-Length: 0"]),
            _send(["SIP/2.0 487 Request Terminated", "[last_Via:]", "[last_From:]",
                   "[last_To:];tag=[pid]SIPpTag01[call_number]", "[last_Call-ID:]", "CSeq: [cseq] INVITE",
                   "Content-Length: 0"]),
            '  <recv request="ACK"/>\n',
        ]
    body.append("</scenario>\n")
    return "".join(body)


class AgentPhone:
    """SIPp as the agent's phone on 127.0.0.1:``port`` for one call; ``run`` is its result after the ``with``."""

    def __init__(self, port: int, workdir: Path, *, answer: bool, timeout: float = 180.0) -> None:
        self.port, self.workdir, self.answer, self.timeout = port, Path(workdir).absolute(), answer, timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.run: SippRun | None = None

    def __enter__(self) -> AgentPhone:
        self.workdir.mkdir(parents=True, exist_ok=True)
        xml = self.workdir / "agent.xml"
        xml.write_text(scenario(self.answer), encoding="utf-8")
        self.errors = self.workdir / "agent.errors.log"
        self.screen = self.workdir / "agent.screen.log"
        self.started = time.monotonic()
        with self.screen.open("wb") as screen:
            self.proc = subprocess.Popen(
                [SIPP, "-sf", str(xml), "-i", "127.0.0.1", "-p", str(self.port), "-m", "1", "-nostdin",
                 "-timeout", f"{self.timeout:g}s", "-timeout_error", "-trace_err", "-error_file", str(self.errors)],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=screen, stderr=subprocess.STDOUT)
        time.sleep(0.3)  # bound to its port before the call is placed
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=30 if exc_type is None else 1)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        read = lambda p: p.read_text(encoding="utf-8", errors="replace") if p.is_file() else ""  # noqa: E731
        self.run = SippRun(code, time.monotonic() - self.started, read(self.screen), read(self.errors), "", "",
                           self.workdir)
