"""Call scripts: a tester's short description of one phone call, compiled into a SIPp scenario.

A call script is a text file (``tests/calls/*.call``) that phones the
hotline the way a caller would and says what the caller must see::

    # An unknown account is refused; the caller hangs up.
    call 95598 from 13800000001
    expect prompt=welcome
    send 1
    expect prompt=enter-account
    send ${ACCOUNT}#
    expect prompt=confirm-account
    send 1
    expect result=unknown_account
    expect prompt=enter-account
    wait 500ms
    hangup

One command a line; blank lines and lines starting with ``#`` are ignored
(``#`` elsewhere is the phone's key); the first comment line is the
script's title.

``call NUMBER [from CALLER]``
    Optional, first: the number dialled (default 95598) and the caller's
    number (the SIP From user, which Asterisk gives the dialog as the
    caller id; default 13800138000).
``expect TEXT``
    The hotline sends ``TEXT`` (the dialog sends every prompt it plays as
    ``prompt=<id>``, every decision as ``result=<code>``, and spoken numbers
    and the holder's name as ``digits=``, ``amount=``, ``holder=``).  The
    whole text must equal ``TEXT``; ``expect /REGEX/`` takes a POSIX
    extended regular expression instead, matched against the whole text.
``dtmf info`` or ``dtmf rfc4733``
    Optional, after ``call`` and before the first step: how keys are sent,
    as SIP INFO (the default) or as RFC 4733 events in the caller's RTP
    (sent by ``testkit.media``'s relay, which answers the INFO instead of
    passing it on).
``send KEYS`` and ``send KEYS after DURATION``
    Press keys: ``0``-``9``, ``*``, ``#``; each is one SIP INFO
    (``application/dtmf-relay``), 300 ms after the one before (and 300 ms
    after whatever came before the first), as the sandbox notes require.
    ``after DURATION`` presses the first key DURATION after the expect
    before it was seen instead: the prompt's text comes as the prompt
    starts, so ``send 1 after 1500ms`` presses 1.5 s into it (barge-in), and
    a DURATION longer than the prompt presses once it has ended.
``wait DURATION``
    Do nothing for ``500ms``, ``2s`` or ``1.5s`` before the next ``send`` or
    ``hangup`` (a caller thinking, or staying silent).  Before an ``expect``
    a wait changes nothing, because an expect waits anyway.
``expect bye``
    The hotline hangs up.  Last line.
``hangup``
    The caller hangs up.  Last line.

``${NAME}`` in ``call``, ``expect`` and ``send`` is replaced by a variable
given at replay time (``--var PIN=...``), or, for ``call`` and ``send``, by
a per-call value from an injection file (one row per call, so that fifty
concurrent calls each use a card of their own).

What ``expect`` means, and how the scenario keeps up with the hotline
---------------------------------------------------------------------
An ``expect`` passes when its text comes *after* the text the expect before
it matched, in the order the dialog sent them; texts that no expect names
(``digits=``, ``holder=``, prompts a script does not care about) are
passed over.  So a script says what must happen, in order, without
repeating every word the hotline says.

Making SIPp follow that takes care.  The dialog sends its texts in bursts
(``result=account-ok``, ``holder=...``, ``prompt=account-found`` within a
millisecond), and SIPp takes a MESSAGE only while its call waits in a
``<recv>``: one that arrives while the call is sending the 200 for the one
before is "unexpected" (under load this happens to a few calls in a
hundred), and Asterisk's SIP stack does not always send them in order
either.  The scenario is therefore run with SIPp's ``abortunexp`` behaviour
off: an unexpected MESSAGE is left unanswered, Asterisk sends it again 0.5 s
later (then 1, 2, 4 s...), and a waiting ``<recv>`` takes the copy.
Nothing is lost or seen twice, but texts can come late and out of order.
So the scenario itself waits only where it must act: before each ``send``,
``wait`` or ``hangup`` it loops over incoming texts, answering each, until
the text of the *last* ``expect`` before that action arrives (a
synchronisation point; any other texts are answered and passed over), and
after the last action it takes texts until the hotline's BYE.
``testkit.replay`` then puts the call's texts in the dialog's order (Asterisk
numbers a call's MESSAGEs with increasing CSeqs; SIPp's message trace has
every one, answered or not) and checks every ``expect`` against them.  A
BYE from the hotline while the scenario waits for a text or sends keys
fails the call at once (it is answered); ``expect bye`` answers it as a pass.

What can be heard
-----------------
``heard_text`` names the expects that audio can prove (``prompt=``,
``digits=``, ``amount=``, written literally).  ``testkit.replay`` checks them
in the call's audio as well as in its text; compiled ``audible_only`` the
scenario waits only on ``prompt=`` expects, whose texts then come from the
relay that heard them (``testkit.media``), and ``route_through`` points a
compiled scenario at that relay.

A keyed answer must reach Asterisk while the dialog is listening: between
two AGI commands Asterisk drops the keys it receives.  Each key is sent
300 ms after the text before it, and the dialog sends a question's text
just before it starts asking, so ``expect prompt=enter-pin`` then
``send ${PIN}#`` lands in the question; a key sent while a prompt plays
interrupts it (barge-in) and becomes the first key of the answer, which is
how ``tests/calls/recharge-quick.call`` calls.

Limits: SIPp reads a scenario of at most 64 KiB (``SCENARIO_LIMIT``), about
90 keys with the expects around them; longer calls are refused with that
reason.  A per-call (injected) value cannot be used in ``expect``.

This module only parses and compiles; ``testkit.replay`` runs the result.  It
is product code for testers and imports nothing beyond the standard library.
"""

