"""Replay call scripts against an Asterisk (the test sandbox or a real one) with SIPp, and report every step.

``replay(scripts, host, port, variables, workdir)`` compiles each script
(``testkit.callscript``), runs it with ``sipp``, reads back what the scenario
logged (every text the hotline sent, with its CSeq, and each step the
scenario completed), and judges each step of each call::

    results = replay([Path("tests/calls/recharge-one-card.call")], "127.0.0.1", 5160,
                     {"ACCOUNT": "3100000001", "PIN": "..."}, Path("/tmp/replay"))
    for result in results:
        print(result.report())

The texts are put back in the order the dialog sent them (Asterisk numbers
a call's MESSAGEs with increasing CSeqs; SIPp may take one late, see
``testkit.callscript``), and each ``expect`` must match a text that comes after
the one the expect before it matched.  A failed step says why: not seen
(and which texts came instead), the hotline hung up, or SIPp gave up
waiting.  ``concurrent`` runs N copies of each script at once; an
``Injection`` gives each copy its own values.

The ``replay`` command is ``run_job(ReplayJob(...))``, with two front ends
that only parse options: ``main(argv)`` (``python -m testkit.replay``) and
``cli.py replay``.  It refuses bad input in one line before the first call
(``ReplayError``: a script that is missing or malformed, a variable without
a value, no ``sipp``, nothing answering SIP at the address), prints each
step's PASS or FAIL and a summary, and exits 0 when every step of every call
passed, 3 when some step failed (1 refused, 2 usage error, as ``cli.py``).
Values read with ``--secret NAME`` (PINs) never appear on a command line or
in the output, and the run's files that held them are deleted afterwards.

Needs the ``sipp`` program (Debian's ``sip-tester``).
"""

# test-case-name: tests.testkit.test_replay, tests.e2e.test_hotline

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from testkit.callscript import (
    DEFAULT_NUMBER,
    CallScript,
    Compiled,
    Digits,
    ExpectBye,
    ExpectText,
    HangUp,
    Injection,
    Pause,
    ScriptError,
    compile_script,
    heard_text,
    load,
    route_through,
)
from testkit.hearing import UNITS, Heard, Sounds, spoken_amount
from testkit.media import CallMedia, MediaAgent
from testkit.ports import free_udp_port

SIPP = "sipp"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5160  # the sandbox's (testkit.sandbox.DEFAULT_SIP_PORT)
# Unexpected messages are left unanswered rather than fatal: see testkit.callscript.
# -aa answers a stray INFO, NOTIFY, OPTIONS or UPDATE from Asterisk.
SIPP_BEHAVIOUR = ("-default_behaviors", "all,-abortunexp", "-aa")
# A caller's voice: SIPp sends it once the call is answered, so that Asterisk's Answer() need not wait for it.
CALLER_AUDIO = Path("/usr/share/sip-tester/g711a.pcap")  # 7 s of G.711 alaw RTP that ships with sip-tester
RECV_TIMEOUT_MS = 30_000  # longest silence between two messages: the longest prompt plus the dialog's digit timeout
SHOWN_TEXTS = 8  # texts quoted in a failed step's explanation

PASS, FAIL, NOT_REACHED, SKIP = "PASS", "FAIL", "----", "skip"
TEXT_LEAD = 0.3  # s: a prompt's sound may begin this long before its text arrives (the two travel separately)
TEXT_LAG = 2.0  # s: ... and must begin within this long after it (the dialog sends the text just before playing)
SOUND_GAP = 1.0  # s: number sounds further apart than this are not one number
# Prompts played before the caller chooses a language, so in the hotline's first language (the channel's default,
# asterisk_conf/extensions.conf) as well as in the call's; every other prompt must be in the language most of the
# call's prompts are in.
BEFORE_LANGUAGE_CHOICE = {"welcome": "zh"}


class ReplayError(Exception):
    """The replay cannot be done as asked (no SIPp, a bad script or value, nothing answering); one line, no value."""


def local_ip_for(host: str, port: int) -> str:
    """The address of this machine that packets to ``host`` leave from (no packet is sent)."""
    if host.startswith("127."):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, port))
        except OSError as e:
            raise ReplayError(f"cannot reach {host}:{port}: {e.strerror}") from None
        return str(s.getsockname()[0])


# --- running SIPp ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SippRun:
    """What one SIPp run did: its exit code (0 all calls passed, 1 some failed, other: SIPp itself failed) and its files."""

    returncode: int
    elapsed: float
    screen: str  # SIPp's final statistics screen
    errors: str  # -trace_err: why calls failed (and the messages it left unanswered)
    logs: str  # the scenario's <log> lines: see testkit.callscript
    messages: str  # -trace_msg: every SIP message sent and received ("" unless asked for)
    workdir: Path = Path(".")

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def started(self) -> bool:
        """Whether SIPp got as far as placing calls (it prints its statistics screen then), not only refusing to."""
        return "Statistics Screen" in self.screen

    def explain(self) -> str:
        """A few lines for an assertion message: exit code, the errors' tail, the screen's counters."""
        counters = [line for line in self.screen.splitlines() if "call" in line.lower() and "|" in line]
        failures = [line for line in self.errors.splitlines() if "Continuing call" not in line and line.strip()]
        errors = "\n".join(failures[-20:])
        return f"sipp exited {self.returncode} after {self.elapsed:.1f} s (files in {self.workdir})\n{errors}\n" + \
            "\n".join(counters[-6:])


