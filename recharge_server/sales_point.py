"""The sales-point API's wire contract: the sale request's fields, the ways it chooses cards, and a client.

``POST /v1/sales`` carries the terminal's idempotency ``key`` and one of
``SHAPES``: a ``serial``, a ``first_serial`` and ``last_serial``, or a
``batch`` and ``box``.  ``validate_sale`` applies that strictly (one line,
never quoting a value) and returns the key and the ``stock.Selection``;
``recharge_server/openapi.yaml`` documents the same fields, and a test keeps
them equal.  Signing is the recharge API's own (``ivr.protocol``): a POS
terminal is a channel client with its own key.

``SalesPointClient`` is a small blocking client for a terminal's integrator,
``cli.py client sell`` and the tests: it signs each request anew and, on a
503 or a refused connection, repeats it, with the same key, on the next
server, so a sale is never made twice.
"""

# test-case-name: tests.recharge_server.test_sales_api

import http.client
import json
import random
import ssl
import time
from collections.abc import Sequence
from typing import Any

from cardmgmt.stock import Selection
from ivr import fields, protocol
from ivr.protocol import Field, InvalidRequest

PATH = "/v1/sales"
KEY_MAX = 80  # cardmgmt.models.Sale.key (a test keeps them equal)
_SERIAL = f"[0-9]{{{fields.SERIAL_DIGITS}}}"

KEY = Field(
    "key", "string", f"the terminal's idempotency key: 1-{KEY_MAX} letters, digits, '.', '_', ':' or '-'",
    pattern=f"[A-Za-z0-9._:-]{{1,{KEY_MAX}}}", max_length=KEY_MAX,
)
SERIAL = Field("serial", "string", f"a card serial: {fields.SERIAL_DIGITS} digits", pattern=_SERIAL,
               max_length=fields.SERIAL_DIGITS)
FIRST_SERIAL = Field("first_serial", "string", f"the range's first serial: {fields.SERIAL_DIGITS} digits",
                     pattern=_SERIAL, max_length=fields.SERIAL_DIGITS)
LAST_SERIAL = Field("last_serial", "string", f"the range's last serial: {fields.SERIAL_DIGITS} digits",
                    pattern=_SERIAL, max_length=fields.SERIAL_DIGITS)
BATCH = Field("batch", "string", "a batch number: 1-32 letters, digits, '.', '_' or '-'",
              pattern="[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", max_length=32)
BOX = Field("box", "integer", "a box of the batch, from 1", minimum=1, maximum=1_000_000)

SALE_FIELDS: tuple[Field, ...] = (KEY, SERIAL, FIRST_SERIAL, LAST_SERIAL, BATCH, BOX)
# The card-choosing fields a sale may carry besides its key: exactly one of these sets.
SHAPES: tuple[tuple[str, ...], ...] = (("serial",), ("first_serial", "last_serial"), ("batch", "box"))


def validate_sale(payload: Any) -> tuple[str, Selection]:
    """The sale's key and the cards it names, if ``payload`` is one of the allowed shapes; else ``InvalidRequest``."""
    if not isinstance(payload, dict):
        raise InvalidRequest("the body must be a JSON object")
    known = {f.name: f for f in SALE_FIELDS}
    unknown = sorted((k for k in payload if k not in known), key=str)
    if unknown:
        raise InvalidRequest(f"unknown field {str(unknown[0])[:40]!r} for sales")
    if "key" not in payload:
        raise InvalidRequest("missing field 'key' for sales")
    for name, value in payload.items():
        problem = known[name].problem(value)
        if problem is not None:
            raise InvalidRequest(problem)
    chosen = tuple(f.name for f in SALE_FIELDS if f.name in payload and f.name != "key")
    if chosen not in SHAPES:
        ways = "; or ".join(" and ".join(repr(n) for n in shape) for shape in SHAPES)
        raise InvalidRequest(f"a sale names its cards by {ways}")
    if chosen == ("serial",):
        sel = Selection.serial(payload["serial"])
    elif chosen == ("first_serial", "last_serial"):
        sel = Selection(first_serial=payload["first_serial"], last_serial=payload["last_serial"])
    else:
        sel = Selection(batch_no=payload["batch"], box_no=payload["box"])
    return payload["key"], sel


ROUND_PAUSE = 0.2  # seconds before a terminal's second round; doubled each round after, up to ROUND_PAUSE_MAX
ROUND_PAUSE_MAX = 2.0


class SalesPointClient:
    """A POS terminal's client: signed sales to the recharge servers, in order, failing over on 503.

    ``servers`` are (host, port) pairs; ``key`` the terminal's signing key;
    ``tls`` a context trusting the installation's certificate authority.
    """

    def __init__(
        self, servers: Sequence[tuple[str, int]], key: bytes, *, client: str, tls: ssl.SSLContext,
        timeout: float = 15.0, rounds: int = 3,
    ) -> None:
        self.servers, self.key, self.client, self.tls = list(servers), key, client, tls
        self.timeout, self.rounds = timeout, rounds

    def sell(self, key: str, **cards: Any) -> tuple[int, dict[str, Any]]:
        """Sell the cards (``serial=``, ``first_serial=``/``last_serial=`` or ``batch=``/``box=``) under ``key``.

        Returns the HTTP status and the JSON answer: 200 with the sale, or a
        4xx error; a 503 after every server was tried ``rounds`` times, with a
        growing random pause between rounds.
        """
        body = json.dumps({"key": key, **cards}).encode()
        status, answer = 503, {"outcome": protocol.SERVICE_UNAVAILABLE}
        for n in range(self.rounds):
            if n:
                # Every server was busy or unreachable: a random pause, doubling, before the next round
                # (a busy server refuses at once and closes new connections beyond its handshake bound).
                time.sleep(min(ROUND_PAUSE_MAX, ROUND_PAUSE * 2 ** (n - 1)) * random.uniform(0.5, 1.5))
            for host, port in self.servers:
                try:
                    status, answer = self._post(host, port, body)
                except OSError:
                    continue
                if status != 503:
                    return status, answer
        return status, answer

    def _post(self, host: str, port: int, body: bytes) -> tuple[int, dict[str, Any]]:
        headers = protocol.sign(self.key, "POST", PATH, body, time.time(), client=self.client)
        conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self.tls)
        try:
            conn.request("POST", PATH, body=body, headers=headers | {"Content-Type": "application/json"})
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, {"error": "bad_answer", "message": f"HTTP {response.status} with a body not JSON"}