# test-case-name: tests.testkit.test_callscript, tests.e2e.test_hotline

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

DEFAULT_NUMBER = "95598"
DEFAULT_CALLER = "13800138000"
KEY_GAP_MS = 300  # between DTMF INFOs, and before the first one
KEYS = "0123456789*#"
MAX_WAIT_MS = 600_000
DTMF_MODES = ("info", "rfc4733")
AUDIBLE = ("prompt=", "digits=", "amount=")  # texts that name what the caller hears, so audio can prove them
LISTEN_BEFORE_HANGUP_MS = 1000  # see route_through
SCENARIO_LIMIT = 65536  # bytes: SIPp's XML reader (xp_parser.c, XP_MAX_FILE_LEN) refuses longer scenario files

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PARTY = re.compile(r"^[A-Za-z0-9+*#._-]{1,32}$")  # a SIP user part we are willing to write
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)$")
_FIELD = re.compile(r"\[field\d+\]")
_ERE_SPECIAL = re.compile(r"([.\[\]()*+?{}|^$\\])")


class ScriptError(ValueError):
    """A call script (or what it was given) is unusable; ``str()`` is one line: ``where:line: what is wrong``."""

    def __init__(self, message: str, *, path: str = "", line: int = 0) -> None:
        self.path, self.line, self.reason = path, line, message
        where = f"{path or '<script>'}:{line}: " if line else (f"{path}: " if path else "")
        super().__init__(where + message)


# --- the steps ------------------------------------------------------------------------------
#
# The same step types serve the script format (built by ``parse``) and Python
# callers (``tests/asterisk``), which write their expectations as regular
# expressions and their keys as strings.


@dataclass(frozen=True)
class ExpectText:
    """The hotline sends a text whose whole body matches the POSIX ERE ``regexp``."""

    regexp: str
    line: int = 0
    source: str = ""

    def describe(self) -> str:
        return self.source or f"expect /{self.regexp}/"


@dataclass(frozen=True)
class Digits:
    """Press keys: each of ``digits`` (``0-9*#``, or a SIPp ``[fieldN]`` holding one key) is one INFO after ``gap_ms``."""

    digits: str
    gap_ms: int = KEY_GAP_MS
    line: int = 0
    source: str = ""
    first_ms: int | None = None  # before the first key, when not ``gap_ms`` (``send KEYS after DURATION``)

    @property
    def keys(self) -> tuple[str, ...]:
        keys, rest = [], self.digits
        while rest:
            m = _FIELD.match(rest)
            key = m.group(0) if m else rest[0]
            if not m and key not in KEYS:
                raise ScriptError(f"not a phone key: {key!r}", line=self.line)
            keys.append(key)
            rest = rest[len(key):]
        return tuple(keys)

    def describe(self) -> str:
        return self.source or f"send {self.digits}"


@dataclass(frozen=True)
class Pause:
    """The caller does nothing for ``ms`` milliseconds."""

    ms: int
    line: int = 0
    source: str = ""

    def describe(self) -> str:
        return self.source or f"wait {self.ms}ms"


@dataclass(frozen=True)
class ExpectBye:
    """The hotline hangs up: Asterisk sends BYE, the caller answers 200."""

    line: int = 0
    source: str = ""

    def describe(self) -> str:
        return self.source or "expect bye"