def run_sipp(scenario: str, asterisk_port: int, workdir: Path, *, host: str = DEFAULT_HOST, calls: int = 1,
             concurrent: int = 1, rate: float | None = None, rate_period_ms: int = 1000, timeout: float = 30.0,
             recv_timeout_ms: int = RECV_TIMEOUT_MS, name: str = "call", injection_csv: str | None = None,
             trace_messages: bool = True) -> SippRun:
    """Run ``scenario`` against Asterisk at ``host``:``asterisk_port`` from a free local port; wait for it to end.

    ``calls`` in all (``-m``), at most ``concurrent`` at once (``-l``),
    ``rate`` of them started every ``rate_period_ms`` (``-r``, ``-rp``;
    default: all of ``concurrent`` within the first second).
    ``injection_csv`` becomes the ``-inf`` file.
    SIPp gives up after ``timeout`` seconds (and then fails); should it hang
    even so, it is killed by its own pid, so that no SIPp outlives the run
    holding its port.
    """
    if shutil.which(SIPP) is None:
        raise ReplayError(f"{SIPP} is not installed (apt-get install sip-tester)")
    workdir = workdir.absolute()  # SIPp runs in it, so a relative path would point elsewhere
    workdir.mkdir(parents=True, exist_ok=True)
    scenario_file = workdir / f"{name}.xml"
    _write_private(scenario_file, scenario)  # it holds the keys the calls send: PINs
    files = {kind: workdir / f"{name}.{kind}.log" for kind in ("screen", "errors", "logs", "messages")}
    for f in files.values():
        f.unlink(missing_ok=True)
    local_ip = local_ip_for(host, asterisk_port)
    cps = rate if rate is not None else max(1, concurrent)
    cmd = [
        SIPP, "-sf", str(scenario_file), "-i", local_ip, "-p", str(free_udp_port(local_ip)),
        "-m", str(calls), "-l", str(concurrent), "-r", f"{cps:g}", "-rp", str(rate_period_ms),
        "-timeout", f"{timeout:g}s", "-timeout_error", "-recv_timeout", str(recv_timeout_ms), "-nostdin",
        *SIPP_BEHAVIOUR,
        "-trace_err", "-error_file", str(files["errors"]),
        "-trace_logs", "-log_file", str(files["logs"]),
    ]
    if trace_messages:
        cmd += ["-trace_msg", "-message_file", str(files["messages"])]
    if injection_csv is not None:
        inf = workdir / f"{name}.inject.csv"
        _write_private(inf, injection_csv)
        cmd += ["-inf", str(inf)]
    cmd.append(f"{host}:{asterisk_port}")
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

    return SippRun(returncode, elapsed, read("screen"), read("errors"), read("logs"), read("messages"), workdir)


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner only (replacing it)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


# --- reading back what the scenario logged --------------------------------------------------


@dataclass(frozen=True)
class Text:
    """One text the hotline sent: its CSeq (the dialog's order), when it first reached the caller (epoch s), its body."""

    cseq: int
    at: float
    body: str


@dataclass
class CallLog:
    """One call's events, as the scenario logged them (see the table in ``testkit.callscript``)."""

    call_id: str
    answered: float | None = None
    texts: dict[int, Text] = field(default_factory=dict)  # by CSeq; a copy taken twice counts once
    done: dict[int, tuple[str, float, int | None]] = field(default_factory=dict)  # step -> (event, time, cseq)
    hung_up: float | None = None  # when the hotline's BYE arrived

    def ordered_texts(self) -> list[Text]:
        return [self.texts[c] for c in sorted(self.texts)]

    def add_text(self, text: Text) -> None:
        known = self.texts.get(text.cseq)
        if known is None or text.at < known.at:
            self.texts[text.cseq] = text


# "CALLID DATE<TAB>TIME<TAB>EPOCH EVENT": SIPp's [timestamp] is three tab-separated fields.
_LINE = re.compile(r"^(\S+) \S+\t\S+\t(\d+\.\d+) (.*)$")


def read_logs(text: str) -> dict[str, CallLog]:
    """The scenario's log lines, grouped by Call-ID, in the order the calls were answered."""
    calls: dict[str, CallLog] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        call_id, at, event = m.group(1), float(m.group(2)), m.group(3)
        call = calls.setdefault(call_id, CallLog(call_id))
        words = event.split(" ", 2)
        if words[0] == "answer":
            call.answered = at
        elif words[0] == "text":
            body, _, cseq = event[len("text "):].rpartition(" ")
            if cseq.isdigit():
                call.add_text(Text(int(cseq), at, body))
        elif words[0].isdigit() and len(words) >= 2:
            cseq = int(words[2]) if len(words) > 2 and words[2].isdigit() else None
            call.done.setdefault(int(words[0]), (words[1], at, cseq))
    return calls


_TRACE_HEAD = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)$", re.M)


