"""The recharge hotline's phone dialog: a state machine over a small channel interface.

A call goes welcome (key 2 for English, Mandarin otherwise) → account number
→ read back, 1 to confirm or 2 to enter again → account summary → card PIN
→ the card's value, 1 to confirm → commit → the amount credited and the
recharge reference → 1 for another card, or goodbye::

    step              on                                   next
    WELCOME           2: English; else Mandarin            ACCOUNT
    ACCOUNT           ACCOUNT_DIGITS digits                CONFIRM_ACCOUNT     (* → WELCOME)
    CONFIRM_ACCOUNT   1                                    LOOKUP              (2 or * → ACCOUNT)
    LOOKUP            ok (the summary is said next)        PIN
                      unknown_account                      ACCOUNT
    PIN               PIN_DIGITS digits, quote ok (held)   CONFIRM_RECHARGE    (* → CONFIRM_ACCOUNT)
                      wrong PIN, card refused              PIN
    CONFIRM_RECHARGE  1                                    COMMIT              (2: cancel → ANOTHER; *: cancel → PIN)
    COMMIT            ok (amount and reference said)       ANOTHER, seq + 1
                      hold lapsed, card refused            PIN
    ANOTHER           1                                    PIN                 (2 → GOODBYE; * repeats the receipt)
    any               third failed try, locked_out,        GOODBYE: release a held card, say goodbye, hang up
                      service_unavailable, commit unanswered
    any               the caller hangs up                  release a held card, stop
    any menu or entry 0 alone (key 0, or 0#)              AGENT               (when ``agents`` is on)
    ACCOUNT..ANOTHER  third failed entry (not a PIN)       AGENT               (when ``agents`` is on)
    AGENT             release a held card, announce, hand the call to the dialplan's agents (转人工)

Around that path:

- *Bounded.*  Each input gets three tries (silence, a malformed entry or a
  refused card all count); then the caller hears why, a goodbye, and the
  call is hung up.  A call also ends after ``max_inputs`` inputs in all, so
  no sequence of keys keeps a line forever.
- *Barge-in.*  Every prompt stops at a key, and the key is kept: a digit
  pressed during a read-back or an error message becomes the first digit of
  the next entry.  ``*`` goes back one step.
- *Truthful.*  When the servers cannot be reached before a commit, the
  caller is told the card was not used (nothing was spent).  A commit that
  gets no answer is repeated with the same call id and sequence number
  (the servers answer a repeat with the first answer); if it still gets
  none, the caller hears that the result is not confirmed (``result-unknown``)
  and never that the card was not used.
- *A person.*  Key 0 at any menu (or 0 then # at an entry: 0 alone is no
  account or PIN) asks for an agent, and so do three failed tries at an
  entry or a menu; three wrong PINs or refused cards end the call as before
  (the lock-out counts them, and an agent cannot make a card good).  The
  dialog releases a held card, says ``transfer-agent`` and marks the call
  (``Channel.transfer``) instead of hanging up; the dialplan dials the agents
  and, when none answers, says ``agents-busy`` and goodbye.
- *Observable.*  Every prompt is also sent as text ``prompt=<id>``, every
  decision as ``result=<code>`` (and spoken numbers as ``digits=`` /
  ``amount=``), so a SIPp call script can follow the call step by step.
  The PIN is never spoken, sent or logged.

This module runs inside Asterisk's AGI process under the host's Python
(3.11 to 3.14) and knows the recharge service only through ``Backend``:
standard library only, and no import of ``cardmgmt`` (``OUTCOMES`` repeats
the service's outcome codes as plain strings; a test keeps them equal).
"""

# test-case-name: tests.ivr.test_dialog

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeGuard

from ivr.fields import ACCOUNT_DIGITS, MAX_SEQ, PIN_DIGITS

log = logging.getLogger("ivr.dialog")

# --- what the recharge service answers ---------------------------------------------

OK = "ok"
WRONG_PIN = "wrong_pin"
CARD_USED = "card_used"
CARD_VOIDED = "card_voided"
CARD_FROZEN = "card_frozen"
CARD_EXPIRED = "card_expired"
CARD_NOT_ISSUED = "card_not_issued"
CARD_NOT_SOLD = "card_not_sold"
CARD_HELD = "card_held"
UNKNOWN_ACCOUNT = "unknown_account"
LOCKED_OUT = "locked_out"
HOLD_EXPIRED = "hold_expired"
NO_QUOTE = "no_quote"
SERVICE_UNAVAILABLE = "service_unavailable"