@dataclass(frozen=True)
class HangUp:
    """The caller hangs up: BYE, and Asterisk answers 200."""

    line: int = 0
    source: str = ""

    def describe(self) -> str:
        return self.source or "hangup"


Step = ExpectText | Digits | Pause | ExpectBye | HangUp


@dataclass(frozen=True)
class CallScript:
    """A parsed call script: who calls whom, and the steps, each knowing its line."""

    steps: tuple[Step, ...]
    number: str = DEFAULT_NUMBER
    caller: str = DEFAULT_CALLER
    title: str = ""
    name: str = "call"
    path: str = ""
    call_line: int = 0  # the line of ``call``, when the script has one
    dtmf: str = "info"  # how keys are sent: ``info`` (SIP INFO) or ``rfc4733`` (RTP events); see ``DTMF_MODES``

    def variables(self) -> set[str]:
        """The ``${NAME}`` variables the script uses."""
        texts = [self.number, self.caller] + [s.source for s in self.steps]
        return {m.group(1) for t in texts for m in _VARIABLE.finditer(t)}


def heard_text(step: ExpectText) -> str:
    """The literal text of an ``expect`` that names something audible (``prompt=``, ``digits=``, ``amount=``), else "".

    A ``/REGEX/`` expect, and texts the caller cannot hear (``result=``,
    ``holder=``), are proved by the MESSAGE text only.
    """
    if step.source.startswith("expect /") or not (step.regexp.startswith("^") and step.regexp.endswith("$")):
        return ""
    text = re.sub(r"\\(.)", r"\1", step.regexp[1:-1])
    return text if text.startswith(AUDIBLE) and "${" not in text and "[field" not in text else ""


# --- parsing ---------------------------------------------------------------------------------

_Fail = Callable[[str], ScriptError]  # makes the error for the line being parsed


def parse(text: str, *, name: str = "call", path: str = "") -> CallScript:
    """Parse the text of a call script; ``ScriptError`` (with the line) on the first mistake."""
    steps: list[Step] = []
    dtmf = "info"
    title: list[str] = []
    number, caller = DEFAULT_NUMBER, DEFAULT_CALLER
    call_line = 0
    seen_command = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if not seen_command:
                title.append(line.lstrip("#").strip())
            continue

        def fail(message: str, lineno: int = lineno) -> ScriptError:
            return ScriptError(message, path=path, line=lineno)

        if steps and isinstance(steps[-1], ExpectBye | HangUp):
            raise fail(f"nothing can follow {steps[-1].describe()!r} (line {steps[-1].line}): the call is over")
        verb, _, rest = line.partition(" ")
        rest = rest.strip()
        _check_variables(rest, fail)
        if verb == "call":
            if seen_command:
                raise fail("'call' must be the first command")
            number, caller = _parse_call(rest, fail)
            call_line = lineno
        elif verb == "dtmf":
            if steps:
                raise fail("'dtmf' comes before the first step")
            if rest not in DTMF_MODES:
                raise fail(f"expected: dtmf {' or dtmf '.join(DTMF_MODES)}")
            dtmf = rest
        elif verb == "expect":
            if not rest:
                raise fail("'expect' needs a text, e.g. expect prompt=welcome")
            if rest == "bye":
                steps.append(ExpectBye(line=lineno, source=line))
            elif len(rest) >= 2 and rest.startswith("/") and rest.endswith("/"):
                steps.append(ExpectText(f"^({rest[1:-1]})$", line=lineno, source=line))
            else:
                if rest.startswith("/"):
                    raise fail("a regular expression is written /REGEX/, with a closing slash")
                steps.append(ExpectText(f"^{_escape_around_variables(rest)}$", line=lineno, source=line))
        elif verb == "send":
            keys, after, delay = rest.partition(" after ")
            keys = keys.replace(" ", "")
            if not keys:
                raise fail("'send' needs keys, e.g. send 1 or send ${PIN}#")
            bad = [c for c in _VARIABLE.sub("", keys) if c not in KEYS]
            if bad:
                raise fail(f"{bad[0]!r} is not a phone key (keys are 0-9, * and #)")
            first = _parse_duration(delay, fail) if after else None
            steps.append(Digits(keys, line=lineno, source=line, first_ms=first))
        elif verb == "wait":
            steps.append(Pause(_parse_duration(rest, fail), line=lineno, source=line))
        elif verb == "hangup":
            if rest:
                raise fail("'hangup' takes nothing after it")
            steps.append(HangUp(line=lineno, source=line))
        else:
            raise fail(f"unknown command {verb!r}: expected call, dtmf, expect, send, wait, expect bye or hangup")
        seen_command = True
    if not steps:
        raise ScriptError("the script has no steps", path=path, line=0)
    if not isinstance(steps[-1], ExpectBye | HangUp):
        raise ScriptError("a call script ends with 'expect bye' (the hotline hangs up) or 'hangup' (the caller does)",
                          path=path, line=steps[-1].line)
    return CallScript(tuple(steps), number=number, caller=caller, title=next((t for t in title if t), ""), name=name,
                      path=path, call_line=call_line, dtmf=dtmf)