def read_trace(text: str, calls: dict[str, CallLog]) -> None:
    """Add to ``calls`` every MESSAGE each caller received, and when the hotline's BYE came, from SIPp's ``-trace_msg``.

    The trace has the texts that arrived while the scenario was busy and
    were answered only when Asterisk sent them again, and those that never
    were (the call ended first), so it is the whole transcript.
    """
    heads = list(_TRACE_HEAD.finditer(text))
    for i, head in enumerate(heads):
        block = text[head.end():heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        # "\nUDP message received [410] bytes :\n\nMESSAGE sip:... SIP/2.0\n..."
        lines = block.split("\n", 3)
        if len(lines) < 4 or "message received" not in lines[1]:
            continue
        message = lines[3]
        method = message.split(" ", 1)[0]
        if method not in ("MESSAGE", "BYE"):
            continue
        headers, _, body = message.partition("\n\n")
        call_id = re.search(r"^Call-ID:\s*(\S+)", headers, re.M | re.I)
        cseq = re.search(r"^CSeq:\s*(\d+)", headers, re.M | re.I)
        if not call_id or not cseq or call_id.group(1) not in calls:
            continue
        call, at = calls[call_id.group(1)], _epoch(head.group(1))
        if method == "BYE":
            call.hung_up = at if call.hung_up is None else min(call.hung_up, at)
        else:
            call.add_text(Text(int(cseq.group(1)), at, body.split("\n", 1)[0].strip()))


def _epoch(local: str) -> float:
    """SIPp's trace time (local time, microseconds) as seconds since the epoch."""
    day, _, fraction = local.partition(".")
    return time.mktime(time.strptime(day, "%Y-%m-%d %H:%M:%S")) + float("0." + fraction)


def call_errors(errors: str) -> dict[str, list[str]]:
    """SIPp's reasons for failing calls (``-trace_err``), by Call-ID; messages it merely left unanswered are not reasons."""
    out: dict[str, list[str]] = {}
    # Each event starts with a timestamp line "YYYY-MM-DD<TAB>HH:MM:SS.ffffff<TAB>epoch: what".
    for event in re.split(r"\n(?=\d{4}-\d\d-\d\d\t)", errors):
        if "Continuing call on" in event or "Dead call" in event:
            continue
        m = re.search(r"Call-I[Dd][: ]+'?([^'\s,]+)", event)
        if m:
            first = event.split(": ", 1)[-1].splitlines()[0]
            out.setdefault(m.group(1), []).append(first[:200])
    return out


# --- judging --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """One step of one call: ``PASS``, ``FAIL`` or ``----`` (not reached), when (ms after answer) and why."""

    number: int
    line: int
    source: str
    status: str
    at_ms: int | None = None
    detail: str = ""
    heard: str = ""  # what the caller heard for this step (an audible expect) or when a key went (a send)

    @property
    def passed(self) -> bool:
        return self.status in (PASS, SKIP)


@dataclass(frozen=True)
class CallResult:
    """One call: its Call-ID, each step's result, and the texts the hotline sent, in the dialog's order."""

    call_id: str
    steps: tuple[StepResult, ...]
    texts: tuple[Text, ...] = ()
    answered: float | None = None  # epoch seconds
    heard: tuple[Heard, ...] = ()  # every sound recognised in the call's audio, in order (when audio was checked)

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.steps)

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if s.status == FAIL), None)

    def text_at(self, regexp: str, after_ms: int = -1) -> int | None:
        """When (ms after answer) the first text matching ``regexp`` arrived, at or after ``after_ms``."""
        if self.answered is None:
            return None
        for t in sorted(self.texts, key=lambda t: t.at):
            at = round((t.at - self.answered) * 1000)
            if at >= after_ms and re.fullmatch(regexp, t.body):
                return at
        return None


def judge(compiled: Compiled, log: CallLog, errors: Sequence[str] = (), media: CallMedia | None = None) -> CallResult:
    """Each step of one call, from what its scenario logged; the first failure ends the call's judgement.

    With ``media`` (the call's audio and keys, ``testkit.media``), an
    audible expect (``prompt=``, ``digits=``, ``amount=``) must also have been
    heard: in the call's language, starting at most ``TEXT_LAG`` after its
    text (in order, when the replay is audio-only and has no text), and the
    step says what was heard, when and how closely it matched.  Audio-only,
    an expect that cannot be heard (``result=``...) is ``skip``.
    """
    steps = compiled.steps
    texts = log.ordered_texts()
    results: list[StepResult] = []
    failed = False
    cursor = -1  # CSeq of the text the last passed expect matched
    ear = _Ear(media.heard, log.answered) if media is not None else None
    keys = list(media.keys) if media is not None else []

    def ms(at: float | None) -> int | None:
        return None if at is None or log.answered is None else round((at - log.answered) * 1000)

    for n, step in enumerate(steps, start=1):
        base = dict(number=n, line=step.line, source=step.describe())
        if failed:
            results.append(StepResult(**base, status=NOT_REACHED))
            continue
        ok, at, detail, heard = False, None, "", ""
        said = heard_text(step) if ear is not None and isinstance(step, ExpectText) else ""
        if log.answered is None:
            detail = "the call was not answered" + _because(errors)
        elif isinstance(step, ExpectText) and compiled.audible_only:
            if not said:
                results.append(StepResult(**base, status=SKIP, detail="cannot be heard (audio-only)"))
                continue
            assert ear is not None
            ok, found, heard = ear.check(said, None)
            at = ms(found)
            detail = heard
        elif isinstance(step, ExpectText):
            if n in compiled.sync_steps:
                event = log.done.get(n)
                if event and event[0] == "sync" and event[2] is not None and event[2] > cursor:
                    ok, cursor = True, event[2]
                    at = ms(log.texts[cursor].at if cursor in log.texts else event[1])
            else:
                found = next((t for t in texts if t.cseq > cursor and _matches(step.regexp, t.body)), None)
                if found is not None:
                    ok, cursor, at = True, found.cseq, ms(found.at)
            if not ok:
                detail = _not_seen(log, texts, cursor, errors)
            elif said and ear is not None and at is not None and log.answered is not None:
                text_at = log.answered + at / 1000
                ok, _, heard = ear.check(said, text_at)
                detail = heard
                keyed = _keyed_over(text_at, keys, media.heard if media is not None else ())
                if not ok and said.startswith("prompt=") and keyed is not None:
                    results.append(StepResult(**base, status=SKIP, at_ms=at, detail=f"not heard: {keyed}",
                                              heard=f"not heard: {keyed}"))
                    continue
        else:
            want = {Digits: "sent", Pause: "wait", ExpectBye: "bye", HangUp: "hangup"}[type(step)]
            event = log.done.get(n)
            if event and event[0] == want:
                ok, at = True, ms(event[1])
                if isinstance(step, Digits) and media is not None:
                    pressed, keys = keys[:len(step.keys)], keys[len(step.keys):]
                    heard = _when_pressed(pressed, media.heard, log.answered)
            elif isinstance(step, ExpectBye):
                detail = "the hotline did not hang up" + _because(errors)
            elif log.hung_up is not None:
                detail = "the hotline hung up before this step was done" + _after(texts, cursor)
            else:
                detail = "not done" + _because(errors)
        if ok:
            results.append(StepResult(**base, status=PASS, at_ms=at, heard=heard))
        else:
            failed = True
            results.append(StepResult(**base, status=FAIL, detail=detail, heard=heard))
    return CallResult(log.call_id, tuple(results), tuple(texts), log.answered,
                      tuple(media.heard) if media is not None else ())


