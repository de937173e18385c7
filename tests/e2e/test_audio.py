"""What the caller hears, proved from the call's audio: the real Asterisk sandbox, the real prompts, and faults put in them.

``tests/e2e/test_hotline.py`` replays every script of ``tests/calls`` with
text and audio both checked (``Hotline.call``'s default).  This module runs
the replay's other modes against a hotline of its own: the scripts of
``tests/calls/audio`` (keys pressed during and between prompts, RFC 4733
keys), ten ``tests/calls`` scripts audio-only (no MESSAGE text reaches
SIPp at all; the rest need card states or stopped servers that
``test_hotline`` prepares), and the faults: the sandbox's sound files are
broken on purpose (a prompt missing, swapped with another, the English file
in place of the Mandarin one, a number sound wrong) and the replay must fail
on the step that names the broken prompt, saying what was heard instead.  The faults are put in
the sandbox's ``sounds`` folder and taken out again by each test (Asterisk
reads a file each time it plays it, so nothing is restarted).

Needs what the rest of ``tests/e2e`` needs; nothing skips.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from testkit.hotline import CALLS, Hotline
from testkit.replay import FAIL, SKIP, ScriptResult
from testkit.sandbox import CHROOT_SOUNDS_DIR

pytestmark = pytest.mark.slow

AUDIO_CALLS = CALLS / "audio"
FACE = 5000
WRONG_PIN = "100000000000000001"


@pytest.fixture(scope="module")
def pins() -> dict[str, str]:
    return {}


@pytest.fixture(scope="module")
def hotline(hotline_factory: Callable[[Callable[[Hotline], None]], Hotline], pins: dict[str, str]) -> Hotline:
    def prepare(h: Hotline) -> None:
        names = ["one-card", "english", "quick", "wrong-then-right", "decline", "amount-fault", "two-a", "two-b"]
        pins.update({name: pin for name, (_serial, pin) in zip(names, h.issue("A1", len(names)), strict=True)})

    return hotline_factory(prepare)


def report(result: ScriptResult) -> str:
    return "\n" + result.report() + ("\n" + result.run.explain() if result.run else "")


def values(n: int, **more: str) -> dict[str, str]:
    """A caller and an account of its own for the n-th call of this module (the lock-out counts per caller)."""
    return {"CALLER": f"1390000{n:04d}", "ACCOUNT": f"31000000{n % 12 + 1:02d}", "AMOUNT": str(FACE), **more}


def step(result: ScriptResult, source: str):  # type: ignore[no-untyped-def]
    """The (single) call's step written ``source`` (the first of them)."""
    (call,) = result.calls
    return next(s for s in call.steps if s.source == source)


# --- keys during and between prompts, RFC 4733 -----------------------------------------------------------


def test_keys_pressed_during_a_prompt_are_kept(hotline: Hotline) -> None:
    result = hotline.call(AUDIO_CALLS / "key-during-prompt.call", values(1))
    assert result.passed, report(result)
    send = step(result, "send ${ACCOUNT}# after 1s")
    assert "by rfc4733" in send.heard and " into enter-account " in send.heard, send.heard
    (call,) = result.calls
    asked = next(h for h in call.heard if h.id == "enter-account")
    assert not asked.complete and asked.coverage < 0.3, "the key stopped the prompt: " + asked.describe()
    assert "heard digits " + values(1)["ACCOUNT"] in step(result, "expect digits=${ACCOUNT}").heard


def test_keys_pressed_after_a_prompt_ended_are_not_lost(hotline: Hotline) -> None:
    result = hotline.call(AUDIO_CALLS / "key-between-prompts.call", values(2))
    assert result.passed, report(result)
    send = step(result, "send ${ACCOUNT}# after 12500ms")
    assert "by info" in send.heard and "between prompts (enter-account ended" in send.heard, send.heard
    (call,) = result.calls
    assert next(h for h in call.heard if h.id == "enter-account").complete


def test_english_with_rfc4733_keys_in_both_modes(hotline: Hotline) -> None:
    with ThreadPoolExecutor(2) as pool:
        both = pool.submit(hotline.call, AUDIO_CALLS / "english-rfc4733.call", values(3))
        alone = pool.submit(hotline.call, AUDIO_CALLS / "english-rfc4733.call", values(4), audio="only")
        both_result, alone_result = both.result(), alone.result()
    for result in (both_result, alone_result):
        assert result.passed, report(result)
        assert "heard confirm-account (en)" in step(result, "expect prompt=confirm-account").heard
    assert step(alone_result, "expect result=lang-en").status == SKIP


# --- audio-only: no text at all ---------------------------------------------------------------------------