def load(path: str | Path) -> CallScript:
    """Read and parse a ``.call`` file; the script is named after the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ScriptError(f"cannot read the script: {e.strerror}", path=str(p)) from None
    except UnicodeDecodeError:
        raise ScriptError("the script is not UTF-8 text", path=str(p)) from None
    return parse(text, name=p.stem, path=str(p))


def _parse_call(rest: str, fail: _Fail) -> tuple[str, str]:
    words = rest.split()
    if len(words) == 1:
        number, caller = words[0], DEFAULT_CALLER
    elif len(words) == 3 and words[1] == "from":
        number, caller = words[0], words[2]
    else:
        raise fail("expected: call NUMBER [from CALLER]")
    for what, value in (("number", number), ("caller", caller)):
        if not _PARTY.match(_VARIABLE.sub("x", value)):
            raise fail(f"the {what} {value!r} may hold only letters, digits and + * # . _ -")
    return number, caller


def _parse_duration(text: str, fail: _Fail) -> int:
    m = _DURATION.match(text.replace(" ", ""))
    if not m:
        raise fail(f"expected a duration like 500ms or 2s, not {text!r}")
    ms = round(float(m.group(1)) * (1 if m.group(2) == "ms" else 1000))
    if not 0 < ms <= MAX_WAIT_MS:
        raise fail(f"a wait is from 1ms to {MAX_WAIT_MS // 1000}s")
    return ms


def _check_variables(text: str, fail: _Fail) -> None:
    if "${" in _VARIABLE.sub("", text):
        raise fail("a variable is written ${NAME}, with letters, digits and _")


def _ere_escape(text: str) -> str:
    return _ERE_SPECIAL.sub(r"\\\1", text)


def _escape_around_variables(text: str) -> str:
    """``text`` as an ERE matching it literally, its ``${NAME}`` left for ``bind`` (which escapes the value)."""
    parts = _VARIABLE.split(text)  # literal, name, literal, name, ...
    return "".join(_ere_escape(p) if i % 2 == 0 else f"${{{p}}}" for i, p in enumerate(parts))


# --- values: fixed variables and per-call injection -----------------------------------------


@dataclass(frozen=True)
class Injection:
    """Per-call values for some variables: one row per call, given to SIPp as an ``-inf`` CSV file.

    SIPp reads the rows in order (``SEQUENTIAL``), one per call.  A value
    used in ``send`` has the same length in every row, and each of its keys
    gets a field of its own (SIPp cannot split a field): the whole value is
    field ``field_of(name)``, its k-th key ``field_of(name) + 1 + k``.
    """

    names: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    _layout: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.names or not self.rows:
            raise ScriptError("an injection needs variable names and at least one row")
        for name in self.names:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ScriptError(f"injection: {name!r} is not a variable name")
        for n, row in enumerate(self.rows, start=1):
            if len(row) != len(self.names):
                raise ScriptError(f"injection row {n} has {len(row)} values for {len(self.names)} names")
            for value in row:
                if not value or any(c in value for c in ";\r\n[]"):
                    raise ScriptError(f"injection row {n}: values must be non-empty, without ; [ ] or line breaks")
        offset = 0
        for j, name in enumerate(self.names):
            self._layout[name] = offset
            offset += 1 + (self._key_count(j) or 0)

    @classmethod
    def from_csv(cls, path: str | Path) -> Injection:
        """A CSV file whose first line names the variables (``ACCOUNT,PIN``) and each later line is one call."""
        import csv

        try:
            with open(path, encoding="utf-8", newline="") as f:
                rows = [tuple(c.strip() for c in r) for r in csv.reader(f) if r and any(c.strip() for c in r)]
        except OSError as e:
            raise ScriptError(f"cannot read the injection file: {e.strerror}", path=str(path)) from None
        if len(rows) < 2:
            raise ScriptError("an injection file has a header line of names and at least one row", path=str(path))
        return cls(rows[0], tuple(rows[1:]))

    def _key_count(self, j: int) -> int | None:
        lengths = {len(row[j]) for row in self.rows}
        return lengths.pop() if len(lengths) == 1 else None

    def field_of(self, name: str) -> int:
        return self._layout[name]

    def key_fields(self, name: str) -> list[str]:
        """``[fieldN]`` for each key of ``name``'s values, or ``ScriptError`` when the rows differ in length."""
        j = self.names.index(name)
        count = self._key_count(j)
        if count is None:
            raise ScriptError(f"${{{name}}} is sent as keys, so every injected value needs the same length")
        bad = [row[j] for row in self.rows if any(c not in KEYS for c in row[j])]
        if bad:
            raise ScriptError(f"${{{name}}} is sent as keys, but an injected value holds other characters")
        base = self._layout[name]
        return [f"[field{base + 1 + k}]" for k in range(count)]

    def csv_text(self) -> str:
        """The ``-inf`` file: ``SEQUENTIAL``, then per row each whole value followed by its keys."""
        lines = ["SEQUENTIAL"]
        for row in self.rows:
            fields: list[str] = []
            for j, value in enumerate(row):
                fields.append(value)
                if self._key_count(j) is not None:
                    fields.extend(value)
            lines.append(";".join(fields) + ";")
        return "\n".join(lines) + "\n"