class _Ear:
    """Checks audible expects, in order, against the sounds a call heard (see ``judge``)."""

    def __init__(self, heard: Sequence[Heard], answered: float | None) -> None:
        self.heard = list(heard)
        self.answered = answered if answered is not None else (heard[0].at if heard else 0.0)
        self.cursor = 0  # index of the first sound not yet used by an expect
        prompts = [h.lang for h in heard if h.id not in BEFORE_LANGUAGE_CHOICE and not h.id.startswith("digits/")]
        self.lang = max(sorted(set(prompts)), key=prompts.count) if prompts else "zh"

    def _t(self, at: float) -> str:
        return f"{at - self.answered:.2f} s"

    def _describe(self, h: Heard) -> str:
        return h.describe().replace(f" at {h.at:.2f} s", f" at {self._t(h.at)}")

    def check(self, said: str, text_at: float | None) -> tuple[bool, float | None, str]:
        """Whether ``said`` (``prompt=ID``, ``digits=D``, ``amount=FEN``) was heard; (ok, when it began, what was heard)."""
        kind, _, want = said.partition("=")
        after = [i for i in range(self.cursor, len(self.heard))
                 if text_at is None or self.heard[i].at >= text_at - TEXT_LEAD]
        window = [i for i in after if text_at is None or self.heard[i].at <= text_at + TEXT_LAG]
        if kind == "prompt":
            if text_at is not None:  # the first sound after the text is the prompt, or the prompt is wrong
                window = window[:1]
            found = next((i for i in window if self.heard[i].id == want
                          or f"{want} ({self.heard[i].lang})" in self.heard[i].rivals), None)
            if found is None:
                return False, None, f"{want} not heard" + self._instead(after)
            h = self.heard[found]
            self.cursor = found + 1
            if h.lang not in (self.lang, BEFORE_LANGUAGE_CHOICE.get(want, self.lang)):
                return False, h.at, f"heard {self._describe(h)}, but the call is in {self.lang}"
            return True, h.at, "heard " + self._describe(h)
        for i in window:
            if not self.heard[i].id.startswith("digits/"):
                continue
            run = self._number(i, kind)
            if not run:
                continue
            if kind == "amount":  # amounts can follow each other: the first whole number-and-units that says it
                ends = [k + 1 for k, h in enumerate(run) if h.id in UNITS]
                run = next((run[:k] for k in ends if spoken_amount([h.id for h in run[:k]], self.lang) == int(want)
                            if want.isdigit()), run)
            ids = [h.id for h in run]
            value = "".join(x.removeprefix("digits/") for x in ids) if kind == "digits" else spoken_amount(ids, self.lang)
            self.cursor = i + len(run)
            words = " ".join(x.removeprefix("digits/") for x in ids)
            shown = f"{words} at {self._t(run[0].at)}, match {min(h.confidence for h in run):.3f} or better"
            langs = {h.lang for h in run}
            if str(value) != want:
                return False, run[0].at, f"heard {kind} {value} ({shown}), not {want}"
            if langs != {self.lang}:
                return False, run[0].at, f"heard {kind} {value} in {', '.join(sorted(langs))}, but the call is in {self.lang}"
            return True, run[0].at, f"heard {kind} {value} ({shown})"
        return False, None, f"no number heard for {said}" + self._instead(after)

    def _number(self, i: int, kind: str) -> list[Heard]:
        """The sounds from ``i`` that say one number: digits 0-9 for ``digits``; for ``amount``, numbers each followed
        by a unit, the units getting smaller (元 角 分), so that the amount after it is not taken in."""
        run: list[Heard] = []
        pending: list[Heard] = []
        unit = None
        for h in self.heard[i:]:
            if (pending or run) and h.at - (pending or run)[-1].until > SOUND_GAP:
                break
            if kind == "digits":
                if not re.fullmatch(r"digits/\d", h.id):
                    break
                run.append(h)
            elif h.id.startswith("digits/"):
                pending.append(h)
            elif h.id in UNITS and pending and (unit is None or UNITS[h.id] < UNITS[unit]):
                run += [*pending, h]
                pending, unit = [], h.id
            else:
                break
        return run or pending

    def _instead(self, after: Sequence[int]) -> str:
        shown = [self._describe(self.heard[i]) for i in after[:4]]
        return f"; heard instead: {'; '.join(shown)}" if shown else "; nothing more was heard"


def _keyed_over(text_at: float, keys: Sequence[object], heard: Sequence[Heard]) -> str | None:
    """Why a prompt may rightly not have been heard: the caller keyed before any sound began after its text."""
    key = next((k for k in keys if k.at >= text_at), None)  # type: ignore[attr-defined]
    if key is None or key.at - text_at > 1.0:  # type: ignore[attr-defined]
        return None
    if any(text_at - TEXT_LEAD <= h.at < key.at for h in heard):  # type: ignore[attr-defined]
        return None
    return (f"the caller keyed {key.at - text_at:.2f} s after its text, before any of it was played "  # type: ignore[attr-defined]
            "(barge-in on a busy Asterisk)")


def _when_pressed(keys: Sequence[object], heard: Sequence[Heard], answered: float | None) -> str:
    """Where the first of ``keys`` fell: during which sound, how far into it, or between which sounds."""
    if not keys:
        return ""
    first = keys[0]
    at, how = first.at, first.how  # type: ignore[attr-defined]
    base = answered or at
    # The keys themselves are never shown: they may be a PIN.
    sent = f"{len(keys)} key{'s' if len(keys) > 1 else ''} by {how}, the first at {at - base:.2f} s"
    during = next((h for h in heard if h.at <= at <= h.until and not h.id.startswith("digits/")), None)
    if during is not None:
        return f"{sent}, {at - during.at:.2f} s into {during.id} (stopped {during.until - at:.2f} s later)"
    before = [h for h in heard if h.until < at]
    return f"{sent}, between prompts" + (f" ({before[-1].id} ended {at - before[-1].until:.2f} s before)" if before else "")


