"""Steady recharge load through the server pair while parts are killed, for the chaos tests and the failover benchmark.

``SteadyLoad`` runs caller threads, each with the real failover client
(``ivr.client.RechargeClient``), taking the next card from a list and doing
what the dialog does: quote, then commit, each step repeated with the same
call id while it is answered ``service_unavailable`` (or not at all), up to
``give_up`` seconds per call, so that every call ends with a definite answer
even across a database failover.  Each call is kept as a ``Call`` with the
moment its quote was first sent and its commit answered, so the time from a
kill to the first recharge begun and completed after it can be read back
(``resumed_after``).
"""

# test-case-name: tests.integration.test_db_failover

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

RETRY_PAUSE = 0.1  # seconds between repeats of a step answered service_unavailable


@dataclass
class Call:
    """One recharge call: its idempotency key (``call_id#seq``), card, final answer and moments (monotonic)."""

    key: str
    serial: str
    answer: dict[str, Any]
    started: float
    finished: float
    repeats: int


@dataclass
class SteadyLoad:
    """``workers`` callers recharging ``cards`` ((serial, pin) pairs) onto ``accounts`` until stopped or out of cards."""

    make_client: Callable[[], Any]
    cards: list[tuple[str, str]]
    accounts: list[str]
    prefix: str
    workers: int = 4
    give_up: float = 30.0
    think: float = 0.0  # seconds each caller pauses between calls (a steady load rather than the most it can)
    calls: list[Call] = field(default_factory=list)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> SteadyLoad:
        for _ in range(self.workers):
            t = threading.Thread(target=self._work, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> list[Call]:
        """Take no new card, let the calls under way finish; every call made."""
        self._stop.set()
        for t in self._threads:
            t.join(self.give_up * 2 + 10)
        return self.calls

    def _take(self) -> tuple[int, str, str] | None:
        with self._lock:
            if self._stop.is_set() or self._next >= len(self.cards):
                return None
            i = self._next
            self._next += 1
        return (i, *self.cards[i])

    def _work(self) -> None:
        client = self.make_client()
        while (job := self._take()) is not None:
            i, serial, pin = job
            call_id = f"{self.prefix}-{i}"
            started = time.monotonic()
            deadline = started + self.give_up
            quote = partial(client.quote, call_id=call_id, seq=1, account_no=self.accounts[i % len(self.accounts)],
                            pin=pin, caller=f"139{i:08d}")
            answer, repeats = self._repeat(quote, deadline)
            if answer.get("outcome") == "ok":
                answer, more = self._repeat(partial(client.commit, call_id=call_id, seq=1), deadline)
                repeats += more
            with self._lock:
                self.calls.append(Call(f"{call_id}#1", serial, answer, started, time.monotonic(), repeats))
            if self.think:
                time.sleep(self.think)
        close = getattr(client, "close", None)
        if close:
            close()

    @staticmethod
    def _repeat(step: Callable[[], dict[str, Any]], deadline: float) -> tuple[dict[str, Any], int]:
        repeats = 0
        while True:
            try:
                answer = step()
            except OSError as e:  # no server answered at all
                answer = {"outcome": "service_unavailable", "error": str(e)}
            if answer.get("outcome") != "service_unavailable" or time.monotonic() > deadline:
                return answer, repeats
            repeats += 1
            time.sleep(RETRY_PAUSE)

    def resumed_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the end of the first successful recharge begun after it (``None``: none yet)."""
        with self._lock:
            done = [c.finished for c in self.calls if c.started >= moment and c.answer.get("outcome") == "ok"]
        return min(done) - moment if done else None

    def ok_count(self) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c.answer.get("outcome") == "ok")