def bind(script: CallScript, variables: Mapping[str, str] | None = None,
         injection: Injection | None = None) -> CallScript:
    """``script`` with every ``${NAME}`` replaced: by ``variables[NAME]``, else by ``injection``'s per-call fields.

    Raises ``ScriptError`` naming the line of a variable that has no value,
    of a value that is not keys where keys are sent, or of a per-call
    value used in an ``expect`` (SIPp matches texts with patterns fixed
    when the scenario is loaded).
    """
    values = dict(variables or {})
    injected = set(injection.names) if injection else set()
    for name, value in values.items():
        if any(c in value for c in "\r\n\x00"):
            raise ScriptError(f"the value of {name} holds a line break", path=script.path)

    def sub(text: str, line: int, how: str) -> str:
        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            if name in values:
                value = values[name]
                if how == "keys" and any(c not in KEYS for c in value):
                    raise ScriptError(f"${{{name}}} is sent as keys, but its value is not 0-9, * and #",
                                      path=script.path, line=line)
                return _ere_escape(value) if how == "regexp" else value
            if name in injected and injection is not None:
                if how == "regexp":
                    raise ScriptError(f"${{{name}}} comes from the injection file and cannot be used in expect",
                                      path=script.path, line=line)
                if how == "keys":
                    try:
                        return "".join(injection.key_fields(name))
                    except ScriptError as e:
                        raise ScriptError(e.reason, path=script.path, line=line) from None
                return f"[field{injection.field_of(name)}]"
            raise ScriptError(f"${{{name}}} has no value (give it with --var {name}=...)", path=script.path, line=line)

        return _VARIABLE.sub(one, text)

    steps: list[Step] = []
    for step in script.steps:
        if isinstance(step, ExpectText):
            steps.append(ExpectText(sub(step.regexp, step.line, "regexp"), step.line, step.source))
        elif isinstance(step, Digits):
            steps.append(Digits(sub(step.digits, step.line, "keys"), step.gap_ms, step.line, step.source, step.first_ms))
        else:
            steps.append(step)
    first = script.call_line or script.steps[0].line
    number, caller = sub(script.number, first, "party"), sub(script.caller, first, "party")
    for what, value in (("number", number), ("caller", caller)):
        if not _PARTY.match(_FIELD.sub("x", value)):
            raise ScriptError(f"the {what} {value!r} may hold only letters, digits and + * # . _ -", path=script.path,
                              line=first)
    return CallScript(tuple(steps), number=number, caller=caller, title=script.title, name=script.name,
                      path=script.path, call_line=script.call_line, dtmf=script.dtmf)


# --- compiling ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compiled:
    """A scenario ready for SIPp: its XML, the steps it runs (numbered from 1), and the injection file's text."""

    script: CallScript
    xml: str
    sync_steps: frozenset[int]  # the expects the scenario itself waits for (1-based step numbers)
    injection_csv: str | None = None
    audible_only: bool = False  # compiled to wait only on what can be heard (see ``compile_script``)

    @property
    def steps(self) -> tuple[Step, ...]:
        return self.script.steps


