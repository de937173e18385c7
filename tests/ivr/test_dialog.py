"""Unit tests of the recharge dialog's state machine, with a scripted channel and a scripted backend.

No Asterisk, no servers: ``FakeChannel`` answers each ``read_digits`` from a
queue and presses keys during named prompts (barge-in); ``FakeBackend``
answers each request from a queue and records what was asked.
"""

import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

import pytest

from cardmgmt.recharge import Outcome
from cardmgmt.states import STATE_OUTCOME
from ivr import dialog
from ivr.dialog import PROMPTS, CallerHungUp, DialogSettings, RechargeDialog

ACCOUNT = "0123456789"
PIN = "123456789012345678"
PIN2 = "876543210987654321"
REF = "25010100000042"
HANGUP = object()  # a scripted entry: the caller hangs up here


class FakeChannel:
    """A call whose caller follows a script.

    ``entries`` answers the ``read_digits`` calls in order (a string is what
    the caller keys, ending at ``#`` or ``max_digits``; ``None`` is silence;
    ``HANGUP`` hangs up).  ``barge`` maps a prompt id, ``"digits"`` or
    ``"amount"`` to keys pressed while it is said, one per saying.
    """

    def __init__(self, entries: Iterable[Any] = (), barge: dict[str, list[Any]] | None = None) -> None:
        self.entries = deque(entries)
        self.barge = {k: deque(v) for k, v in (barge or {}).items()}
        self.events: list[tuple[Any, ...]] = []
        self.texts: list[str] = []
        self.hung_up = False

    def _key(self, what: str, escape_digits: str) -> str:
        queue = self.barge.get(what)
        if not queue:
            return ""
        key = queue.popleft()
        if key is HANGUP:
            raise CallerHungUp
        return key if key in escape_digits else ""  # Asterisk ignores other keys

    def play(self, prompt_id: str, escape_digits: str = "") -> str:
        assert prompt_id in PROMPTS, prompt_id
        self.events.append(("play", prompt_id))
        return self._key(prompt_id, escape_digits)

    def say_digits(self, digits: str, escape_digits: str = "") -> str:
        self.events.append(("digits", digits))
        return self._key("digits", escape_digits)

    def say_amount(self, fen: int, escape_digits: str = "") -> str:
        assert isinstance(fen, int) and fen >= 0
        self.events.append(("amount", fen))
        return self._key("amount", escape_digits)

    def read_digits(self, prompt_id: str, max_digits: int, timeout_ms: int) -> str | None:
        assert prompt_id == "" or prompt_id in PROMPTS, prompt_id
        assert max_digits >= 1 and timeout_ms > 0
        self.events.append(("read", prompt_id, max_digits))
        if not self.entries:
            return None
        entry = self.entries.popleft()
        if entry is HANGUP:
            raise CallerHungUp
        if entry is None:
            return None
        keys: str = entry
        return keys.split("#")[0][:max_digits]

    def set_language(self, lang: str) -> None:
        self.events.append(("lang", lang))

    def send_text(self, text: str) -> None:
        assert not self.hung_up
        self.texts.append(text)

    def hangup(self) -> None:
        self.events.append(("hangup",))
        self.hung_up = True

    def transfer(self) -> None:
        self.events.append(("transfer",))

    def commit_sent(self) -> None:
        self.events.append(("commit-sent",))

    # --- what a test looks at ---

    @property
    def prompts(self) -> list[str]:
        return [t.removeprefix("prompt=") for t in self.texts if t.startswith("prompt=")]

    @property
    def results(self) -> list[str]:
        return [t.removeprefix("result=") for t in self.texts if t.startswith("result=")]

    @property
    def reads(self) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == "read"]


DEFAULTS: dict[str, dict[str, Any]] = {
    "account": {"outcome": "ok", "account_no": ACCOUNT, "holder": "张*明", "balance": -1234},
    "quote": {"outcome": "ok", "account_no": ACCOUNT, "holder": "张*明", "balance": -1234,
              "amount": 5000, "serial_tail": "0042", "hold_seconds": 120},
    "commit": {"outcome": "ok", "recharge_ref": REF, "amount": 5000, "account_no": ACCOUNT, "serial_tail": "0042"},
    "cancel": {"outcome": "ok", "cancelled": True},
}


