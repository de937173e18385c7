"""The dialog's ``Channel`` over pyst2's ``asterisk.agi.AGI``: one AGI command per method, nothing more.

Prompts are sound files named by prompt id (``prompt_prefix`` + id, looked
up by Asterisk in the channel's language directory, e.g. ``sounds/zh/``);
``voice_prompts.build`` renders them, together with the ``digits/...``
files that Asterisk's own ``SAY DIGITS`` and ``SAY NUMBER`` play.

- ``play`` is ``STREAM FILE`` with escape digits (the key that stopped it is returned).
- ``read_digits`` is ``GET DATA`` (the prompt plays with barge-in, ``#`` ends
  the entry); with no prompt it collects keys with ``WAIT FOR DIGIT``.
- ``say_amount`` is ``SAY NUMBER`` for the yuan (Asterisk says numbers in
  Mandarin itself when the channel language is ``zh``) followed by the unit
  prompts: 元/角/分 in Mandarin, "yuan" and "fen" in English.
- ``transfer`` sets ``RECHARGE_NEXT=agent``; the dialplan dials the agents
  once the AGI has ended.  ``commit_sent`` sets ``RECHARGE_COMMIT_SENT=yes``,
  which the dialplan reads should the dialog be lost mid-call.
- ``send_text`` is ``SEND TEXT`` (an in-dialog SIP MESSAGE on PJSIP); a
  channel that cannot carry text just drops it.

AGI failures are translated at this edge: a hangup (SIGHUP, a broken pipe,
``result=-1`` on a read, a dead-channel answer) becomes ``CallerHungUp``;
a prompt that cannot be played is logged and skipped, never fatal.

Runs inside Asterisk's AGI process (Python 3.11 to 3.14): standard library,
pyst2 and ``ivr.dialog`` only.
"""

# test-case-name: tests.ivr.test_dialog (the dialog; this adapter is exercised by the SIPp call scripts)

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from asterisk.agi import AGIAppError, AGIHangup, AGIUnknownError

from ivr.dialog import CallerHungUp, Prompt

log = logging.getLogger("ivr.agi_channel")

# What SEND TEXT may carry: no quotes or backslashes (AGI quoting), no line breaks, bounded.
_UNSAFE_TEXT = re.compile(r'["\\\r\n\x00]')
MAX_TEXT = 200
TRANSFER_VARIABLE = "RECHARGE_NEXT"
COMMIT_VARIABLE = "RECHARGE_COMMIT_SENT"


@contextmanager
def _hangups() -> Iterator[None]:
    """Turn pyst2's ways of saying "the caller is gone" into ``CallerHungUp``."""
    try:
        yield
    except AGIHangup:
        raise CallerHungUp from None
    except AGIUnknownError:
        # 511 "dead channel", or Asterisk closed the pipe (an empty answer line).
        raise CallerHungUp from None