def _matches(regexp: str, body: str) -> bool:
    return re.search(_posix_to_python(regexp), body) is not None


_POSIX_CLASSES = {"[:digit:]": "0-9", "[:alpha:]": "A-Za-z", "[:alnum:]": "A-Za-z0-9", "[:upper:]": "A-Z",
                  "[:lower:]": "a-z", "[:space:]": r"\s", "[:xdigit:]": "0-9A-Fa-f", "[:punct:]": r"!-/:-@\[-`{-~"}


def _posix_to_python(regexp: str) -> str:
    """A POSIX ERE (as SIPp matches it) as a Python pattern: the bracket classes are the only difference scripts meet."""
    for posix, python in _POSIX_CLASSES.items():
        regexp = regexp.replace(posix, python)
    return regexp


def _not_seen(log: CallLog, texts: list[Text], after: int, errors: Sequence[str]) -> str:
    why = "not seen"
    if log.hung_up is not None:
        why += "; the hotline hung up"
    elif errors:
        why += _because(errors)
    return why + _after(texts, after)


def _after(texts: list[Text], after: int) -> str:
    later = [t.body for t in texts if t.cseq > after]
    if not later:
        return "; no text came after the last step that passed"
    shown = ", ".join(later[:SHOWN_TEXTS]) + (f", ... ({len(later)} in all)" if len(later) > SHOWN_TEXTS else "")
    return f"; the hotline sent: {shown}"


def _because(errors: Sequence[str]) -> str:
    return f" (sipp: {errors[0]})" if errors else ""


# --- replaying scripts ----------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptResult:
    """One script's run: the compiled scenario, SIPp's run, and each call's steps."""

    script: CallScript
    compiled: Compiled | None
    run: SippRun | None
    calls: tuple[CallResult, ...]
    expected_calls: int
    error: str = ""  # the script could not be compiled or run

    @property
    def passed(self) -> bool:
        return not self.error and len(self.calls) == self.expected_calls and all(c.passed for c in self.calls)

    @property
    def name(self) -> str:
        return self.script.path or self.script.name

    def failures(self) -> list[tuple[CallResult, StepResult]]:
        return [(c, s) for c in self.calls for s in [c.failed_step] if s is not None]

    def report(self) -> str:
        """Lines for a person: the verdict, then each step's PASS/FAIL (counted over the calls when there are many)."""
        title = f" - {self.script.title}" if self.script.title else ""
        elapsed = f", {self.run.elapsed:.1f} s" if self.run else ""
        head = f"{PASS if self.passed else FAIL} {self.name}{title} ({len(self.calls)}/{self.expected_calls} calls{elapsed})"
        if self.error:
            return f"{head}\n  {self.error}"
        lines = [head]
        steps = self.compiled.steps if self.compiled else ()
        for i, step in enumerate(steps):
            per_call = [c.steps[i] for c in self.calls]
            passed = sum(s.passed for s in per_call)
            failed = [s for s in per_call if s.status == FAIL]
            status = PASS if per_call and passed == len(per_call) else (FAIL if failed else NOT_REACHED)
            if per_call and all(s.status == SKIP for s in per_call):
                status = SKIP
            count = f"{passed}/{len(per_call)}" if len(per_call) != 1 else ""
            times = sorted(s.at_ms for s in per_call if s.at_ms is not None)
            when = f"{times[len(times) // 2] / 1000:.2f} s" if times else ""
            label = f"  {status} {i + 1:>3}  line {step.line:<3} {step.describe():<44} {count:>7} {when:>8}".rstrip()
            lines.append(label)
            if failed:
                lines.append(f"         {failed[0].detail}")
            elif len(per_call) == 1 and per_call[0].heard:
                lines.append(f"         {per_call[0].heard}")
        if len(self.calls) < self.expected_calls:
            lines.append(f"  only {len(self.calls)} of {self.expected_calls} calls were answered or started; "
                         + (self.run.explain().splitlines()[0] if self.run else ""))
        return "\n".join(lines)


def compile_scripts(scripts: Sequence[Path], variables: Mapping[str, str], injection: Injection | None = None, *,
                    audio: Path | None = CALLER_AUDIO, audible_only: bool = False) -> list[Compiled]:
    """Read, bind and compile every script; ``ScriptError`` (one line, naming file and line) on the first bad one.

    Every script is compiled before the first call, so that a mistake in the
    last one is not found an hour late.
    """
    return [compile_script(load(path), variables, injection, audio=str(audio) if audio else None,
                           audible_only=audible_only) for path in scripts]


def replay(scripts: Sequence[Path], host: str, port: int, variables: Mapping[str, str], workdir: Path, *,
           concurrent: int = 1, calls: int | None = None, injection: Injection | None = None,
           rate: float | None = None, timeout: float | None = None, recv_timeout_ms: int = RECV_TIMEOUT_MS,
           trace_messages: bool = True, audio: Path | None = CALLER_AUDIO, sounds: Sounds | None = None,
           audio_only: bool = False) -> list[ScriptResult]:
    """Run each script in turn against the Asterisk at ``host``:``port``; one ``ScriptResult`` each.

    ``variables`` fill ``${NAME}``; ``injection`` gives per-call values
    (``calls`` defaults to its row count, else to ``concurrent``).
    ``audio`` is the caller's voice, sent once the call is answered (see
    ``testkit.callscript.call_scenario``); ``None`` sends none.  Each
    script's files (scenario, logs, SIPp's traces) go to ``workdir/NAME/``.
    ``sounds`` (the rendered prompts, ``testkit.hearing.Sounds``) makes each
    call's audio checked as well as its texts; ``audio_only`` checks the
    audio alone (see ``judge``).
    A script that cannot be read or compiled raises ``ScriptError`` before
    any call is made; a missing ``sipp`` or audio file raises ``ReplayError``.
    """
    if audio is not None and not Path(audio).is_file():
        raise ReplayError(f"no such audio file: {audio}")
    compiled = compile_scripts(scripts, variables, injection, audio=audio, audible_only=audio_only)
    total = calls if calls is not None else (len(injection.rows) if injection else concurrent)
    return [run_compiled(c, host, port, workdir / c.script.name, calls=total, concurrent=concurrent, rate=rate,
                         timeout=timeout, recv_timeout_ms=recv_timeout_ms, trace_messages=trace_messages,
                         sounds=sounds)
            for c in compiled]