class FakeBackend:
    """Answers each request from its queue, then with the default; records every request."""

    def __init__(self, **answers: list[Any]) -> None:
        self.answers = {name: deque(answers.get(name, [])) for name in DEFAULTS}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _answer(self, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((name, fields))
        queue = self.answers[name]
        answer = queue.popleft() if queue else DEFAULTS[name]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, str):
            return {"outcome": answer}
        return dict(answer)

    def account(self, *, call_id: str, account_no: str) -> dict[str, Any]:
        return self._answer("account", {"call_id": call_id, "account_no": account_no})

    def quote(self, *, call_id: str, seq: int, account_no: str, pin: str, caller: str) -> dict[str, Any]:
        return self._answer("quote", {"call_id": call_id, "seq": seq, "account_no": account_no, "pin": pin, "caller": caller})

    def commit(self, *, call_id: str, seq: int) -> dict[str, Any]:
        return self._answer("commit", {"call_id": call_id, "seq": seq})

    def cancel(self, *, call_id: str, seq: int) -> dict[str, Any]:
        return self._answer("cancel", {"call_id": call_id, "seq": seq})

    def named(self, name: str) -> list[dict[str, Any]]:
        return [fields for n, fields in self.calls if n == name]


def run(entries: Iterable[Any], backend: FakeBackend | None = None, barge: dict[str, list[Any]] | None = None,
        settings: DialogSettings | None = None) -> tuple[FakeChannel, FakeBackend, str]:
    channel = FakeChannel(entries, barge)
    backend = backend or FakeBackend()
    call = RechargeDialog(channel, backend, call_id="1712345678.42", caller="13800000000",
                          settings=settings or DialogSettings())
    result = call.run()
    return channel, backend, result


HAPPY = [ACCOUNT, "1", PIN, "1", "2"]  # account, confirm, PIN, confirm recharge, no other card


def assert_goodbye(channel: FakeChannel) -> None:
    assert channel.prompts[-1] == "goodbye"
    assert channel.results[-1] == "goodbye"
    assert channel.events[-1] == ("hangup",)


# --- the outcome codes ----------------------------------------------------------------


def test_outcomes_match_the_recharge_service() -> None:
    assert set(dialog.OUTCOMES) == {o.value for o in Outcome}
    assert len(dialog.OUTCOMES) == len(set(dialog.OUTCOMES))


def test_every_refusal_has_a_prompt_of_its_own() -> None:
    refusals = set(dialog.OUTCOMES) - {dialog.OK}
    assert set(dialog.OUTCOME_PROMPTS) == refusals
    prompts = {dialog.OUTCOME_PROMPTS[o] for o in refusals - {dialog.NO_QUOTE}}
    assert len(prompts) == len(refusals) - 1  # only hold_expired and no_quote share one
    assert dialog.OUTCOME_PROMPTS[dialog.NO_QUOTE] == dialog.OUTCOME_PROMPTS[dialog.HOLD_EXPIRED]


def test_every_card_refusal_is_said_as_a_card_refusal() -> None:
    """Whatever a card's state (or its batch's expiry, or another call's hold) refuses, the dialog says it."""
    said = {o for o in STATE_OUTCOME.values() if o is not None} | {Outcome.CARD_EXPIRED, Outcome.CARD_HELD}
    for outcome in said:
        assert outcome.value in dialog.CARD_REFUSALS, outcome
        assert dialog.OUTCOME_PROMPTS[outcome.value] in PROMPTS, outcome


def test_prompts_are_the_prompt_ids() -> None:
    assert "welcome" in PROMPTS and "result-unknown" in PROMPTS
    assert all(isinstance(p, str) and p == p.lower() and " " not in p for p in PROMPTS)


# --- the main path ----------------------------------------------------------------------


def test_happy_path() -> None:
    channel, backend, result = run(HAPPY)

    assert result == "goodbye"
    assert channel.results == [
        "lang-zh", "account-entered", "account-confirmed", "account-ok", "quote-ok",
        "recharge-confirmed", "ok", "goodbye",
    ]
    assert channel.prompts == [
        "welcome", "enter-account", "you-entered", "confirm-account", "account-found", "account-arrears",
        "enter-pin", "card-value", "confirm-recharge", "please-wait", "recharge-ok", "recharge-ref",
        "another-card", "goodbye",
    ]
    assert ("digits", ACCOUNT) in channel.events
    assert ("amount", 1234) in channel.events  # arrears said as a positive sum
    assert channel.events.count(("amount", 5000)) == 2  # the card's value and the amount credited
    assert ("digits", REF) in channel.events
    assert "holder=张*明" in channel.texts
    assert channel.events[0] == ("lang", "zh")
    assert_goodbye(channel)

    assert backend.named("account") == [{"call_id": "1712345678.42", "account_no": ACCOUNT}]
    assert backend.named("quote") == [
        {"call_id": "1712345678.42", "seq": 1, "account_no": ACCOUNT, "pin": PIN, "caller": "13800000000"}
    ]
    assert backend.named("commit") == [{"call_id": "1712345678.42", "seq": 1}]
    assert backend.named("cancel") == []