class AGIChannel:
    """``ivr.dialog.Channel`` for one AGI call.  ``agi`` is a constructed ``asterisk.agi.AGI``."""

    def __init__(self, agi: Any, *, prompt_prefix: str = "", send_text: bool = True) -> None:
        self.agi = agi
        self.prompt_prefix = prompt_prefix
        self.text_enabled = send_text
        self.lang = (getattr(agi, "env", None) or {}).get("agi_language", "zh") or "zh"

    # --- sound -----------------------------------------------------------------------

    def play(self, prompt_id: str, escape_digits: str = "") -> str:
        return self._say("STREAM FILE", prompt_id, lambda: self.agi.stream_file(self._sound(prompt_id), escape_digits))

    def say_digits(self, digits: str, escape_digits: str = "") -> str:
        if not digits.isdigit():
            raise ValueError("say_digits takes digits only")
        return self._say("SAY DIGITS", digits, lambda: self.agi.say_digits(digits, escape_digits))

    def say_amount(self, fen: int, escape_digits: str = "") -> str:
        for kind, value in amount_parts(fen, self.lang):
            if kind == "number":
                key = self._say("SAY NUMBER", str(value), partial(self.agi.say_number, value, escape_digits))
            else:
                key = self.play(value, escape_digits)
            if key:
                return key
        return ""

    def _sound(self, prompt_id: str) -> str:
        return self.prompt_prefix + prompt_id

    def _say(self, what: str, arg: str, command: Callable[[], str]) -> str:
        with _hangups():
            try:
                return command() or ""
            except AGIAppError as e:
                if isinstance(e, AGIHangup):
                    raise
                # result=-1: the sound file is missing (or the caller has just
                # left, which the next read finds out).  Carry on without it.
                log.warning("%s %s could not be played (language %s)", what, arg if what != "SAY DIGITS" else "-", self.lang)
                return ""

    # --- input -----------------------------------------------------------------------

    def read_digits(self, prompt_id: str, max_digits: int, timeout_ms: int) -> str | None:
        with _hangups():
            try:
                if prompt_id:
                    got = self.agi.get_data(self._sound(prompt_id), timeout_ms, max_digits)
                else:
                    got = self._collect(max_digits, timeout_ms)
            except AGIAppError:
                # GET DATA and WAIT FOR DIGIT answer -1 when the channel is gone.
                raise CallerHungUp from None
        return got or None

    def _collect(self, max_digits: int, timeout_ms: int) -> str:
        digits = ""
        while len(digits) < max_digits:
            key = self.agi.wait_for_digit(timeout_ms)
            if not key or key == "#":
                break
            digits += key
        return digits

    # --- the rest --------------------------------------------------------------------

    def set_language(self, lang: str) -> None:
        with _hangups():
            self.agi.set_variable("CHANNEL(language)", lang)
        self.lang = lang

    def send_text(self, text: str) -> None:
        if not self.text_enabled:
            return
        text = _UNSAFE_TEXT.sub(" ", text)[:MAX_TEXT]
        with _hangups():
            try:
                self.agi.send_text(text)
            except AGIAppError as e:
                if isinstance(e, AGIHangup):
                    raise
                # This channel cannot carry text; the call goes on.

    def hangup(self) -> None:
        try:
            self.agi.hangup()
        except (AGIAppError, AGIUnknownError):
            pass  # already gone

    def commit_sent(self) -> None:
        # The dialplan's [hotline-lost] then says system-error, never service-unavailable ("card not used").
        with _hangups():
            self.agi.set_variable(COMMIT_VARIABLE, "yes")

    def transfer(self) -> None:
        # The dialplan reads it when AGI returns (asterisk_conf/extensions.conf) and dials the agents.
        with _hangups():
            self.agi.set_variable(TRANSFER_VARIABLE, "agent")


def amount_parts(fen: int, lang: str) -> list[tuple[str, Any]]:
    """How to say ``fen``: ``("number", n)`` for ``SAY NUMBER``, ``("play", prompt_id)`` for a unit.

    Mandarin says 元, 角 and 分 (12.30 元 is 十二元三角); English says
    "twelve yuan thirty fen".  Zero is "zero yuan".
    """
    if not isinstance(fen, int) or isinstance(fen, bool) or fen < 0:
        raise ValueError("an amount is a whole, non-negative number of fen")
    yuan, rest = divmod(fen, 100)
    parts: list[tuple[str, Any]] = []
    if yuan or not rest:
        parts += [("number", yuan), ("play", Prompt.CURRENCY_YUAN.value)]
    if lang.lower().startswith("zh"):
        jiao, fen_left = divmod(rest, 10)
        if jiao:
            parts += [("number", jiao), ("play", Prompt.CURRENCY_JIAO.value)]
        if fen_left:
            parts += [("number", fen_left), ("play", Prompt.CURRENCY_FEN.value)]
    elif rest:
        parts += [("number", rest), ("play", Prompt.CURRENCY_FEN.value)]
    return parts