AUDIO_ONLY = {
    "recharge-one-card": {"PIN": "one-card"},
    "recharge-english": {"PIN": "english"},
    "recharge-quick": {"PIN": "quick"},
    "wrong-pin-then-right": {"PIN": "wrong-then-right", "WRONG_PIN": WRONG_PIN},
    "decline": {"PIN": "decline"},
    "unknown-account": {"UNKNOWN_ACCOUNT": "9999999999"},
    "recharge-two-cards": {"PIN": "two-a", "PIN2": "two-b"},
    "reenter-account": {"WRONG_ACCOUNT": "3100000099"},
    "star-goes-back": {},
    "silence": {},
}


def test_scripts_pass_audio_only(hotline: Hotline, pins: dict[str, str]) -> None:
    jobs = {name: values(10 + i, **{k: pins[v] if k.startswith("PIN") else v for k, v in extra.items()})
            for i, (name, extra) in enumerate(AUDIO_ONLY.items())}
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {name: pool.submit(hotline.call, name, v, audio="only") for name, v in jobs.items()}
        results = {name: f.result() for name, f in futures.items()}
    failed = [report(r) for r in results.values() if not r.passed]
    assert not failed, "\n".join(failed)
    one = results["recharge-one-card"]
    assert "heard amount 5000" in step(one, "expect amount=${AMOUNT}").heard
    assert step(one, "expect result=ok").status == SKIP
    (call,) = one.calls
    assert not call.texts or all(t.body.startswith("prompt=") for t in call.texts), "SIPp saw only what was heard"


# --- faults: the sandbox's sounds broken on purpose ------------------------------------------------------


@contextmanager
def broken(hotline: Hotline, faults: dict[tuple[str, str], tuple[str, str] | None]) -> Iterator[None]:
    """Each ``sounds/<lang>/<name>.wav`` removed (``None``) or replaced by ``sounds/<lang2>/<name2>.wav``, then put back."""
    assert hotline.sandbox is not None
    sandbox = hotline.sandbox

    def path(lang: str, name: str) -> Path:
        return sandbox.path(f"{CHROOT_SOUNDS_DIR}/{lang}/{name}.wav")

    saved = {}
    try:
        for (lang, name), replacement in faults.items():
            saved[path(lang, name)] = path(lang, name).read_bytes()
            if replacement is None:
                path(lang, name).unlink()
            else:
                path(lang, name).write_bytes(path(*replacement).read_bytes())
        yield
    finally:
        for target, data in saved.items():
            target.write_bytes(data)


def failed_at(result: ScriptResult, source: str) -> str:
    """The detail of the failed step, which must be the first step written ``source``."""
    (call,) = result.calls
    failed = call.failed_step
    assert failed is not None, report(result)
    assert failed.source == source and failed.status == FAIL, report(result)
    first = next(s for s in call.steps if s.source == source)
    assert first.number == failed.number, report(result)
    return failed.detail


# The faults are put in one at a time on you-entered, a prompt no key can stop (so nothing cut short can be mistaken
# for it), and read-back.call reaches it in a few seconds; the amount's fault is on another file, alongside.
READ_BACK = AUDIO_CALLS / "read-back.call"


def test_a_missing_prompt_fails_its_step(hotline: Hotline) -> None:
    # Both languages: Asterisk falls back to the English file when the Mandarin one is missing (tested below).
    with broken(hotline, {("zh", "you-entered"): None, ("en", "you-entered"): None}):
        result = hotline.call(READ_BACK, values(30))
    detail = failed_at(result, "expect prompt=you-entered")
    assert detail.startswith("you-entered not heard; heard instead: digits/3 (zh)"), detail


def test_a_prompt_swapped_with_another_fails_its_step_in_both_modes(hotline: Hotline) -> None:
    with broken(hotline, {("zh", "you-entered"): ("zh", "account-found")}), ThreadPoolExecutor(2) as pool:
        both = pool.submit(hotline.call, READ_BACK, values(31))
        alone = pool.submit(hotline.call, READ_BACK, values(35), audio="only")
        results = both.result(), alone.result()
    for result in results:
        detail = failed_at(result, "expect prompt=you-entered")
        assert detail.startswith("you-entered not heard; heard instead: account-found (zh)"), report(result)


def test_the_english_file_in_place_of_the_mandarin_one_and_an_amount_read_wrong_fail_their_steps(
        hotline: Hotline, pins: dict[str, str]) -> None:
    # 50 yuan is said 五十元: digits/50, then currency-yuan; no account number here has a 50 in it.
    faults = {("zh", "you-entered"): ("en", "you-entered"), ("zh", "digits/50"): ("zh", "digits/60")}
    with broken(hotline, faults), ThreadPoolExecutor(2) as pool:
        english = pool.submit(hotline.call, READ_BACK, values(32))
        amount = pool.submit(hotline.call, "decline", values(33, PIN=pins["amount-fault"]))
        english_result, amount_result = english.result(), amount.result()
    detail = failed_at(english_result, "expect prompt=you-entered")
    assert "heard you-entered (en)" in detail and "but the call is in zh" in detail
    detail = failed_at(amount_result, "expect amount=${AMOUNT}")
    assert "heard amount 6000" in detail and "not 5000" in detail