def test_reads_ask_for_one_more_key_than_needed_so_a_long_entry_is_caught() -> None:
    channel, _, _ = run(HAPPY)
    assert channel.reads == [
        ("read", "enter-account", 11), ("read", "confirm-account", 1), ("read", "enter-pin", 19),
        ("read", "confirm-recharge", 1), ("read", "another-card", 1),
    ]


def test_balance_is_said_as_balance() -> None:
    backend = FakeBackend(account=[{"outcome": "ok", "holder": "李*", "balance": 8800}])
    channel, _, _ = run(HAPPY, backend)
    assert "account-balance" in channel.prompts and "account-arrears" not in channel.prompts
    assert ("amount", 8800) in channel.events


def test_the_pin_is_never_sent_or_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    backend = FakeBackend(quote=["wrong_pin", DEFAULTS["quote"]])
    channel, _, _ = run([ACCOUNT, "1", PIN2, PIN, "1", "2"], backend)
    said = " ".join(channel.texts) + " ".join(str(e) for e in channel.events if e[0] != "read")
    logged = " ".join(r.getMessage() for r in caplog.records)
    for pin in (PIN, PIN2):
        assert pin not in said
        assert pin not in logged
    assert "1712345678.42" in logged  # log lines name the call


def test_english_is_chosen_with_2_during_the_welcome() -> None:
    channel, _, _ = run(HAPPY, barge={"welcome": ["2"]})
    assert [e for e in channel.events if e[0] == "lang"] == [("lang", "zh"), ("lang", "en")]
    assert channel.results[:2] == ["lang-en", "account-entered"]
    assert channel.results[-2:] == ["ok", "goodbye"]


def test_other_keys_during_the_welcome_keep_mandarin() -> None:
    channel, _, _ = run(HAPPY, barge={"welcome": ["1"]})
    assert [e for e in channel.events if e[0] == "lang"] == [("lang", "zh")]
    assert channel.results[0] == "lang-zh"


def test_2_at_the_read_back_enters_the_account_again() -> None:
    other = "9876543210"
    channel, backend, _ = run([ACCOUNT, "2", other, "1", PIN, "1", "2"])
    assert channel.results[:5] == ["lang-zh", "account-entered", "account-reenter", "account-entered", "account-confirmed"]
    assert [c["account_no"] for c in backend.named("account")] == [other]
    assert ("digits", other) in channel.events
    assert backend.named("quote")[0]["account_no"] == other


def test_another_card_uses_the_next_sequence_number() -> None:
    backend = FakeBackend(commit=[DEFAULTS["commit"], {**DEFAULTS["commit"], "recharge_ref": "25010100000043", "amount": 10000}])
    channel, backend, _ = run([ACCOUNT, "1", PIN, "1", "1", PIN2, "1", "2"], backend)
    assert [q["seq"] for q in backend.named("quote")] == [1, 2]
    assert [q["pin"] for q in backend.named("quote")] == [PIN, PIN2]
    assert [c["seq"] for c in backend.named("commit")] == [1, 2]
    assert channel.results.count("ok") == 2 and "another-card" in channel.results
    assert ("digits", "25010100000043") in channel.events and ("amount", 10000) in channel.events
    assert len(backend.named("account")) == 1  # same account, not asked again


# --- going back with * -------------------------------------------------------------------


def test_star_at_the_pin_goes_back_to_the_account_read_back() -> None:
    channel, backend, _ = run([ACCOUNT, "1", "*", "1", PIN, "1", "2"])
    assert channel.results[:6] == ["lang-zh", "account-entered", "account-confirmed", "account-ok", "back", "account-confirmed"]
    assert channel.prompts.count("you-entered") == 2
    assert channel.results[-1] == "goodbye" and "ok" in channel.results