def compile_script(script: CallScript, variables: Mapping[str, str] | None = None,
                   injection: Injection | None = None, *, audio: str | None = None,
                   audible_only: bool = False) -> Compiled:
    """Bind ``script``'s variables and compile it; see ``call_scenario`` for the scenario's shape.

    ``audible_only``: the scenario waits only on ``expect prompt=...`` steps
    (before each action, on the last one before it), because in an
    audio-only replay the only texts SIPp receives are the prompts the
    replay heard (``testkit.media``).
    """
    bound = bind(script, variables, injection)
    xml, syncs = _build(bound.steps, caller=bound.caller, number=bound.number, name=bound.name, audio=audio,
                        audible_only=audible_only)
    return Compiled(bound, xml, frozenset(syncs), injection.csv_text() if injection else None, audible_only)


def call_scenario(steps: Sequence[Step], *, caller: str = DEFAULT_CALLER, number: str = DEFAULT_NUMBER,
                  name: str = "call", audio: str | None = None) -> str:
    """A SIPp scenario: INVITE ``number`` as ``caller`` (ulaw), take the 200 and ACK it, then ``steps`` in order.

    ``caller`` is the From user; Asterisk picks the endpoint by it first
    (``proof`` reaches the sandbox's proof context) and by address second.
    ``audio`` is a pcap file of G.711 RTP (alaw, payload 8) that the caller
    sends once the call is answered, as a phone sends its microphone's
    sound: Asterisk's ``Answer()`` waits up to 500 ms for the caller's first
    audio frame, so without it every call starts half a second late.
    Run it with SIPp's ``abortunexp`` behaviour off (``testkit.replay.run_sipp``
    does): see the module docstring.  Steps without an ending get one: a
    scenario must finish with the BYE.
    """
    xml, _ = _build(list(steps), caller=caller, number=number, name=name, audio=audio)
    return xml


def sync_points(steps: Sequence[Step], audible_only: bool = False) -> list[int]:
    """The 0-based indexes of the expects the scenario waits for: the last expect (prompt) before each action."""
    syncs, last = [], None
    for i, step in enumerate(steps):
        if isinstance(step, ExpectText) and (not audible_only or heard_text(step).startswith("prompt=")):
            last = i
        elif isinstance(step, Digits | HangUp) or (isinstance(step, Pause) and _holds_back(steps, i)):
            if last is not None:
                syncs.append(last)
            last = None
    # Text expects after the last action are read by the final wait for the BYE (or not at all before a hangup).
    return syncs


def _holds_back(steps: Sequence[Step], i: int) -> bool:
    """Whether the wait at ``i`` delays something: before an expect it does not (the expect waits anyway)."""
    following = next((s for s in steps[i + 1:] if not isinstance(s, Pause)), None)
    return isinstance(following, Digits | HangUp)


# Log lines the scenario writes (``-trace_logs``), one event each; ``testkit.replay`` reads them back.
#   CALLID TIME answer                   the 200 to the INVITE arrived
#   CALLID TIME text BODY CSEQ           a text arrived (every text the scenario takes is logged)
#   CALLID TIME N sync CSEQ              step N (an expect) was seen by the scenario, which goes on
#   CALLID TIME N sent                   step N's keys were all acknowledged
#   CALLID TIME N wait                   step N (a wait) began
#   CALLID TIME N bye                    step N: the hotline hung up, as expected
#   CALLID TIME N hangup                 step N: the caller hung up, Asterisk answered
#   CALLID TIME fail hungup              the hotline hung up while the scenario waited for a text or sent keys
# TIME is SIPp's [timestamp]: date, time and seconds since the epoch, tab-separated; N is the 1-based step number.
# Texts that arrive while the scenario is not waiting in a <recv> are in SIPp's message trace only.
_LOG = "[call_id] [timestamp]"

_FROM = "From: <sip:{caller}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]"
_TO = "To: <sip:{number}@[remote_ip]:[remote_port]>"


def _cdata(lines: Iterable[str]) -> str:
    # No indentation: SIPp would strip it, and a scenario file may not exceed SCENARIO_LIMIT.
    return "<![CDATA[\n" + "\n".join(lines) + "\n]]>\n"


def _answer(attrs: str = "", log: str = "") -> str:
    """A 200 OK to the request just received (``[last_*]``), with an optional log action."""
    lines = ["SIP/2.0 200 OK", "[last_Via:]", "[last_From:]", "[last_To:]", "[last_Call-ID:]", "[last_CSeq:]",
             "Content-Length: 0"]
    action = f'    <action><log message="{_LOG} {log}"/></action>\n' if log else ""
    return f"  <send{attrs}>\n{_cdata(lines)}{action}  </send>\n"


