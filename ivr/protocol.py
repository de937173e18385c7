"""The wire contract between the AGI failover client and the recharge servers: signing and request fields.

Both ends import this module, and the AGI end runs it under whatever Python
the Asterisk host has (3.11 to 3.14), so it uses the standard library only.

Every ``POST`` carries four headers: ``X-Client`` (the channel client's
registered name, see ``cardmgmt.channel_clients``), ``X-Timestamp`` (unix
seconds), ``X-Nonce`` (128 random bits, hex) and ``X-Signature``, the hex
HMAC-SHA256 under that client's own key of::

    METHOD "\\n" path "\\n" client "\\n" timestamp "\\n" nonce "\\n" hex(sha256(body))

The client's name is signed, so a request signed with one client's key
cannot be passed off as another's.

``verify`` refuses a request whose headers are missing or malformed
(``MissingHeaders``), whose signature does not match (``BadSignature``) or
whose timestamp is more than ``max_skew`` seconds away from the server's clock
(``StaleRequest``).  It returns the nonce; the server records it so that a
captured request is refused when replayed, on either server.

``REQUESTS`` describes each endpoint's JSON fields (names, types, limits) as
plain data; ``validate_request`` applies it strictly, and the OpenAPI document
(``recharge_server/openapi.yaml``) is checked against it by a test.
"""

# test-case-name: tests.ivr.test_protocol

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ivr import fields

MAX_BODY = 4096  # bytes; a real request is under 200
DEFAULT_MAX_SKEW = 30  # seconds

CLIENT_HEADER = "X-Client"
TIMESTAMP_HEADER = "X-Timestamp"
NONCE_HEADER = "X-Nonce"
SIGNATURE_HEADER = "X-Signature"
SIGNED_HEADERS = (CLIENT_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)

# What the client gives the dialog when no server could answer.
SERVICE_UNAVAILABLE = "service_unavailable"

# As ``cardmgmt.channel_clients.NAME`` (a test keeps them equal).
CLIENT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")


class ProtocolError(Exception):
    """Base of the signing errors; the message is one line and names no secret."""


class MissingHeaders(ProtocolError):
    """A signing header is absent or not in its required form."""


class StaleRequest(ProtocolError):
    """The request's timestamp is too far from the server's clock (a late replay, or a clock off)."""


class BadSignature(ProtocolError):
    """The signature does not match the request: wrong key, or the request was altered."""