# Every outcome the dialog knows: the values of ``cardmgmt.recharge.Outcome``.
OUTCOMES = (
    OK, WRONG_PIN, CARD_USED, CARD_VOIDED, CARD_FROZEN, CARD_EXPIRED, CARD_NOT_ISSUED, CARD_NOT_SOLD, CARD_HELD,
    UNKNOWN_ACCOUNT, LOCKED_OUT, HOLD_EXPIRED, NO_QUOTE, SERVICE_UNAVAILABLE,
)

KEYS = "0123456789*#"  # every key stops every prompt (barge-in)
BACK = "*"
AGENT = "0"  # alone, at any menu or entry: transfer to an agent


class Prompt(StrEnum):
    """Every recording the dialog can play; ``voice_prompts.catalogue`` holds their words."""

    WELCOME = "welcome"
    ENTER_ACCOUNT = "enter-account"
    INVALID_ACCOUNT = "invalid-account"
    YOU_ENTERED = "you-entered"
    CONFIRM_ACCOUNT = "confirm-account"
    UNKNOWN_ACCOUNT = "unknown-account"
    ACCOUNT_FOUND = "account-found"
    ACCOUNT_ARREARS = "account-arrears"
    ACCOUNT_BALANCE = "account-balance"
    ENTER_PIN = "enter-pin"
    INVALID_PIN = "invalid-pin"
    WRONG_PIN = "wrong-pin"
    ATTEMPTS_LEFT = "attempts-left"
    CARD_USED = "card-used"
    CARD_VOIDED = "card-voided"
    CARD_FROZEN = "card-frozen"
    CARD_EXPIRED = "card-expired"
    CARD_NOT_ISSUED = "card-not-issued"
    CARD_NOT_SOLD = "card-not-sold"
    CARD_HELD = "card-held"
    LOCKED_OUT = "locked-out"
    HOLD_EXPIRED = "hold-expired"
    CARD_VALUE = "card-value"
    CONFIRM_RECHARGE = "confirm-recharge"
    RECHARGE_CANCELLED = "recharge-cancelled"
    PLEASE_WAIT = "please-wait"
    RECHARGE_OK = "recharge-ok"
    RECHARGE_REF = "recharge-ref"
    ANOTHER_CARD = "another-card"
    NO_INPUT = "no-input"
    INVALID_CHOICE = "invalid-choice"
    TOO_MANY_TRIES = "too-many-tries"
    SERVICE_UNAVAILABLE = "service-unavailable"
    RESULT_UNKNOWN = "result-unknown"
    SYSTEM_ERROR = "system-error"
    GOODBYE = "goodbye"
    TRANSFER_AGENT = "transfer-agent"
    AGENTS_BUSY = "agents-busy"  # said by the dialplan (asterisk_conf/extensions.conf) when no agent answers
    # The units a channel's ``say_amount`` plays after its numbers.
    CURRENCY_YUAN = "currency-yuan"
    CURRENCY_JIAO = "currency-jiao"
    CURRENCY_FEN = "currency-fen"


# The ids of every prompt the dialog (or a channel saying an amount) can play.
PROMPTS = frozenset(p.value for p in Prompt)

# The refusal each outcome is explained with.
OUTCOME_PROMPTS = {
    WRONG_PIN: Prompt.WRONG_PIN,
    CARD_USED: Prompt.CARD_USED,
    CARD_VOIDED: Prompt.CARD_VOIDED,
    CARD_FROZEN: Prompt.CARD_FROZEN,
    CARD_EXPIRED: Prompt.CARD_EXPIRED,
    CARD_NOT_ISSUED: Prompt.CARD_NOT_ISSUED,
    CARD_NOT_SOLD: Prompt.CARD_NOT_SOLD,
    CARD_HELD: Prompt.CARD_HELD,
    LOCKED_OUT: Prompt.LOCKED_OUT,
    UNKNOWN_ACCOUNT: Prompt.UNKNOWN_ACCOUNT,
    HOLD_EXPIRED: Prompt.HOLD_EXPIRED,
    NO_QUOTE: Prompt.HOLD_EXPIRED,
    SERVICE_UNAVAILABLE: Prompt.SERVICE_UNAVAILABLE,
}
# Refusals after which the caller may simply try another card.
CARD_REFUSALS = (CARD_USED, CARD_VOIDED, CARD_FROZEN, CARD_EXPIRED, CARD_NOT_ISSUED, CARD_NOT_SOLD, CARD_HELD)