def test_star_at_the_account_goes_back_to_the_welcome() -> None:
    channel, _, _ = run(["*", ACCOUNT, "1", PIN, "1", "2"])
    assert channel.prompts[:3] == ["welcome", "enter-account", "welcome"]
    assert channel.results[:3] == ["lang-zh", "back", "lang-zh"]


def test_star_at_the_read_back_goes_back_to_the_account() -> None:
    channel, _, _ = run([ACCOUNT, "*", ACCOUNT, "1", PIN, "1", "2"])
    assert channel.results[:4] == ["lang-zh", "account-entered", "back", "account-entered"]


def test_star_at_the_card_value_releases_the_card_and_asks_for_a_pin_again() -> None:
    channel, backend, _ = run([ACCOUNT, "1", PIN, "*", PIN2, "1", "2"])
    assert backend.named("cancel") == [{"call_id": "1712345678.42", "seq": 1}]
    assert [q["pin"] for q in backend.named("quote")] == [PIN, PIN2]
    assert [q["seq"] for q in backend.named("quote")] == [1, 1]
    assert "back" in channel.results and channel.results.count("quote-ok") == 2


def test_star_after_a_recharge_repeats_the_amount_and_reference() -> None:
    channel, _, _ = run([ACCOUNT, "1", PIN, "1", "*", "2"])
    assert channel.prompts.count("recharge-ref") == 2
    assert channel.events.count(("digits", REF)) == 2


def test_star_during_a_prompt_goes_back_at_once() -> None:
    channel, _, _ = run([ACCOUNT, ACCOUNT, "1", PIN, "1", "2"], barge={"you-entered": ["*"]})
    assert channel.results[:4] == ["lang-zh", "account-entered", "back", "account-entered"]


# --- silence and bad entries --------------------------------------------------------------


def test_three_silent_timeouts_end_the_call_politely() -> None:
    channel, backend, result = run([None, None, None])
    assert channel.prompts == [
        "welcome", "enter-account", "no-input", "enter-account", "no-input", "enter-account", "no-input",
        "too-many-tries", "goodbye",
    ]
    assert channel.results == ["lang-zh", "no-input", "no-input", "no-input", "too-many-tries", "goodbye"]
    assert len(channel.reads) == 3
    assert result == "goodbye"
    assert_goodbye(channel)
    assert backend.calls == []


def test_silence_at_every_later_step_is_bounded_too() -> None:
    for entries in ([ACCOUNT, None, None, None], [ACCOUNT, "1", None, None, None], [ACCOUNT, "1", PIN, None, None, None]):
        channel, backend, _ = run(entries)
        assert "too-many-tries" in channel.results
        assert_goodbye(channel)
    # silence at the card value: the held card is released before goodbye
    assert backend.named("cancel") == [{"call_id": "1712345678.42", "seq": 1}]
    assert backend.named("commit") == []


def test_an_empty_script_never_waits_forever() -> None:
    channel, _, _ = run([])
    assert_goodbye(channel)


def test_wrong_length_account_gets_its_own_prompt() -> None:
    channel, backend, _ = run(["12345", "12345678901", ACCOUNT, "1", PIN, "1", "2"])
    assert channel.prompts.count("invalid-account") == 2
    assert channel.results[:4] == ["lang-zh", "invalid-input", "invalid-input", "account-entered"]
    assert [c["account_no"] for c in backend.named("account")] == [ACCOUNT]


def test_wrong_length_pin_gets_its_own_prompt_and_is_not_sent() -> None:
    channel, backend, _ = run([ACCOUNT, "1", "1234", PIN, "1", "2"])
    assert "invalid-pin" in channel.prompts
    assert [q["pin"] for q in backend.named("quote")] == [PIN]


def test_an_invalid_choice_is_explained() -> None:
    channel, _, _ = run([ACCOUNT, "7", "1", PIN, "1", "2"])
    assert "invalid-choice" in channel.prompts
    assert channel.results[:4] == ["lang-zh", "account-entered", "invalid-input", "account-confirmed"]


def test_three_bad_tries_end_the_call() -> None:
    channel, _, _ = run([ACCOUNT, "1", "1", "22", "333"])
    assert channel.prompts.count("invalid-pin") == 3
    assert channel.prompts[-4:] == ["enter-pin", "invalid-pin", "too-many-tries", "goodbye"]
    assert_goodbye(channel)


