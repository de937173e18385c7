"""SIPp call scripts for tests against the real Asterisk: build a caller from steps, run it, read what happened.

SIPp cannot hear audio, but it reads text: an AGI script's ``SEND TEXT``
(pyst2's ``agi.send_text``) reaches the caller as an in-dialog SIP
``MESSAGE``.  So a call script checks, step by step, which prompt the dialog
played and what it decided, and sends digits the way a phone does (SIP
``INFO``, ``application/dtmf-relay``, one digit each)::

    xml = call_scenario([ExpectText("^prompt=hello$"), Digits("12#"), ExpectText("^result=12$"), ExpectBye()])
    run = run_sipp(xml, sandbox.sip_port, tmp_path)
    assert run.ok, run.explain()

Regular expressions are POSIX extended ones (SIPp uses ``regcomp``),
matched against the message body.
"""

import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

SIPP = "sipp"

_FROM = "From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]"
_TO = "To: <sip:{number}@[remote_ip]:[remote_port]>"
_ANSWER = """  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
"""


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing holds right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Dialog:
    """What the steps need to write in-dialog requests: the caller, the number and the next CSeq."""

    def __init__(self, caller: str, number: str) -> None:
        self.caller = caller
        self.number = number
        self.cseq = 1
        self.variables = 0

    def request(self, method: str, content_type: str | None = None, body: str = "") -> str:
        self.cseq += 1
        lines = [
            f"{method} sip:{self.number}@[remote_ip]:[remote_port] SIP/2.0",
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
            _FROM.format(caller=self.caller),
            _TO.format(number=self.number) + "[peer_tag_param]",
            "Call-ID: [call_id]",
            f"CSeq: {self.cseq} {method}",
            f"Contact: <sip:{self.caller}@[local_ip]:[local_port]>",
            "Max-Forwards: 70",
        ]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines += ["Content-Length: [len]", "", *body.splitlines()]
        text = "\n      ".join(lines)
        return f'  <send retrans="500">\n    <![CDATA[\n      {text}\n    ]]>\n  </send>\n'

    def variable(self) -> str:
        self.variables += 1
        return f"v{self.variables}"


@dataclass(frozen=True)
class ExpectText:
    """An in-dialog MESSAGE (the AGI's SEND TEXT) whose body matches ``regexp``; answered 200, else the call fails."""

    regexp: str

    def xml(self, dialog: _Dialog) -> str:
        var = dialog.variable()  # SIPp refuses a variable that is assigned and never used: the log uses it
        return (
            '  <recv request="MESSAGE">\n    <action>\n'
            f'      <ereg regexp={quoteattr(self.regexp)} search_in="body" check_it="true" assign_to="{var}"/>\n'
            f'      <log message="[call_id] text [${var}]"/>\n'
            "    </action>\n  </recv>\n" + _ANSWER
        )


@dataclass(frozen=True)
class Digits:
    """Press ``digits`` (0-9, *, #): one INFO each after ``gap_ms``, each answered 200.

    The gap matters before the first digit too: between AGI commands Asterisk
    reads and drops the channel's frames, so a digit sent before the dialog
    asks for input is lost.
    """

    digits: str
    gap_ms: int = 300

    def xml(self, dialog: _Dialog) -> str:
        out = []
        for digit in self.digits:
            if digit not in "0123456789*#":
                raise ValueError(f"not a DTMF digit: {digit!r}")
            out.append(f'  <pause milliseconds="{self.gap_ms}"/>\n')
            out.append(dialog.request("INFO", "application/dtmf-relay", f"Signal={digit}\nDuration=160"))
            out.append('  <recv response="200"/>\n')
        return "".join(out)


@dataclass(frozen=True)
class Pause:
    """Wait ``ms`` milliseconds (a caller who says nothing)."""

    ms: int

    def xml(self, dialog: _Dialog) -> str:
        return f'  <pause milliseconds="{self.ms}"/>\n'


@dataclass(frozen=True)
class ExpectBye:
    """The dialog hangs up: Asterisk sends BYE, the caller answers 200."""

    def xml(self, dialog: _Dialog) -> str:
        return '  <recv request="BYE"/>\n' + _ANSWER


@dataclass(frozen=True)
class HangUp:
    """The caller hangs up: BYE, and Asterisk answers 200."""

    def xml(self, dialog: _Dialog) -> str:
        return dialog.request("BYE") + '  <recv response="200"/>\n'


Step = ExpectText | Digits | Pause | ExpectBye | HangUp