# --- the two sides the dialog talks to ---------------------------------------------


class CallerHungUp(Exception):
    """Raised by a channel when the caller has gone; the dialog releases any held card and stops."""


class Channel(Protocol):
    """What the dialog needs from a phone call (Asterisk AGI in production, a script in tests).

    Every method that plays sound stops at a key in ``escape_digits`` and
    returns it ("" when none was pressed).  Any method may raise
    ``CallerHungUp``.
    """

    def play(self, prompt_id: str, escape_digits: str = "") -> str:
        """Play one prompt of the channel's language."""

    def say_digits(self, digits: str, escape_digits: str = "") -> str:
        """Say each digit."""

    def say_amount(self, fen: int, escape_digits: str = "") -> str:
        """Say a sum of money (``fen`` >= 0) in yuan and fen, in the channel's language."""

    def read_digits(self, prompt_id: str, max_digits: int, timeout_ms: int) -> str | None:
        """Play ``prompt_id`` with barge-in and collect digits until ``#``, ``max_digits`` or the timeout.

        A key pressed during the prompt is the first digit.  An empty
        ``prompt_id`` collects without playing anything (the caller has
        already started typing).  ``None`` (or "") means nothing was entered.
        """

    def set_language(self, lang: str) -> None:
        """``"zh"`` or ``"en"``: the language of later prompts and numbers."""

    def send_text(self, text: str) -> None:
        """Send a line of text on the call (for call scripts); a channel that cannot may drop it."""

    def hangup(self) -> None:
        """End the call."""

    def transfer(self) -> None:
        """Hand the call on to an agent when the dialog ends (the channel stays up; the dialplan dials the agents)."""

    def commit_sent(self) -> None:
        """A commit is on its way: should the dialog be lost from here on, the caller must not hear "card not used"."""