def _log(event: str) -> str:
    return f'<log message="{_LOG} {event}"/>'


_TEXT_ACTIONS = (
    '      <ereg regexp=".*" search_in="body" check_it="false" assign_to="t"/>\n'
    '      <ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" check_it="false" assign_to="q"/>\n'
)
_TEXT_LOG = f"      {_log('text [$t] [$q]')}\n"

# Catches the hotline's BYE where the script does not expect it: the check fails (a BYE has no body), which
# marks the call failed, and the call goes on to answer the BYE.  (With abortunexp off, SIPp would ignore it.)
_HUNG_UP = ('  <recv request="BYE" optional="true" next="hungup"><action><ereg regexp="BODY" search_in="body" '
            'check_it="true" assign_to="f"/></action></recv>\n')


class _Dialog:
    """What the steps need to write in-dialog requests: the caller, the number and the next CSeq."""

    def __init__(self, caller: str, number: str) -> None:
        self.caller, self.number, self.cseq = caller, number, 1

    def request(self, method: str, content_type: str | None = None, body: str = "") -> str:
        self.cseq += 1
        lines = [
            f"{method} [next_url] SIP/2.0",  # the hotline's Contact: through a dispatcher, the Asterisk that answered
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
            _FROM.format(caller=self.caller),
            _TO.format(number=self.number) + "[peer_tag_param]",
            "Call-ID: [call_id]",
            f"CSeq: {self.cseq} {method}",
            "Max-Forwards: 70",
        ]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines += ["Content-Length: [len]", "", *body.splitlines()]
        return f'  <send retrans="500">\n{_cdata(lines)}  </send>\n'


def _build(steps: Sequence[Step], *, caller: str, number: str, name: str,
           audio: str | None = None, audible_only: bool = False) -> tuple[str, list[int]]:
    steps = list(steps)
    if not steps or not isinstance(steps[-1], ExpectBye | HangUp):
        steps.append(ExpectBye())
    for s in steps[:-1]:
        if isinstance(s, ExpectBye | HangUp):
            raise ScriptError(f"{s.describe()} must be the last step")
    syncs = sync_points(steps, audible_only)
    dialog = _Dialog(caller, number)
    out = [
        '<?xml version="1.0" encoding="UTF-8" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n',
        "<!-- Compiled by testkit/callscript.py; run with -default_behaviors all,-abortunexp (see its docstring). -->\n",
        f"<scenario name={quoteattr(name)}>\n",
        _invite(caller, number, audio),
    ]
    for i, step in enumerate(steps):
        n = i + 1
        if isinstance(step, ExpectText):
            if i in syncs:
                out.append(_wait_for_text(n, step))
            continue
        if isinstance(step, Digits):
            keys = step.keys
            for k, key in enumerate(keys):
                pause = step.first_ms if k == 0 and step.first_ms is not None else step.gap_ms
                out.append(f'  <pause milliseconds="{pause}"/>\n')
                out.append(dialog.request("INFO", "application/dtmf-relay", f"Signal={key}\nDuration=160"))
                out.append(_HUNG_UP)
                last = f"    <action>{_log(f'{n} sent')}</action>\n" if k == len(keys) - 1 else ""
                out.append(f'  <recv response="200">\n{last}  </recv>\n' if last else '  <recv response="200"/>\n')
        elif isinstance(step, Pause):
            out.append(f"  <nop>\n    <action>{_log(f'{n} wait')}</action>\n  </nop>\n")
            if _holds_back(steps, i):
                out.append(f'  <pause milliseconds="{step.ms}"/>\n')
        elif isinstance(step, ExpectBye):
            out.append(_wait_for_bye(n))
        elif isinstance(step, HangUp):
            out.append(dialog.request("BYE"))
            out.append(f"  <recv response=\"200\">\n    <action>{_log(f'{n} hangup')}</action>\n  </recv>\n")
            out.append('  <nop next="end"/>\n')
    out.append('  <label id="hungup"/>\n')
    # $f is only set where a BYE is watched for; SIPp refuses a variable that is used but never set.
    out.append(_answer(' next="end"', "fail hungup[$f]" if any(_HUNG_UP in part for part in out) else "fail hungup"))
    out.append('  <label id="end"/>\n</scenario>\n')
    xml = "".join(out)
    size = len(xml.encode("utf-8"))
    if size > SCENARIO_LIMIT:
        raise ScriptError(f"the script compiles to {size} bytes of scenario, more than SIPp reads "
                          f"({SCENARIO_LIMIT}); split it into shorter calls")
    return xml, [s + 1 for s in syncs]