def test_the_whole_call_has_a_bound_on_inputs() -> None:
    channel, _, _ = run(["*"] * 100, settings=DialogSettings(max_inputs=5))
    assert len(channel.reads) == 5
    assert channel.results[-2:] == ["too-many-tries", "goodbye"]
    assert_goodbye(channel)


# --- barge-in -----------------------------------------------------------------------------


def test_a_key_during_the_read_back_answers_it() -> None:
    channel, _, _ = run([ACCOUNT, PIN, "1", "2"], barge={"digits": ["1"]})
    assert ("read", "confirm-account", 1) not in channel.reads
    assert "confirm-account" not in channel.prompts
    assert channel.results[:3] == ["lang-zh", "account-entered", "account-confirmed"]


def test_digits_typed_during_the_account_summary_start_the_pin() -> None:
    channel, backend, _ = run([ACCOUNT, "1", PIN[1:], "1", "2"], barge={"account-found": [PIN[0]]})
    assert ("read", "", 18) in channel.reads
    assert ("read", "enter-pin", 19) not in channel.reads
    assert "enter-pin" not in channel.prompts
    assert "account-arrears" not in channel.prompts  # the rest of the summary was skipped
    assert backend.named("quote")[0]["pin"] == PIN


def test_digits_typed_during_an_error_prompt_are_kept() -> None:
    backend = FakeBackend(quote=["card_used", DEFAULTS["quote"]])
    channel, backend, _ = run([ACCOUNT, "1", PIN2, PIN[1:], "1", "2"], backend, barge={"card-used": [PIN[0]]})
    assert [q["pin"] for q in backend.named("quote")] == [PIN2, PIN]


def test_a_key_during_the_card_value_confirms() -> None:
    channel, backend, _ = run([ACCOUNT, "1", PIN, "2"], barge={"amount": ["", "1"]})
    assert ("read", "confirm-recharge", 1) not in channel.reads
    assert backend.named("commit") == [{"call_id": "1712345678.42", "seq": 1}]


def test_hash_alone_counts_as_nothing_entered() -> None:
    channel, _, _ = run(["#", ACCOUNT, "1", PIN, "1", "2"])
    assert channel.results[:3] == ["lang-zh", "no-input", "account-entered"]


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "outcome, prompt",
    [
        ("card_used", "card-used"),
        ("card_voided", "card-voided"),
        ("card_frozen", "card-frozen"),
        ("card_expired", "card-expired"),
        ("card_not_issued", "card-not-issued"),
        ("card_not_sold", "card-not-sold"),
        ("card_held", "card-held"),
    ],
)
def test_a_refused_card_is_explained_and_another_pin_is_asked_for(outcome: str, prompt: str) -> None:
    backend = FakeBackend(quote=[{"outcome": outcome, "serial_tail": "0042"}, DEFAULTS["quote"]])
    channel, backend, _ = run([ACCOUNT, "1", PIN2, PIN, "1", "2"], backend)
    assert outcome in channel.results
    i = channel.prompts.index(prompt)
    assert channel.prompts[i + 1] == "enter-pin"
    assert channel.results[-2:] == ["ok", "goodbye"]
    assert backend.named("commit") == [{"call_id": "1712345678.42", "seq": 1}]


def test_wrong_pin_then_the_right_pin() -> None:
    backend = FakeBackend(quote=[{"outcome": "wrong_pin", "attempts_left": 4}, DEFAULTS["quote"]])
    channel, backend, _ = run([ACCOUNT, "1", PIN2, PIN, "1", "2"], backend)
    assert channel.results == [
        "lang-zh", "account-entered", "account-confirmed", "account-ok", "wrong_pin", "quote-ok",
        "recharge-confirmed", "ok", "goodbye",
    ]
    i = channel.prompts.index("wrong-pin")
    assert channel.prompts[i:i + 3] == ["wrong-pin", "attempts-left", "enter-pin"]
    assert ("digits", "4") in channel.events
    assert [(q["seq"], q["pin"]) for q in backend.named("quote")] == [(1, PIN2), (1, PIN)]