class Backend(Protocol):
    """The recharge service as ``ivr.client.RechargeClient`` offers it: dicts with an ``"outcome"``, never an exception."""

    def account(self, *, call_id: str, account_no: str) -> dict[str, Any]: ...

    def quote(self, *, call_id: str, seq: int, account_no: str, pin: str, caller: str) -> dict[str, Any]: ...

    def commit(self, *, call_id: str, seq: int) -> dict[str, Any]: ...

    def cancel(self, *, call_id: str, seq: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DialogSettings:
    """The dialog's limits; the defaults are the hotline's."""

    tries: int = 3  # per input
    digit_timeout_ms: int = 6000  # before the first key and between keys
    commit_attempts: int = 3  # the commit and two repeats when no server answers
    max_inputs: int = 60  # in the whole call, whatever the caller keys
    agents: bool = False  # key 0 and repeated failures transfer to an agent (the AGI turns it on: ``agents = yes``)


# --- the dialog ----------------------------------------------------------------------


class Step(StrEnum):
    """The dialog's states (the module docstring draws them)."""

    WELCOME = "welcome"
    ACCOUNT = "account"
    CONFIRM_ACCOUNT = "confirm-account"
    LOOKUP = "lookup"
    PIN = "pin"
    CONFIRM_RECHARGE = "confirm-recharge"
    COMMIT = "commit"
    ANOTHER = "another"
    GOODBYE = "goodbye"
    AGENT = "agent"
    END = "end"


# Something to say before the next question: a prompt, digits, or an amount in fen.
Part = tuple[str, Any]


def _prompt(p: Prompt) -> Part:
    return ("play", p)


def _digits(d: str) -> Part:
    return ("digits", d)


def _amount(fen: int) -> Part:
    return ("amount", fen)


class RechargeDialog:
    """One call's dialog.  ``run()`` drives the channel until the call ends and returns the last result code."""

    def __init__(
        self,
        channel: Channel,
        backend: Backend,
        *,
        call_id: str,
        caller: str = "",
        settings: DialogSettings = DialogSettings(),
    ) -> None:
        self.channel, self.backend, self.settings = channel, backend, settings
        self.call_id, self.caller = call_id, caller
        self.lang = "zh"
        self.account_no = ""
        self.seq = 1  # the n-th card of this call; moves on only after a commit
        self.amount = 0  # the held card's value, fen
        self.held = False  # a quote holds a card that no commit has been tried for
        self.last_result = "start"
        self._tries: dict[Step, int] = {}
        self._inputs = 0
        self._pending: list[Part] = []  # said, with barge-in, before the next question
        self._receipt: list[Part] = []  # the last recharge's amount and reference, for ``*``
        self._handlers: dict[Step, Callable[[], Step]] = {
            Step.WELCOME: self._welcome,
            Step.ACCOUNT: self._account,
            Step.CONFIRM_ACCOUNT: self._confirm_account,
            Step.LOOKUP: self._lookup,
            Step.PIN: self._pin,
            Step.CONFIRM_RECHARGE: self._confirm_recharge,
            Step.COMMIT: self._commit,
            Step.ANOTHER: self._another,
            Step.GOODBYE: self._goodbye,
            Step.AGENT: self._agent,
        }

    def run(self) -> str:
        """Hold the whole conversation; return the last ``result=`` code (``"hangup"`` if the caller left)."""
        step = Step.WELCOME
        try:
            while step is not Step.END:
                try:
                    step = self._handlers[step]()
                except _TooManyInputs:
                    log.warning("call %s: more than %d inputs, ending the call", self.call_id, self.settings.max_inputs)
                    self._play(Prompt.TOO_MANY_TRIES)
                    self._result("too-many-tries")
                    step = Step.GOODBYE
                except _ToAgent:
                    step = Step.AGENT
        except CallerHungUp:
            log.info("call %s: caller hung up at %s", self.call_id, step.value)
            self.last_result = "hangup"
            self._release_hold(announce=False)
        except BaseException:
            # The AGI entry script apologises; the card must not stay held meanwhile.
            self._release_hold(announce=False)
            raise
        return self.last_result

    # --- steps -----------------------------------------------------------------------

    def _welcome(self) -> Step:
        self._set_language("zh")
        key = self._play(Prompt.WELCOME, "120" if self.settings.agents else "12")
        if key == AGENT:
            return Step.AGENT
        if key == "2":
            self._set_language("en")
            self._result("lang-en")
        else:
            self._result("lang-zh")
        return Step.ACCOUNT

    def _account(self) -> Step:
        entry = self._ask(Prompt.ENTER_ACCOUNT, ACCOUNT_DIGITS + 1)
        if entry == BACK:
            return self._back(Step.WELCOME)
        if entry is None:
            return self._retry(Step.ACCOUNT, "no-input", [_prompt(Prompt.NO_INPUT)])
        if len(entry) != ACCOUNT_DIGITS or not entry.isdigit():
            return self._retry(Step.ACCOUNT, "invalid-input", [_prompt(Prompt.INVALID_ACCOUNT)])
        self.account_no = entry
        self._result("account-entered")
        return Step.CONFIRM_ACCOUNT

    def _confirm_account(self) -> Step:
        lead = [_prompt(Prompt.YOU_ENTERED), _digits(self.account_no)]
        entry = self._ask(Prompt.CONFIRM_ACCOUNT, 1, lead)
        if entry == "1":
            self._done(Step.CONFIRM_ACCOUNT)
            self._result("account-confirmed")
            return Step.LOOKUP
        if entry == "2":
            self._done(Step.CONFIRM_ACCOUNT)
            self._result("account-reenter")
            return Step.ACCOUNT
        if entry == BACK:
            return self._back(Step.ACCOUNT)
        return self._retry_choice(Step.CONFIRM_ACCOUNT, entry)

    def _lookup(self) -> Step:
        answer = self._call("account", account_no=self.account_no)
        outcome = answer["outcome"]
        if outcome == OK:
            self._done(Step.ACCOUNT)
            self._result("account-ok")
            holder = answer.get("holder")
            if isinstance(holder, str) and holder:
                # Recorded prompts cannot say a name; phones that show text see it.
                self._text(f"holder={holder}")
            self._pending.append(_prompt(Prompt.ACCOUNT_FOUND))
            balance = answer.get("balance")
            if _is_int(balance):
                if balance < 0:
                    self._pending += [_prompt(Prompt.ACCOUNT_ARREARS), _amount(-balance)]
                else:
                    self._pending += [_prompt(Prompt.ACCOUNT_BALANCE), _amount(balance)]
            return Step.PIN
        self._result(outcome)
        if outcome == UNKNOWN_ACCOUNT:
            return self._retry(Step.ACCOUNT, None, [_prompt(Prompt.UNKNOWN_ACCOUNT)])
        if outcome != SERVICE_UNAVAILABLE:
            log.error("call %s: account look-up answered %r; treated as unavailable", self.call_id, outcome)
        self._play(Prompt.SERVICE_UNAVAILABLE)
        return Step.GOODBYE

    def _pin(self) -> Step:
        if self.seq > MAX_SEQ:
            return Step.GOODBYE
        entry = self._ask(Prompt.ENTER_PIN, PIN_DIGITS + 1)
        if entry == BACK:
            return self._back(Step.CONFIRM_ACCOUNT)
        if entry is None:
            return self._retry(Step.PIN, "no-input", [_prompt(Prompt.NO_INPUT)])
        if len(entry) != PIN_DIGITS or not entry.isdigit():
            return self._retry(Step.PIN, "invalid-input", [_prompt(Prompt.INVALID_PIN)])
        answer = self._call(
            "quote", seq=self.seq, account_no=self.account_no, pin=entry, caller=self.caller
        )
        del entry  # the PIN goes no further than the request
        outcome = answer["outcome"]
        if outcome == OK and _is_int(answer.get("amount")):
            self.held, self.amount = True, answer["amount"]
            self._done(Step.PIN)
            self._result("quote-ok")
            return Step.CONFIRM_RECHARGE
        if outcome == OK:
            outcome = "ok-without-amount"  # not a quote the caller can be asked to confirm
        self._result(outcome)
        if outcome == WRONG_PIN:
            parts = [_prompt(Prompt.WRONG_PIN)]
            left = answer.get("attempts_left")
            last_try = self._tries.get(Step.PIN, 0) + 1 >= self.settings.tries
            if _is_int(left) and left > 0 and not last_try:
                parts += [_prompt(Prompt.ATTEMPTS_LEFT), _digits(str(left))]
            return self._retry(Step.PIN, None, parts)
        if outcome in CARD_REFUSALS or outcome in (HOLD_EXPIRED, NO_QUOTE):
            return self._retry(Step.PIN, None, [_prompt(OUTCOME_PROMPTS[outcome])])
        if outcome == UNKNOWN_ACCOUNT:
            return self._retry(Step.ACCOUNT, None, [_prompt(Prompt.UNKNOWN_ACCOUNT)])
        if outcome == LOCKED_OUT:
            self._play(Prompt.LOCKED_OUT)
            return Step.GOODBYE
        # Unavailable, or an answer this dialog does not know.  A quote may
        # have landed unseen: release it.  No commit was sent, so the card is unused.
        if outcome != SERVICE_UNAVAILABLE:
            log.error("call %s: quote answered %r; treated as unavailable", self.call_id, outcome)
        self._cancel()
        self._play(Prompt.SERVICE_UNAVAILABLE)
        return Step.GOODBYE

    def _confirm_recharge(self) -> Step:
        lead = [_prompt(Prompt.CARD_VALUE), _amount(self.amount)]
        entry = self._ask(Prompt.CONFIRM_RECHARGE, 1, lead)
        if entry == "1":
            self._done(Step.CONFIRM_RECHARGE)
            self._result("recharge-confirmed")
            return Step.COMMIT
        if entry == "2":
            self._done(Step.CONFIRM_RECHARGE)
            self._result("declined")
            self._release_hold()
            self._pending.append(_prompt(Prompt.RECHARGE_CANCELLED))
            return Step.ANOTHER
        if entry == BACK:
            self._release_hold()
            return self._back(Step.PIN)
        return self._retry_choice(Step.CONFIRM_RECHARGE, entry)

    def _commit(self) -> Step:
        self._play(Prompt.PLEASE_WAIT)
        # From here on the card may be spent: no cancel, and never "not used".
        # (An unanswered commit's hold lapses by itself within the hold time.)
        self.held = False
        self.channel.commit_sent()
        answer: dict[str, Any] = {"outcome": SERVICE_UNAVAILABLE}
        for attempt in range(1, self.settings.commit_attempts + 1):
            answer = self._call("commit", seq=self.seq)
            if answer["outcome"] != SERVICE_UNAVAILABLE:
                break
            if attempt < self.settings.commit_attempts:
                self._result("commit-retry")
        outcome = answer["outcome"]
        if outcome == OK:
            amount = answer["amount"] if _is_int(answer.get("amount")) else self.amount
            ref = answer.get("recharge_ref")
            self._result("ok")
            self._receipt = [_prompt(Prompt.RECHARGE_OK), _amount(amount)]
            if isinstance(ref, str) and ref.isdigit():
                self._receipt += [_prompt(Prompt.RECHARGE_REF), _digits(ref)]
            else:
                log.error("call %s: commit answered without a usable recharge reference", self.call_id)
            self._pending += self._receipt
            self.seq += 1
            return Step.ANOTHER
        if outcome in CARD_REFUSALS or outcome in (HOLD_EXPIRED, NO_QUOTE):
            # The service says no recharge was made; the caller may enter the PIN again.
            self._result(outcome)
            return self._retry(Step.PIN, None, [_prompt(OUTCOME_PROMPTS[outcome])])
        self._result("result-unknown")
        log.error("call %s: commit seq %d ended %r: result not confirmed", self.call_id, self.seq, outcome)
        self._play(Prompt.RESULT_UNKNOWN)
        return Step.GOODBYE

    def _another(self) -> Step:
        if self.seq > MAX_SEQ:
            return Step.GOODBYE
        entry = self._ask(Prompt.ANOTHER_CARD, 1)
        if entry == "1":
            self._done(Step.ANOTHER)
            self._result("another-card")
            return Step.PIN
        if entry == "2":
            self._done(Step.ANOTHER)
            return Step.GOODBYE
        if entry == BACK:
            # Nothing to undo after a recharge: hear its amount and reference again.
            self._pending += self._receipt
            return self._back(Step.ANOTHER)
        return self._retry_choice(Step.ANOTHER, entry)

    def _goodbye(self) -> Step:
        self._release_hold()
        self._play(Prompt.GOODBYE)
        self._result("goodbye")
        self.channel.hangup()
        return Step.END

    def _agent(self) -> Step:
        self._pending = []
        self._release_hold()
        self._result("transfer")
        self._play(Prompt.TRANSFER_AGENT)
        log.info("call %s: to an agent", self.call_id)
        self.channel.transfer()
        return Step.END

    # --- tries, results, backend -----------------------------------------------------

    def _retry(self, step: Step, result: str | None, parts: list[Part]) -> Step:
        """Count a failed try at ``step``: explain and ask again, or say goodbye after the last try."""
        if result is not None:
            self._result(result)
        tries = self._tries.get(step, 0) + 1
        self._tries[step] = tries
        if tries < self.settings.tries:
            self._pending += parts
            return step
        self._say(self._pending + parts, "")
        self._pending = []
        self._play(Prompt.TOO_MANY_TRIES)
        self._result("too-many-tries")
        # A caller who cannot get through an entry or a menu gets a person; wrong PINs and refused cards do not.
        return Step.AGENT if self.settings.agents and step is not Step.PIN else Step.GOODBYE

    def _retry_choice(self, step: Step, entry: str | None) -> Step:
        if entry is None:
            return self._retry(step, "no-input", [_prompt(Prompt.NO_INPUT)])
        return self._retry(step, "invalid-input", [_prompt(Prompt.INVALID_CHOICE)])

    def _done(self, step: Step) -> None:
        self._tries.pop(step, None)

    def _back(self, step: Step) -> Step:
        self._result("back")
        return step

    def _result(self, code: str) -> None:
        self.last_result = code
        log.info("call %s: result=%s", self.call_id, code)
        self._text(f"result={code}")

    def _call(self, name: str, **fields: Any) -> dict[str, Any]:
        """One backend request; whatever goes wrong becomes ``service_unavailable``."""
        try:
            answer = getattr(self.backend, name)(call_id=self.call_id, **fields)
        except Exception as e:
            # Never log ``fields``: a quote carries the PIN.
            log.error("call %s: %s raised %s; treated as unavailable", self.call_id, name, type(e).__name__)
            return {"outcome": SERVICE_UNAVAILABLE}
        if not isinstance(answer, dict) or not isinstance(answer.get("outcome"), str):
            log.error("call %s: %s gave an answer of the wrong shape; treated as unavailable", self.call_id, name)
            return {"outcome": SERVICE_UNAVAILABLE}
        return answer

    def _release_hold(self, announce: bool = True) -> None:
        """Cancel the quote that holds a card for this call, if one may; best effort."""
        if self.held:
            self._cancel(announce)

    def _cancel(self, announce: bool = True) -> None:
        self.held = False
        answer = self._call("cancel", seq=self.seq)
        log.info("call %s: cancel seq %d -> %s", self.call_id, self.seq, answer["outcome"])
        if announce:
            self._text("result=cancelled")

    # --- saying and asking -----------------------------------------------------------

    def _set_language(self, lang: str) -> None:
        self.lang = lang
        self.channel.set_language(lang)

    def _text(self, text: str) -> None:
        self.channel.send_text(text)

    def _play(self, prompt: Prompt, escape_digits: str = "") -> str:
        self._text(f"prompt={prompt.value}")
        return self.channel.play(prompt.value, escape_digits)

    def _say(self, parts: list[Part], escape_digits: str) -> str:
        """Say ``parts`` in order; stop at the first key in ``escape_digits`` and return it."""
        for kind, value in parts:
            if kind == "play":
                key = self._play(value, escape_digits)
            elif kind == "digits":
                self._text(f"digits={value}")
                key = self.channel.say_digits(value, escape_digits)
            else:
                self._text(f"amount={value}")
                key = self.channel.say_amount(value, escape_digits)
            if key:
                return key
        return ""

    def _ask(self, prompt: Prompt, max_digits: int, lead: list[Part] | None = None) -> str | None:
        """Say what is pending and ``lead``, then ``prompt``, and collect an entry.

        Returns ``"*"`` (back), the keys entered (not checked: a step knows
        what it wants), or ``None`` when nothing was entered.  A key pressed while anything before ``prompt`` was
        being said is kept as the entry's first key.
        """
        self._inputs += 1
        if self._inputs > self.settings.max_inputs:
            self._pending = []
            raise _TooManyInputs
        parts, self._pending = self._pending + (lead or []), []
        key = self._say(parts, KEYS)
        timeout = self.settings.digit_timeout_ms
        if key == BACK:
            return BACK
        if key == "#":
            entry: str | None = ""
        elif key:
            rest = self.channel.read_digits("", max_digits - 1, timeout) if max_digits > 1 else ""
            entry = key + (rest or "")
        else:
            self._text(f"prompt={prompt.value}")
            entry = self.channel.read_digits(prompt.value, max_digits, timeout)
        entry = (entry or "").rstrip("#")
        if not entry:
            return None
        if entry == AGENT and self.settings.agents:
            raise _ToAgent
        return BACK if BACK in entry else entry


class _TooManyInputs(Exception):
    """More inputs than ``max_inputs`` in one call: it ends politely."""


class _ToAgent(Exception):
    """The caller keyed 0 alone: the call goes to an agent, from whatever step it was at."""


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def run_call(channel: Channel, backend: Backend, *, call_id: str, caller: str = "",
             settings: DialogSettings = DialogSettings()) -> str:
    """Run one call's dialog; see ``RechargeDialog``."""
    dialog = RechargeDialog(channel, backend, call_id=call_id, caller=caller, settings=settings)
    return dialog.run()


def apologise(channel: Channel) -> None:
    """After an unexpected error: say sorry and goodbye and hang up, as far as the channel still can."""
    for step in (
        lambda: channel.send_text(f"prompt={Prompt.SYSTEM_ERROR.value}"),
        lambda: channel.play(Prompt.SYSTEM_ERROR.value),
        lambda: channel.send_text(f"prompt={Prompt.GOODBYE.value}"),
        lambda: channel.play(Prompt.GOODBYE.value),
        lambda: channel.send_text("result=goodbye"),
        channel.hangup,
    ):
        try:
            step()
        except Exception:
            pass