def run_compiled(compiled: Compiled, host: str, port: int, workdir: Path, *, calls: int = 1, concurrent: int = 1,
                 rate: float | None = None, rate_period_ms: int = 1000, timeout: float | None = None,
                 recv_timeout_ms: int = RECV_TIMEOUT_MS, trace_messages: bool = True,
                 sounds: Sounds | None = None) -> ScriptResult:
    """Run one compiled script (``calls`` copies, ``concurrent`` at once; see ``run_sipp``) and judge every call.

    With ``sounds``, with RFC 4733 keys, or compiled audio-only, SIPp phones
    through a ``testkit.media.MediaAgent``, which records and checks what
    each call heard and sends its keys.
    """
    budget = timeout if timeout is not None else _time_budget(compiled, calls, concurrent, recv_timeout_ms)
    if rate is not None:
        budget += calls / rate * rate_period_ms / 1000  # the time it takes to start them all
    if compiled.audible_only and sounds is None:
        raise ReplayError("an audio-only replay needs the rendered prompts to listen for")
    agent = None
    xml, sip_host, sip_port = compiled.xml, host, port
    if sounds is not None or compiled.audible_only or compiled.script.dtmf == "rfc4733":
        agent = MediaAgent((host, port), sounds, ip=local_ip_for(host, port), dtmf=compiled.script.dtmf,
                           texts=not compiled.audible_only).start()
        xml = route_through(xml, agent.sip_address, agent.rtp_address)
        sip_host, sip_port = agent.sip_address
    try:
        run = run_sipp(xml, sip_port, workdir, host=sip_host, calls=calls, concurrent=min(concurrent, calls),
                       rate=rate, rate_period_ms=rate_period_ms, timeout=budget, recv_timeout_ms=recv_timeout_ms,
                       name=compiled.script.name,
                       injection_csv=compiled.injection_csv, trace_messages=trace_messages)
    finally:
        media = agent.stop() if agent is not None else {}
    for number, call in enumerate(media.values(), start=1):  # what each caller heard, for a person to listen to
        call.save(workdir / f"{compiled.script.name}.{number}.heard.wav")
    logs = read_logs(run.logs)
    read_trace(run.messages, logs)
    errors = call_errors(run.errors)
    judged = tuple(judge(compiled, log, errors.get(cid, ()), media.get(cid) if agent is not None and sounds else None)
                   for cid, log in logs.items())
    error = ""
    if not judged:
        complaint = sipp_complaint(run)
        error = (f"no call was answered by {host}:{port}" if (run.started and run.returncode in (0, 1))
                 or "timed out" in complaint else "sipp could not run the scenario") + \
            (f" ({complaint})" if complaint else "")
    return ScriptResult(compiled.script, compiled, run, judged, calls, error=error)


def sipp_complaint(run: SippRun) -> str:
    """SIPp's last word on what went wrong, in one line: its last error that is not a message it left unanswered."""
    events = [e for e in re.split(r"\n(?=\d{4}-\d\d-\d\d\t)", run.errors)
              if e.strip() and "Continuing call on" not in e and "Dead call" not in e and "events occurred" not in e]
    if events:
        return events[-1].split(": ", 1)[-1].splitlines()[0].strip()[:200]
    lines = [line.strip() for line in run.screen.splitlines() if line.strip() and not set(line.strip()) <= set("-+| ")]
    if not lines or (run.started and run.returncode in (0, 1)):
        return ""
    # "2026-11-29<TAB>08:41:00.446807<TAB>1795941660.446807: Unable to load or parse 'x.xml' xml scenario file"
    return re.sub(r"^\d{4}-\d\d-\d\d\t\S+\t\S+: ", "", lines[-1])[:200]