def call_scenario(steps: Sequence[Step], *, caller: str = "13800138000", number: str = "95598", name: str = "call") -> str:
    """A SIPp scenario: INVITE ``number`` as ``caller`` (ulaw), take the 200 and ACK it, then ``steps`` in order.

    ``caller`` is the From user; Asterisk picks the endpoint by it first
    (``proof`` reaches the sandbox's proof context) and by address second (any
    other name from 127.0.0.1 is the ``tester`` endpoint, context ``hotline``).
    """
    dialog = _Dialog(caller, number)
    invite = "\n      ".join([
        f"INVITE sip:{number}@[remote_ip]:[remote_port] SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
        _FROM.format(caller=caller),
        _TO.format(number=number),
        "Call-ID: [call_id]",
        "CSeq: 1 INVITE",
        f"Contact: <sip:{caller}@[local_ip]:[local_port]>",
        "Max-Forwards: 70",
        "Content-Type: application/sdp",
        "Content-Length: [len]",
        "",
        "v=0",
        f"o={caller} 53655765 2353687637 IN IP[local_ip_type] [local_ip]",
        "s=-",
        "c=IN IP[media_ip_type] [media_ip]",
        "t=0 0",
        "m=audio [media_port] RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
    ])
    ack = "\n      ".join([
        f"ACK sip:{number}@[remote_ip]:[remote_port] SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
        _FROM.format(caller=caller),
        _TO.format(number=number) + "[peer_tag_param]",
        "Call-ID: [call_id]",
        "CSeq: 1 ACK",
        f"Contact: <sip:{caller}@[local_ip]:[local_port]>",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ])
    parts = [
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n',
        f"<scenario name={quoteattr(name)}>\n",
        f'  <send retrans="500">\n    <![CDATA[\n      {invite}\n    ]]>\n  </send>\n',
        '  <recv response="100" optional="true"/>\n',
        '  <recv response="180" optional="true"/>\n',
        '  <recv response="183" optional="true"/>\n',
        '  <recv response="200" rtd="true"/>\n',
        f"  <send>\n    <![CDATA[\n      {ack}\n    ]]>\n  </send>\n",
        *(step.xml(dialog) for step in steps),
        "</scenario>\n",
    ]
    return "".join(parts)


@dataclass(frozen=True)
class SippRun:
    """What one SIPp run did: its exit code (0 all calls passed, 1 some failed, other: SIPp itself failed) and its files."""

    returncode: int
    elapsed: float
    screen: str  # SIPp's final statistics screen
    errors: str  # -trace_err: why calls failed
    logs: str  # the scenario's <log> lines: each text received, with its Call-ID
    messages: str  # -trace_msg: every SIP message sent and received

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def explain(self) -> str:
        """A few lines for an assertion message: exit code, the errors' tail, the screen's counters."""
        counters = [line for line in self.screen.splitlines() if "call" in line.lower() and "|" in line]
        errors = "\n".join(self.errors.strip().splitlines()[-20:])
        return f"sipp exited {self.returncode} after {self.elapsed:.1f} s\n{errors}\n" + "\n".join(counters[-6:])


def run_sipp(scenario: str, asterisk_port: int, workdir: Path, *, calls: int = 1, concurrent: int = 1, rate: int | None = None,
             timeout: float = 30.0, recv_timeout_ms: int = 10000, name: str = "call") -> SippRun:
    """Run ``scenario`` against Asterisk on 127.0.0.1:``asterisk_port`` from a free local port; wait for it to end.

    ``calls`` in all (``-m``), at most ``concurrent`` at once (``-l``),
    started at ``rate`` a second (``-r``; SIPp's default is 10, and ``-r 1``
    delays even the first call by a second).  SIPp gives up after ``timeout``
    seconds (and then fails); should it hang even so, it is killed by its own
    pid, so that no SIPp outlives the test holding its port.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    scenario_file = workdir / f"{name}.xml"
    scenario_file.write_text(scenario, encoding="ISO-8859-1")
    files = {kind: workdir / f"{name}.{kind}.log" for kind in ("screen", "errors", "logs", "messages")}
    for f in files.values():
        f.unlink(missing_ok=True)
    cmd = [
        SIPP, "-sf", str(scenario_file), "-i", "127.0.0.1", "-p", str(free_udp_port()),
        "-m", str(calls), "-l", str(concurrent), *(["-r", str(rate)] if rate else []),
        "-timeout", f"{timeout:g}s", "-timeout_error", "-recv_timeout", str(recv_timeout_ms), "-nostdin",
        "-trace_err", "-error_file", str(files["errors"]),
        "-trace_logs", "-log_file", str(files["logs"]),
        "-trace_msg", "-message_file", str(files["messages"]),
        f"127.0.0.1:{asterisk_port}",
    ]
    started = time.monotonic()
    with files["screen"].open("wb") as screen:
        proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=screen, stderr=subprocess.STDOUT)
        try:
            returncode = proc.wait(timeout=timeout + 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            returncode = -9
    elapsed = time.monotonic() - started

    def read(kind: str) -> str:
        try:
            return files[kind].read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    return SippRun(returncode, elapsed, read("screen"), read("errors"), read("logs"), read("messages"))