def test_three_wrong_pins_end_the_call() -> None:
    backend = FakeBackend(quote=[{"outcome": "wrong_pin", "attempts_left": n} for n in (4, 3, 2)])
    channel, _, _ = run([ACCOUNT, "1", PIN, PIN, PIN], backend)
    assert channel.results.count("wrong_pin") == 3
    assert channel.prompts[-3:] == ["wrong-pin", "too-many-tries", "goodbye"]  # no count before goodbye
    assert channel.prompts.count("attempts-left") == 2
    assert_goodbye(channel)


def test_locked_out_ends_the_call() -> None:
    channel, backend, _ = run([ACCOUNT, "1", PIN], FakeBackend(quote=[{"outcome": "locked_out", "attempts_left": 0}]))
    assert channel.prompts[-2:] == ["locked-out", "goodbye"]
    assert channel.results[-2:] == ["locked_out", "goodbye"]
    assert_goodbye(channel)
    assert backend.named("cancel") == []


def test_unknown_account_at_look_up_asks_for_the_account_again() -> None:
    backend = FakeBackend(account=["unknown_account"])
    channel, backend, _ = run([ACCOUNT, "1", "1111111111", "1", PIN, "1", "2"], backend)
    i = channel.prompts.index("unknown-account")
    assert channel.prompts[i + 1] == "enter-account"
    assert "unknown_account" in channel.results
    assert [c["account_no"] for c in backend.named("account")] == [ACCOUNT, "1111111111"]


def test_unknown_account_three_times_ends_the_call() -> None:
    backend = FakeBackend(account=["unknown_account"] * 3)
    channel, _, _ = run([ACCOUNT, "1", ACCOUNT, "1", ACCOUNT, "1"], backend)
    assert channel.prompts[-3:] == ["unknown-account", "too-many-tries", "goodbye"]


def test_unknown_account_at_quote_asks_for_the_account_again() -> None:
    backend = FakeBackend(quote=["unknown_account"])
    channel, _, _ = run([ACCOUNT, "1", PIN, ACCOUNT, "1", PIN, "1", "2"], backend)
    i = channel.prompts.index("unknown-account")
    assert channel.prompts[i + 1] == "enter-account"
    assert channel.results[-2:] == ["ok", "goodbye"]


@pytest.mark.parametrize("outcome", ["hold_expired", "no_quote"])
def test_a_lapsed_hold_at_commit_asks_for_the_pin_again(outcome: str) -> None:
    backend = FakeBackend(commit=[{"outcome": outcome, "serial_tail": "0042"}])
    channel, backend, _ = run([ACCOUNT, "1", PIN, "1", PIN, "1", "2"], backend)
    i = channel.prompts.index("hold-expired")
    assert channel.prompts[i + 1] == "enter-pin"
    assert outcome in channel.results
    assert [q["seq"] for q in backend.named("quote")] == [1, 1]
    assert [c["seq"] for c in backend.named("commit")] == [1, 1]
    assert channel.results[-2:] == ["ok", "goodbye"]


def test_a_card_refused_at_commit_is_explained() -> None:
    backend = FakeBackend(commit=[{"outcome": "card_frozen", "serial_tail": "0042"}])
    channel, _, _ = run([ACCOUNT, "1", PIN, "1", None, None], backend)
    assert "card-frozen" in channel.prompts and "card_frozen" in channel.results
    assert "recharge-ok" not in channel.prompts


# --- the servers unreachable --------------------------------------------------------------


def test_service_unavailable_at_look_up_says_the_card_was_not_used() -> None:
    channel, backend, _ = run([ACCOUNT, "1"], FakeBackend(account=["service_unavailable"]))
    assert channel.prompts[-2:] == ["service-unavailable", "goodbye"]
    assert channel.results[-2:] == ["service_unavailable", "goodbye"]
    assert backend.named("quote") == []
    assert_goodbye(channel)


def test_service_unavailable_at_quote_says_the_card_was_not_used_and_releases_any_hold() -> None:
    channel, backend, _ = run([ACCOUNT, "1", PIN], FakeBackend(quote=["service_unavailable"]))
    assert channel.prompts[-2:] == ["service-unavailable", "goodbye"]
    assert "service_unavailable" in channel.results
    assert backend.named("commit") == []
    assert backend.named("cancel") == [{"call_id": "1712345678.42", "seq": 1}]  # a quote may have landed unseen
    assert_goodbye(channel)