def _invite(caller: str, number: str, audio: str | None = None) -> str:
    invite = [
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
        *(["m=audio [media_port] RTP/AVP 0 8", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000"] if audio else
          ["m=audio [media_port] RTP/AVP 0", "a=rtpmap:0 PCMU/8000"]),
    ]
    ack = [
        "ACK [next_url] SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
        _FROM.format(caller=caller),
        _TO.format(number=number) + "[peer_tag_param]",
        "Call-ID: [call_id]",
        "CSeq: 1 ACK",
        f"Contact: <sip:{caller}@[local_ip]:[local_port]>",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
    return (
        f'  <send retrans="500">\n{_cdata(invite)}  </send>\n'
        '  <recv response="100" optional="true"/>\n'
        '  <recv response="180" optional="true"/>\n'
        '  <recv response="183" optional="true"/>\n'
        f"  <recv response=\"200\" rrs=\"true\">\n    <action>{_log('answer')}</action>\n  </recv>\n"
        f"  <send>\n{_cdata(ack)}  </send>\n"
        + (f'  <nop><action><exec play_pcap_audio={quoteattr(audio)}/></action></nop>\n' if audio else "")
    )


def _wait_for_text(n: int, step: ExpectText) -> str:
    """Take texts, answering each, until one matches step ``n``; a BYE meanwhile fails the call."""
    return (
        f'  <label id="w{n}"/>\n'
        + _HUNG_UP
        + f'  <recv request="MESSAGE" next="s{n}" test="m{n}">\n    <action>\n'
        + _TEXT_ACTIONS
        + f'      <ereg regexp={quoteattr(step.regexp)} search_in="body" check_it="false" assign_to="m{n}"/>\n'
        + _TEXT_LOG
        + "    </action>\n  </recv>\n"
        + _answer(f' next="w{n}"')
        + f'  <label id="s{n}"/>\n'
        + _answer("", f"{n} sync [$q]")
    )


def _wait_for_bye(n: int) -> str:
    """Take texts, answering each, until the hotline's BYE; answer it and end the call."""
    return (
        f'  <label id="w{n}"/>\n'
        f'  <recv request="BYE" optional="true" next="b{n}"/>\n'
        '  <recv request="MESSAGE">\n    <action>\n'
        + _TEXT_ACTIONS
        + _TEXT_LOG
        + "    </action>\n  </recv>\n"
        + _answer(f' next="w{n}"')
        + f'  <label id="b{n}"/>\n'
        + _answer(' next="end"', f"{n} bye")
    )


def route_through(xml: str, sip: tuple[str, int], rtp: tuple[str, int]) -> str:
    """The scenario ``xml`` with its SIP addresses and SDP pointing at a ``testkit.media.MediaAgent``.

    Via and Contact name the agent's SIP socket (so Asterisk answers and
    calls back through it, whatever its ``force_rport``/``rewrite_contact``),
    the SDP offers G.711 and RFC 4733 events at the agent's RTP socket, and
    SIPp sends no pcap audio of its own (the agent sends the caller's side),
    and ``hangup`` waits ``LISTEN_BEFORE_HANGUP_MS`` first.
    """
    xml = xml.replace("[local_ip]:[local_port]", f"{sip[0]}:{sip[1]}")
    xml = re.sub(r"^a=rtpmap:[08] PCM[UA]/8000\n", "", xml, flags=re.M)
    xml = re.sub(r"^c=IN IP\[media_ip_type\] \[media_ip\]$", f"c=IN IP4 {rtp[0]}", xml, flags=re.M)
    xml = re.sub(r"^m=audio \[media_port\] RTP/AVP[ 0-9]*$",
                 f"m=audio {rtp[1]} RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n"
                 "a=fmtp:101 0-16\na=ptime:20", xml, flags=re.M)
    xml = re.sub(r"^  <nop><action><exec play_pcap_audio=.*\n", "", xml, flags=re.M)
    # The caller hangs up a moment later than the text asks, so that the prompt expected last is heard too.
    return xml.replace('  <send retrans="500">\n<![CDATA[\nBYE ', f'  <pause milliseconds="{LISTEN_BEFORE_HANGUP_MS}"/>\n'
                       '  <send retrans="500">\n<![CDATA[\nBYE ')