def _time_budget(compiled: Compiled, calls: int, concurrent: int, recv_timeout_ms: int) -> float:
    """A generous limit for the whole run: every wait and key, plus a receive timeout per expect, per wave of calls."""
    per_call = 10.0
    for step in compiled.steps:
        if isinstance(step, Digits):
            per_call += len(step.keys) * (step.gap_ms / 1000 + 0.5)
        elif isinstance(step, Pause):
            per_call += step.ms / 1000
        elif isinstance(step, ExpectText | ExpectBye):
            per_call += 15.0
    waves = -(-calls // max(1, concurrent))
    return min(3600.0, waves * per_call + recv_timeout_ms / 1000)


# --- the replay command ---------------------------------------------------------------------

EXIT_PASSED = 0  # every step of every call passed
EXIT_REFUSED = 1  # bad input: nothing was phoned (the codes match cli.py's)
EXIT_USAGE = 2
EXIT_FAILED = 3  # replayed, and some step failed: the hotline did not do what a script says

PROBE_TIMEOUT = 3.0  # seconds to wait for any SIP answer before the first call
# The files of a run that hold the keys it sent (the scenario, SIPp's traces of sent messages, the injection file).
KEYED_FILES = ("{name}.xml", "{name}.messages.log", "{name}.errors.log", "{name}.inject.csv")


@dataclass(frozen=True)
class ReplayJob:
    """What the ``replay`` command was asked to do (by ``main`` or by ``cli.py replay``).

    ``secrets`` name the variables whose values must not stay on disk (PINs,
    read from standard input by ``read_secrets``): after the run, the files
    that held them are deleted.
    """

    scripts: tuple[Path, ...]
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    variables: Mapping[str, str] = field(default_factory=dict)
    secrets: frozenset[str] = frozenset()
    injection: Path | None = None
    concurrent: int = 1
    calls: int | None = None
    workdir: Path | None = None
    timeout: float | None = None
    audio: Path | None = CALLER_AUDIO
    check: str = "both"  # what proves an expect: "both" text and audio, "audio" alone, "text" alone (see CHECKS)
    prompts: Path | None = None  # the rendered prompts to listen for (default: rendered into DEFAULT_PROMPTS)


CHECKS = ("both", "audio", "text")
DEFAULT_PROMPTS = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recharge-hotline" / "prompts"


def load_sounds(prompts: Path | None) -> Sounds:
    """The sounds to listen for: ``prompts`` (as ``voice_prompts.build`` writes them), else the catalogue rendered
    into ``DEFAULT_PROMPTS`` (once; needs espeak-ng and sox).  ``ReplayError`` when neither can be had."""
    from testkit.sandbox import build_prompts
    from voice_prompts.build import BuildError

    try:
        if prompts is None:
            prompts = build_prompts(DEFAULT_PROMPTS)
        elif not prompts.is_dir():
            raise ReplayError(f"no such prompts folder: {prompts}")
        return Sounds.load(prompts)
    except BuildError as e:
        raise ReplayError(f"cannot render the prompts to listen for ({e}); give --prompts DIR or --text-only") from None
    except (OSError, ValueError) as e:
        raise ReplayError(f"cannot read the prompts in {prompts}: {e}") from None


def run_job(job: ReplayJob, echo: Callable[[str], None] = print) -> int:
    """Check the job, phone, ``echo`` each script's report and a summary; ``EXIT_PASSED`` or ``EXIT_FAILED``.

    Bad input raises ``ReplayError`` (one line) before any call: ``sipp``
    missing, a script, the injection file or the audio file missing or
    malformed, a variable without a value, or nothing answering SIP at
    ``host``:``port``.
    """
    if shutil.which(SIPP) is None:
        raise ReplayError(f"{SIPP} is not installed (apt-get install sip-tester)")
    if not job.scripts:
        raise ReplayError("no call script given")
    if job.concurrent < 1 or (job.calls is not None and job.calls < 1):
        raise ReplayError("--concurrent and --calls must be at least 1")
    if job.audio is not None and not job.audio.is_file():
        raise ReplayError(f"no such audio file: {job.audio} (give another with --audio, or --no-audio)")
    if job.check not in CHECKS:
        raise ReplayError(f"unknown check {job.check!r}: expected {', '.join(CHECKS)}")
    try:
        injection = Injection.from_csv(job.injection) if job.injection else None
        compiled = compile_scripts(job.scripts, job.variables, injection, audio=job.audio,
                                   audible_only=job.check == "audio")
    except ScriptError as e:
        raise ReplayError(str(e)) from None
    probe(job.host, job.port)
    sounds = load_sounds(job.prompts) if job.check != "text" else None
    workdir = job.workdir or Path(tempfile.mkdtemp(prefix="replay-"))
    total = job.calls if job.calls is not None else (len(injection.rows) if injection else job.concurrent)
    results = []
    for c in compiled:
        results.append(run_compiled(c, job.host, job.port, workdir / c.script.name, calls=total,
                                    concurrent=job.concurrent, timeout=job.timeout, sounds=sounds))
        if job.secrets:
            forget_keys(workdir / c.script.name, c.script.name)
        echo(results[-1].report())
    passed = [r for r in results if r.passed]
    forgotten = f" (without the files that held {', '.join(sorted(job.secrets))})" if job.secrets else ""
    echo(f"\n{len(passed)} of {len(results)} scripts passed ({sum(len(r.calls) for r in results)} calls); "
         f"SIPp's files are in {workdir}{forgotten}")
    for r in results:
        if not r.passed:
            where = r.failures()[0][1] if r.failures() else None
            at = f" at step {where.number} (line {where.line}): {where.source}" if where else f": {r.error or 'see above'}"
            echo(f"FAILED {r.name}{at}")
    return EXIT_PASSED if len(passed) == len(results) else EXIT_FAILED


def forget_keys(directory: Path, name: str) -> None:
    """Delete the files of one script's run that hold the keys it sent (see ``KEYED_FILES``)."""
    for pattern in KEYED_FILES:
        (directory / pattern.format(name=name)).unlink(missing_ok=True)


def read_secrets(names: Sequence[str], stream: TextIO, ask: Callable[[str], str] | None = None,
                 given: Iterable[str] = ()) -> dict[str, str]:
    """The values of ``names``: from ``ask(name)`` (a hidden prompt at a terminal), else one line each from ``stream``.

    A PIN given as ``--var PIN=...`` would show in ``ps`` and in the shell's
    history; read this way it is never echoed.  ``given`` are the names that
    already have a value (``--var``).  ``ReplayError`` for a bad or repeated
    name, or when the input ends early or a value is empty, before anything
    is read for a bad name; the message never holds a value.
    """
    seen = set(given)
    for name in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ReplayError(f"--secret {name!r}: expected a variable name")
        if name in seen:
            raise ReplayError(f"{name} is given twice (by --var or --secret)")
        seen.add(name)
    values: dict[str, str] = {}
    for name in names:
        line = ask(name) if ask is not None else stream.readline()
        if ask is None and not line:
            raise ReplayError(f"standard input ended before the value of {name}")
        value = line.strip()
        if not value:
            raise ReplayError(f"the value of {name} is empty")
        values[name] = value
    return values


def parse_var(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` as a pair, or ``ValueError`` naming what was expected."""
    name, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"--var {text!r}: expected NAME=VALUE")
    return name, value


def probe(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> None:
    """Send SIP ``OPTIONS`` to ``host``:``port`` (UDP); return at the first SIP answer, else ``ReplayError``.

    Any answer will do (200, 404, 401...): it shows that a SIP server listens
    there, so that a wrong port is reported in a second instead of as every
    step of every call failing after SIPp's timeouts.
    """
    try:
        local_ip = local_ip_for(host, port)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as e:  # socket.gaierror: a host name that does not resolve
        raise ReplayError(f"cannot reach {host}:{port}: {e.strerror or e}") from None
    with s:
        try:
            s.bind((local_ip, 0))
            s.connect((host, port))
        except OSError as e:
            raise ReplayError(f"cannot reach {host}:{port}: {e.strerror or e}") from None
        local_port = s.getsockname()[1]
        tag = uuid.uuid4().hex
        request = "\r\n".join([
            f"OPTIONS sip:{DEFAULT_NUMBER}@{host}:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP {local_ip}:{local_port};branch=z9hG4bK{tag[:16]};rport",
            "Max-Forwards: 70",
            f"From: <sip:replay@{local_ip}:{local_port}>;tag={tag[16:24]}",
            f"To: <sip:{DEFAULT_NUMBER}@{host}:{port}>",
            f"Call-ID: {tag}@{local_ip}",
            "CSeq: 1 OPTIONS",
            f"Contact: <sip:replay@{local_ip}:{local_port}>",
            "Accept: application/sdp",
            "Content-Length: 0",
            "", "",
        ]).encode("ascii")
        deadline = time.monotonic() + timeout
        wait = 0.5  # SIP's T1, doubled at each resend
        while (left := deadline - time.monotonic()) > 0:
            try:
                s.send(request)
                s.settimeout(min(wait, left))
                while True:
                    if s.recv(65535).startswith(b"SIP/2.0 "):
                        return
            except TimeoutError:
                wait *= 2
            except ConnectionRefusedError:
                raise ReplayError(f"nothing listens for SIP on udp {host}:{port} (is Asterisk running? "
                                  "python -m testkit.sandbox start)") from None
            except OSError as e:
                raise ReplayError(f"cannot reach {host}:{port}: {e.strerror or e}") from None
    raise ReplayError(f"no SIP answer from udp {host}:{port} within {timeout:g} s (is Asterisk running there?)")


# --- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m testkit.replay``, the same command as ``cli.py replay``; returns its exit code (see ``EXIT_*``)."""
    parser = argparse.ArgumentParser(
        prog="python -m testkit.replay",
        description="Phone the hotline with call scripts (SIPp) and check, step by step, what it said and decided. "
                    "Exit codes: 0 every step passed, 1 refused (bad input; nothing phoned), 2 usage error, "
                    "3 replayed and some step failed.",
        epilog="Example: python -m testkit.replay tests/calls/recharge-one-card.call --port 5160 --var CALLER=13800000001 "
               "--var ACCOUNT=3100000001 --var AMOUNT=5000 --secret PIN < pin.txt",
    )
    parser.add_argument("scripts", nargs="+", type=Path, metavar="SCRIPT", help="call scripts (.call files)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"Asterisk's SIP address (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help=f"Asterisk's SIP UDP port (default {DEFAULT_PORT})")
    parser.add_argument("--var", action="append", default=[], type=_var, metavar="NAME=VALUE",
                        help="a value for ${NAME} (repeat)")
    parser.add_argument("--secret", action="append", default=[], metavar="NAME",
                        help="read ${NAME} from standard input, a line each (hidden prompt at a terminal), "
                             "and delete SIPp's files that held it after the run: for PINs (repeat)")
    parser.add_argument("--inject", type=Path, metavar="CSV",
                        help="per-call values: a header line of names, then one line per call")
    parser.add_argument("--concurrent", type=_positive, default=1, metavar="N", help="calls at once (default 1)")
    parser.add_argument("--calls", type=_positive, metavar="M",
                        help="calls in all (default: the injection rows, else N)")
    parser.add_argument("--workdir", type=Path,
                        help="where scenarios and SIPp's logs go (default: a new temporary folder)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="give up on a script after this long")
    parser.add_argument("--audio", type=Path, default=CALLER_AUDIO, metavar="PCAP",
                        help=f"the caller's voice, sent after the answer (default {CALLER_AUDIO})")
    parser.add_argument("--no-audio", action="store_true", help="send no audio (Asterisk's Answer() then waits 0.5 s)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--audio-only", action="store_true",
                      help="check only what the caller hears: needs no MESSAGE text (any Asterisk playing the prompts)")
    only.add_argument("--text-only", action="store_true", help="check only the texts the dialog sends (no listening)")
    parser.add_argument("--prompts", type=Path, metavar="DIR",
                        help=f"the rendered prompts to listen for (default: rendered once into {DEFAULT_PROMPTS})")
    args = parser.parse_args(argv)

    try:
        variables = dict(args.var)
        secrets = read_secrets(args.secret, sys.stdin, ask=_hidden_prompt if sys.stdin.isatty() else None,
                               given=variables)
        job = ReplayJob(tuple(args.scripts), args.host, args.port, {**variables, **secrets},
                        frozenset(secrets), args.inject, args.concurrent, args.calls, args.workdir, args.timeout,
                        None if args.no_audio else args.audio,
                        "audio" if args.audio_only else "text" if args.text_only else "both", args.prompts)
        return run_job(job)
    except ReplayError as e:
        print(f"replay: error: {e}", file=sys.stderr)
        return EXIT_REFUSED


def _hidden_prompt(name: str) -> str:
    import getpass

    return getpass.getpass(f"{name}: ")


def _var(text: str) -> tuple[str, str]:
    try:
        return parse_var(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


if __name__ == "__main__":
    sys.exit(main())