def test_service_unavailable_at_commit_is_retried_with_the_same_key() -> None:
    backend = FakeBackend(commit=["service_unavailable", "service_unavailable", DEFAULTS["commit"]])
    channel, backend, _ = run(HAPPY, backend)
    assert backend.named("commit") == [{"call_id": "1712345678.42", "seq": 1}] * 3
    assert channel.results[-4:] == ["commit-retry", "commit-retry", "ok", "goodbye"]
    assert "recharge-ok" in channel.prompts


def test_commit_never_answered_is_result_unknown_never_card_not_used() -> None:
    backend = FakeBackend(commit=["service_unavailable"] * 5)
    channel, backend, result = run(HAPPY, backend)
    assert backend.named("commit") == [{"call_id": "1712345678.42", "seq": 1}] * 3
    assert channel.results[-4:] == ["commit-retry", "commit-retry", "result-unknown", "goodbye"]
    assert channel.prompts[-2:] == ["result-unknown", "goodbye"]
    assert "service-unavailable" not in channel.prompts
    assert "recharge-cancelled" not in channel.prompts
    assert backend.named("cancel") == []  # the commit may have landed: nothing is undone
    assert result == "goodbye"
    assert_goodbye(channel)


def test_an_unknown_commit_answer_is_result_unknown() -> None:
    channel, backend, _ = run(HAPPY, FakeBackend(commit=["something_new"]))
    assert len(backend.named("commit")) == 1
    assert channel.prompts[-2:] == ["result-unknown", "goodbye"]


def test_a_backend_that_raises_is_treated_as_unavailable() -> None:
    backend = FakeBackend(quote=[RuntimeError("boom")])
    channel, _, _ = run([ACCOUNT, "1", PIN], backend)
    assert channel.prompts[-2:] == ["service-unavailable", "goodbye"]
    backend = FakeBackend(commit=[RuntimeError("boom")] * 3)
    channel, _, _ = run(HAPPY, backend)
    assert channel.prompts[-2:] == ["result-unknown", "goodbye"]


# --- releasing the held card --------------------------------------------------------------


def test_declining_cancels_the_hold() -> None:
    channel, backend, _ = run([ACCOUNT, "1", PIN, "2", "2"])
    assert backend.named("cancel") == [{"call_id": "1712345678.42", "seq": 1}]
    assert backend.named("commit") == []
    assert channel.results[-3:] == ["declined", "cancelled", "goodbye"]
    assert channel.prompts[-3:] == ["recharge-cancelled", "another-card", "goodbye"]


def test_declining_then_another_card_keeps_the_sequence_number() -> None:
    channel, backend, _ = run([ACCOUNT, "1", PIN, "2", "1", PIN2, "1", "2"])
    assert [(q["seq"], q["pin"]) for q in backend.named("quote")] == [(1, PIN), (1, PIN2)]
    assert backend.named("commit") == [{"call_id": "1712345678.42", "seq": 1}]


def test_hanging_up_after_a_quote_cancels_the_hold() -> None:
    channel, backend, result = run([ACCOUNT, "1", PIN, HANGUP])
    assert result == "hangup"
    assert backend.named("cancel") == [{"call_id": "1712345678.42", "seq": 1}]
    assert backend.named("commit") == []
    assert ("hangup",) not in channel.events


def test_hanging_up_during_the_card_value_cancels_the_hold() -> None:
    channel, backend, result = run([ACCOUNT, "1", PIN], barge={"card-value": [HANGUP]})
    assert result == "hangup"
    assert backend.named("cancel") == [{"call_id": "1712345678.42", "seq": 1}]


def test_hanging_up_before_a_quote_cancels_nothing() -> None:
    channel, backend, result = run([ACCOUNT, "1", HANGUP])
    assert result == "hangup"
    assert backend.named("cancel") == []


def test_hanging_up_after_a_commit_cancels_nothing() -> None:
    channel, backend, result = run([ACCOUNT, "1", PIN, "1", HANGUP])
    assert result == "hangup"
    assert backend.named("cancel") == []
    assert len(backend.named("commit")) == 1


def test_an_unexpected_error_releases_the_hold_and_propagates() -> None:
    class Broken(FakeChannel):
        def say_amount(self, fen: int, escape_digits: str = "") -> str:
            raise OSError("pipe")

    channel = Broken([ACCOUNT, "1", PIN])
    backend = FakeBackend(account=[{"outcome": "ok", "holder": "李*"}])  # no balance: nothing said before the PIN
    with pytest.raises(OSError):
        RechargeDialog(channel, backend, call_id="c1", caller="").run()
    assert backend.named("cancel") == [{"call_id": "c1", "seq": 1}]


