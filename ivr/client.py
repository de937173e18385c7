"""The AGI side's client for the recharge server pair: signed requests, failover, and never an exception.

``RechargeClient`` talks to the servers in order of preference, starting with
the one that answered last (the primary, at first).  A refused connection, a
timeout, a broken or 5xx answer moves the *same* request, signed again with a
new nonce, to the next server: the request names its recharge by call id and
sequence number, so the servers answer a repeat with the first answer and
nothing is spent twice.  The whole round, every server included, is bounded
by ``total_timeout`` (one second by default), which a caller does not notice.
When no server answers, the dialog gets ``{"outcome": "service_unavailable"}``.

This module runs inside Asterisk's AGI process under the host's own Python
(3.11 to 3.14): standard library only.  Log lines carry the call id and
never a PIN (request bodies are never logged).
"""

# test-case-name: tests.ivr.test_client

import http.client
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ivr import protocol

log = logging.getLogger("ivr.client")

MAX_RESPONSE = 65536  # bytes; an answer is a few hundred


class _TryNext(Exception):
    """This server did not give a usable answer; the reason is the message."""


class RechargeClient:
    """Signed JSON requests to the recharge servers, with failover; see the module docstring."""

    def __init__(
        self,
        servers: Sequence[tuple[str, int]],
        api_key: bytes,
        timeout: float = 0.5,
        clock: Callable[[], float] = time.time,
        total_timeout: float = 1.0,
    ) -> None:
        """``servers`` in order of preference; ``timeout`` per server, ``total_timeout`` for a whole round.

        ``clock`` gives the wall-clock time that requests are signed with;
        the time limits are measured on the monotonic clock.
        """
        if not servers:
            raise ValueError("RechargeClient needs at least one server")
        self.servers = [(str(h), int(p)) for h, p in servers]
        self._key = api_key
        self.timeout = timeout
        self.total_timeout = total_timeout
        self.clock = clock
        self.current = 0  # index of the server that answered last

    # --- the four recharge requests and health ------------------------------------

    def account(self, *, call_id: str, account_no: str) -> dict[str, Any]:
        """The account summary: ``{"outcome", "account_no", "holder", "balance"}``."""
        return self._post("account", call_id, {"call_id": call_id, "account_no": account_no})

    def quote(self, *, call_id: str, seq: int, account_no: str, pin: str, caller: str) -> dict[str, Any]:
        """Check account and PIN and hold the card for this call."""
        body = {"call_id": call_id, "seq": seq, "account_no": account_no, "pin": pin, "caller": caller}
        return self._post("quote", call_id, body)

    def commit(self, *, call_id: str, seq: int) -> dict[str, Any]:
        """Spend the held card: ``{"outcome", "recharge_ref", "amount", "account_no", "serial_tail"}``."""
        return self._post("commit", call_id, {"call_id": call_id, "seq": seq})

    def cancel(self, *, call_id: str, seq: int) -> dict[str, Any]:
        """Release the held card (the caller declined)."""
        return self._post("cancel", call_id, {"call_id": call_id, "seq": seq})

    def health(self) -> dict[str, Any]:
        """The first answering server's ``/v1/health``, with failover like the others."""
        return self._round("health", "-", "GET", "/v1/health", b"")

    # --- failover ------------------------------------------------------------------

    def _post(self, endpoint: str, call_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        return self._round(endpoint, call_id, "POST", f"/v1/{endpoint}", body)

    def _order(self) -> list[int]:
        n = len(self.servers)
        return [(self.current + i) % n for i in range(n)]

    def _round(self, endpoint: str, call_id: str, method: str, path: str, body: bytes) -> dict[str, Any]:
        deadline = time.monotonic() + self.total_timeout
        for index in self._order():
            host, port = self.servers[index]
            budget = min(self.timeout, deadline - time.monotonic())
            if budget <= 0.001:
                log.warning("call %s: %s: no time left to try %s:%d", call_id, endpoint, host, port)
                break
            try:
                status, answer = self._exchange(host, port, method, path, body, budget)
            except _TryNext as e:
                log.warning("call %s: %s via %s:%d failed (%s); trying the next server", call_id, endpoint, host, port, e)
                continue
            if index != self.current:
                log.warning("call %s: now using %s:%d", call_id, host, port)
                self.current = index
            if status == 200:
                log.info("call %s: %s -> %s (%s:%d)", call_id, endpoint, answer.get("outcome", "-"), host, port)
                return answer
            # A 4xx: this request is wrong, and would be wrong on the other server too.
            log.error(
                "call %s: %s refused by %s:%d: HTTP %d %s: %s", call_id, endpoint, host, port, status,
                answer.get("error", "-"), answer.get("message", "-"),
            )
            return {"outcome": protocol.SERVICE_UNAVAILABLE, "error": answer.get("error", f"http_{status}")}
        log.error("call %s: %s: no recharge server answered", call_id, endpoint)
        return {"outcome": protocol.SERVICE_UNAVAILABLE}

    def _exchange(
        self, host: str, port: int, method: str, path: str, body: bytes, budget: float
    ) -> tuple[int, dict[str, Any]]:
        """One request to one server within ``budget`` seconds: (status, decoded object), or ``_TryNext``."""
        end = time.monotonic() + budget
        headers = {"Accept": "application/json", "Connection": "close"}
        if method == "POST":
            headers["Content-Type"] = "application/json"
            headers.update(protocol.sign(self._key, method, path, body, self.clock()))
        conn = http.client.HTTPConnection(host, port, timeout=budget)
        response: http.client.HTTPResponse | None = None
        try:
            conn.request(method, path, body=body if method == "POST" else None, headers=headers)
            # A socket timeout limits each wait, not the sum: narrow it to what is left before each one.
            _narrow(conn, end)
            response = conn.getresponse()
            _narrow_response(response, end)
            raw = response.read(MAX_RESPONSE + 1)
            status = response.status
        except TimeoutError:
            raise _TryNext("timed out") from None
        except (OSError, http.client.HTTPException) as e:
            raise _TryNext(type(e).__name__ + (f": {e.strerror}" if isinstance(e, OSError) and e.strerror else "")) from None
        finally:
            if response is not None:
                response.close()
            conn.close()
        if status >= 500:
            raise _TryNext(f"HTTP {status}")
        if len(raw) > MAX_RESPONSE:
            raise _TryNext("answer too large")
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _TryNext(f"HTTP {status} with a body that is not JSON") from None
        if not isinstance(answer, dict) or (status == 200 and path != "/v1/health" and not isinstance(answer.get("outcome"), str)):
            raise _TryNext(f"HTTP {status} with an answer of the wrong shape")
        return status, answer


def _left(end: float) -> float:
    left = end - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _narrow(conn: http.client.HTTPConnection, end: float) -> None:
    if conn.sock is not None:
        conn.sock.settimeout(_left(end))


def _narrow_response(response: http.client.HTTPResponse, end: float) -> None:
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(_left(end))