class InvalidRequest(ValueError):
    """A request body that does not match its endpoint's fields; the message is one line."""


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def string_to_sign(method: str, path: str, client: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """The exact bytes the signature covers."""
    return "\n".join((method.upper(), path, client, timestamp, nonce, body_digest(body))).encode("utf-8")


def _signature(key: bytes, method: str, path: str, client: str, timestamp: str, nonce: str, body: bytes) -> str:
    return hmac.new(key, string_to_sign(method, path, client, timestamp, nonce, body), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    """128 bits from the operating system's cryptographic source, as 32 hex digits."""
    return secrets.token_hex(16)


def sign(
    key: bytes, method: str, path: str, body: bytes, now: float, nonce: str | None = None, *, client: str
) -> dict[str, str]:
    """The four signing headers for one request of channel client ``client`` sent at unix time ``now``.

    Every call makes a fresh nonce unless one is given (tests only): a request
    repeated on another server must be signed again.
    """
    timestamp = str(int(now))
    nonce = new_nonce() if nonce is None else nonce
    return {
        CLIENT_HEADER: client,
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: _signature(key, method, path, client, timestamp, nonce, body),
    }


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for k, v in headers.items():
        if k.lower() == wanted:
            return v
    return None


def client_of(headers: Mapping[str, str]) -> str:
    """The channel client a request names in ``X-Client``, well formed, or ``MissingHeaders``."""
    client = _header(headers, CLIENT_HEADER)
    if client is None or not CLIENT_NAME.match(client):
        raise MissingHeaders(f"a signed request needs {CLIENT_HEADER}: its channel client's registered name")
    return client


def verify(
    key: bytes,
    method: str,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    now: float,
    max_skew: float = DEFAULT_MAX_SKEW,
) -> str:
    """Check a request's signature and freshness; return its nonce.

    ``key`` is the key of the client named in ``X-Client`` (``client_of``).
    ``headers`` is looked up without regard to case.  The signature is checked
    before the clock, so a stranger learns nothing from the answer but "no".
    """
    client = client_of(headers)
    timestamp = _header(headers, TIMESTAMP_HEADER)
    nonce = _header(headers, NONCE_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if timestamp is None or nonce is None or signature is None:
        raise MissingHeaders(f"a signed request needs the headers {', '.join(SIGNED_HEADERS)}")
    if not _TIMESTAMP.match(timestamp):
        raise MissingHeaders(f"{TIMESTAMP_HEADER} must be whole unix seconds")
    if not _NONCE.match(nonce):
        raise MissingHeaders(f"{NONCE_HEADER} must be 32 lowercase hex digits")
    if not _SIGNATURE.match(signature):
        raise MissingHeaders(f"{SIGNATURE_HEADER} must be 64 lowercase hex digits")
    expected = _signature(key, method, path, client, timestamp, nonce, body)
    if not hmac.compare_digest(expected, signature):
        raise BadSignature("the request signature does not match")
    if abs(now - int(timestamp)) > max_skew:
        raise StaleRequest(f"the request timestamp is more than {max_skew:g} seconds from the server's clock")
    return nonce


# --- request fields ------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One JSON field of a request: ``kind`` is ``"string"`` or ``"integer"`` (as in JSON Schema)."""

    name: str
    kind: str
    description: str
    pattern: str | None = None  # strings: the whole value must match
    max_length: int | None = None  # strings
    minimum: int | None = None  # integers
    maximum: int | None = None  # integers

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable, in words that never repeat the value; ``None`` if it is."""
        if self.kind == "integer":
            # JSON true/false arrive as bool, which Python counts as int.
            if not isinstance(value, int) or isinstance(value, bool):
                return f"field {self.name!r} must be a whole number"
            if (self.minimum is not None and value < self.minimum) or (
                self.maximum is not None and value > self.maximum
            ):
                return f"field {self.name!r} must be from {self.minimum} to {self.maximum}"
            return None
        if not isinstance(value, str):
            return f"field {self.name!r} must be a string"
        if self.max_length is not None and len(value) > self.max_length:
            return f"field {self.name!r} must be at most {self.max_length} characters"
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return f"field {self.name!r} must be {self.description}"
        return None


CALL_ID = Field(
    "call_id", "string", f"the call's unique id: 1-{fields.CALL_ID_MAX} letters, digits, '.', '_', ':' or '-'",
    pattern=fields.CALL_ID_PATTERN, max_length=fields.CALL_ID_MAX,
)
SEQ = Field("seq", "integer", "which card of this call, from 1", minimum=1, maximum=fields.MAX_SEQ)
ACCOUNT_NO = Field(
    "account_no", "string", f"{fields.ACCOUNT_DIGITS} digits", pattern=fields.ACCOUNT_PATTERN,
    max_length=fields.ACCOUNT_DIGITS,
)
PIN = Field(
    "pin", "string", f"1-{fields.PIN_ENTRY_MAX} digits", pattern=fields.PIN_ENTRY_PATTERN,
    max_length=fields.PIN_ENTRY_MAX,
)
CALLER = Field(
    "caller", "string", f"the caller's number: up to {fields.CALLER_MAX} digits, '+', '*' or '#'",
    pattern=fields.CALLER_PATTERN, max_length=fields.CALLER_MAX,
)

REQUESTS: dict[str, tuple[Field, ...]] = {
    "account": (CALL_ID, ACCOUNT_NO),
    "quote": (CALL_ID, SEQ, ACCOUNT_NO, PIN, CALLER),
    "commit": (CALL_ID, SEQ),
    "cancel": (CALL_ID, SEQ),
}


def _shown(name: object) -> str:
    """A field name from a stranger, safe to put in a one-line message."""
    text = name if isinstance(name, str) else str(name)
    return repr(text[:40])


def validate_request(endpoint: str, payload: Any) -> dict[str, Any]:
    """The request's fields if ``payload`` has exactly the endpoint's fields, each well formed.

    Raises ``InvalidRequest`` (one line, never quoting a value) for anything else:
    not an object, an unknown field, a missing field, a wrong type or limit.
    """
    fields = REQUESTS[endpoint]
    if not isinstance(payload, dict):
        raise InvalidRequest("the body must be a JSON object")
    known = {f.name for f in fields}
    unknown = sorted((k for k in payload if k not in known), key=str)
    if unknown:
        raise InvalidRequest(f"unknown field {_shown(unknown[0])} for {endpoint}")
    for f in fields:
        if f.name not in payload:
            raise InvalidRequest(f"missing field {f.name!r} for {endpoint}")
        problem = f.problem(payload[f.name])
        if problem is not None:
            raise InvalidRequest(problem)
    return {f.name: payload[f.name] for f in fields}