def test_apologise_says_sorry_goodbye_and_hangs_up_even_on_a_failing_channel() -> None:
    channel = FakeChannel()
    dialog.apologise(channel)
    assert channel.prompts == ["system-error", "goodbye"]
    assert channel.events[-1] == ("hangup",)

    class Dead(FakeChannel):
        def play(self, prompt_id: str, escape_digits: str = "") -> str:
            raise CallerHungUp

    dialog.apologise(Dead())  # does not raise


def test_a_quote_without_an_amount_is_not_offered_to_the_caller() -> None:
    channel, backend, _ = run([ACCOUNT, "1", PIN], FakeBackend(quote=[{"outcome": "ok"}]))
    assert "card-value" not in channel.prompts and "quote-ok" not in channel.results
    assert channel.prompts[-2:] == ["service-unavailable", "goodbye"]
    assert backend.named("cancel") == [{"call_id": "1712345678.42", "seq": 1}]
    assert backend.named("commit") == []


# --- transfer to an agent (转人工) ------------------------------------------------------------

AGENTS = DialogSettings(agents=True)


def assert_transferred(channel: FakeChannel) -> None:
    assert channel.results[-1] == "transfer"
    assert channel.prompts[-1] == "transfer-agent"
    assert channel.events[-1] == ("transfer",)
    assert ("hangup",) not in channel.events, "the dialplan goes on with the call"


def test_key_zero_during_the_welcome_transfers() -> None:
    channel, backend, result = run([], barge={"welcome": ["0"]}, settings=AGENTS)
    assert channel.prompts == ["welcome", "transfer-agent"]
    assert result == "transfer"
    assert_transferred(channel)
    assert backend.calls == []


@pytest.mark.parametrize("entries", [["0"], [ACCOUNT, "0"], [ACCOUNT, "1", "0#"], [ACCOUNT, "1", PIN, "1", "0"]])
def test_zero_alone_at_any_menu_or_entry_transfers(entries: list[str]) -> None:
    channel, backend, _ = run(entries, settings=AGENTS)
    assert_transferred(channel)
    assert backend.named("cancel") == []


def test_a_held_card_is_released_before_the_transfer() -> None:
    channel, backend, _ = run([ACCOUNT, "1", PIN, "0"], settings=AGENTS)
    assert channel.results[-4:] == ["account-ok", "quote-ok", "cancelled", "transfer"][-4:]
    assert backend.named("cancel") == [{"call_id": "1712345678.42", "seq": 1}]
    assert backend.named("commit") == []
    assert_transferred(channel)


def test_a_zero_during_a_read_back_answers_the_menu_with_a_transfer() -> None:
    channel, _, _ = run([ACCOUNT], barge={"digits": ["0"]}, settings=AGENTS)
    assert_transferred(channel)


def test_an_account_or_pin_starting_with_zero_is_not_a_transfer() -> None:
    channel, backend, _ = run([ACCOUNT, "1", "0" + PIN[1:], "1", "2"], settings=AGENTS)
    assert ACCOUNT.startswith("0") and "transfer" not in channel.results
    assert [q["pin"] for q in backend.named("quote")] == ["0" + PIN[1:]]
    assert_goodbye(channel)


def test_three_failed_entries_transfer_but_three_bad_pins_say_goodbye() -> None:
    channel, _, _ = run([None, None, None], settings=AGENTS)
    assert channel.results == ["lang-zh", "no-input", "no-input", "no-input", "too-many-tries", "transfer"]
    assert_transferred(channel)
    channel, backend, _ = run([ACCOUNT, "1", PIN, None, None, None], settings=AGENTS)
    assert channel.results[-3:] == ["too-many-tries", "cancelled", "transfer"]
    assert len(backend.named("cancel")) == 1
    channel, _, _ = run([ACCOUNT, "1", "1", "22", "333"], settings=AGENTS)
    assert_goodbye(channel)


def test_without_agents_zero_is_an_ordinary_key() -> None:
    channel, _, _ = run(["0", None, None], barge={"welcome": ["0"]})
    assert "transfer" not in channel.results and ("transfer",) not in channel.events
    assert "invalid-input" in channel.results
    assert_goodbye(channel)
