"""The AGI side's client for the recharge server pair: TLS, signed requests, failover, kept-alive connections, and never an exception.

Every connection is TLS, verified against the installation's own CA
(``tls_context(ca_file)``) and checked against the host name or address it
was opened to; a server whose certificate does not verify counts as failed,
like one that does not answer.  Every request is signed with the channel
client's own key and names the client (``ivr.protocol``).

``RechargeClient`` talks to the servers in order of preference, starting with
the one that answered last (the primary, at first).  A refused connection, a
timeout, a broken or 5xx answer moves the *same* request, signed again with a
new nonce, to the next server: the request names its recharge by call id and
sequence number, so the servers answer a repeat with the first answer and
nothing is spent twice.  The whole round, every server included, is bounded
by ``total_timeout`` (one second by default), which a caller does not notice.
When no server answers, the dialog gets ``{"outcome": "service_unavailable"}``.

A server that is overloaded refuses at once with 503 ``busy`` (and
``Retry-After``): nothing was done, and its connection stays open.  A new
connection closed by the server before its TLS handshake finished is the
same answer (a busy server sheds handshakes that way).  The
client moves on to the next server, and leaves the busy one alone for a
random pause (from ``BACKOFF`` seconds, doubled at each refusal in a row up
to ``MAX_BACKOFF``; across requests of the same client).  When every server is resting, the round waits for the first
to be asked again if its deadline allows, and otherwise ends at once with
``{"outcome": "service_unavailable", "error": "busy"}``: a fast refusal,
not a wait to the deadline, and no request that would only add to a busy
server's load.

The client keeps one HTTP/1.1 connection to each server open between
requests (a call makes three or more), and ``close()`` (or leaving a ``with``
block) closes them when the call ends.  A connection is dropped after any
failure and after an answer that does not keep it alive.  A server may close
an idle connection at any time (its idle timeout, a restart): when a kept
connection turns out closed before any answer came back, the request, signed
again, is sent once more on a new connection to the same server, within that
server's time, before the server counts as failed.  A connection serves one
request at a time, so threads may share a client.

HTTP is spoken here directly over a socket rather than through
``http.client``, whose import (``email`` and more) costs more than everything
else a call needs before its first prompt; ``ssl`` itself cannot be avoided
(bench/RESULTS.md has what it costs).  Only what the recharge servers
send is understood: ``Content-Length`` or chunked bodies, or a body up to the
close; anything else is a broken answer.

This module runs inside Asterisk's AGI process under the host's own Python
(3.11 to 3.14): standard library only.  Log lines carry the call id and
never a PIN (request bodies are never logged).
"""

# test-case-name: tests.ivr.test_client

import json
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

log = logging.getLogger("ivr.client")

# What the dialog gets when no server could answer (``protocol.SERVICE_UNAVAILABLE``;
# ``ivr.protocol`` is imported at the first request, not with this module: a test keeps them equal).
SERVICE_UNAVAILABLE = "service_unavailable"

MAX_RESPONSE = 65536  # bytes of body; an answer is a few hundred
MAX_LINE = 8192  # bytes in the status line, a header line or a chunk-size line
MAX_HEADERS = 100
_RECV = 65536
_HEX = frozenset(b"0123456789abcdefABCDEF")
BUSY = "busy"  # a server's refusal under load: nothing done, try elsewhere or later (recharge_server.api)
BACKOFF = 0.025  # seconds: how long a server that said busy is left alone at first; doubled, randomised
# The longest such pause: short enough that a round of one second still tries each server a few times
# (the servers' Retry-After, whole seconds, is for clients with no deadline of their own).
MAX_BACKOFF = 0.2


def tls_context(ca_file: str) -> ssl.SSLContext:
    """A client TLS context that trusts only the installation's CA (``keys/tls-ca.pem``) and checks host names."""
    context = ssl.create_default_context(cafile=ca_file)  # with a cafile, the system's CAs are not loaded
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _TryNext(Exception):
    """This server did not give a usable answer; the reason is the message."""


class _Busy(_TryNext):
    """The server refused the request unseen because it is overloaded (503 ``busy``)."""


class _Closed(Exception):
    """The server closed the connection (or reset it) before sending any of the answer."""


class RechargeClient:
    """Signed JSON requests to the recharge servers, with failover; see the module docstring."""

    def __init__(
        self,
        servers: Sequence[tuple[str, int]],
        api_key: bytes,
        timeout: float = 0.5,
        clock: Callable[[], float] = time.time,
        total_timeout: float = 1.0,
        *,
        tls: ssl.SSLContext,
        client: str = "hotline",
        backoff: float | None = BACKOFF,
    ) -> None:
        """``servers`` in order of preference; ``timeout`` per server, ``total_timeout`` for a whole round.

        ``api_key`` is channel client ``client``'s signing key; ``tls`` a context
        from ``tls_context`` that trusts the installation's CA.

        ``clock`` gives the wall-clock time that requests are signed with;
        the time limits are measured on the monotonic clock.  ``backoff`` is
        the first pause after a busy refusal (``None``: no second try; the
        round ends with the busy answer).
        """
        self._idle: dict[int, _Connection] = {}  # server index -> its open connection, while no request uses it
        if not servers:
            raise ValueError("RechargeClient needs at least one server")
        self.servers = [(str(h), int(p)) for h, p in servers]
        self._key = api_key
        self.client = client
        self.tls = tls
        self.timeout = timeout
        self.total_timeout = total_timeout
        self.clock = clock
        self.current = 0  # index of the server that answered last
        self.backoff = backoff
        self._rest: dict[int, tuple[float, float]] = {}  # server index -> (not asked before, last pause) after "busy"

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

    # --- connections ---------------------------------------------------------------

    def close(self) -> None:
        """Close the connections kept open; a later request opens new ones.  Never raises."""
        while self._idle:
            try:
                _, conn = self._idle.popitem()
            except KeyError:  # another thread took the last one
                break
            conn.close()

    def __enter__(self) -> "RechargeClient":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A client dropped without close() (a one-off command, a test) must not leave sockets to the collector.
        if getattr(self, "_idle", None):
            self.close()

    # --- failover ------------------------------------------------------------------

    def _post(self, endpoint: str, call_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        return self._round(endpoint, call_id, "POST", f"/v1/{endpoint}", body)

    def _order(self) -> list[int]:
        n = len(self.servers)
        return [(self.current + i) % n for i in range(n)]

    def _round(self, endpoint: str, call_id: str, method: str, path: str, body: bytes) -> dict[str, Any]:
        deadline = time.monotonic() + self.total_timeout
        while True:
            answer, busy = self._pass(endpoint, call_id, method, path, body, deadline)
            if answer is not None:
                return answer
            if not busy:
                break
            # No answer, and a server is resting after a busy refusal: wait for the first one to be asked
            # again, if the round leaves time for it; else the caller hears "busy" now, not at the deadline.
            wake = min(self._rest[i][0] for i in self._rest) if self._rest and self.backoff is not None else None
            if wake is None or wake + min(self.timeout, 0.05) > deadline:
                log.warning("call %s: %s: the recharge servers are busy", call_id, endpoint)
                return {"outcome": SERVICE_UNAVAILABLE, "error": BUSY}
            time.sleep(max(0.0, wake - time.monotonic()))
        log.error("call %s: %s: no recharge server answered", call_id, endpoint)
        return {"outcome": SERVICE_UNAVAILABLE}

    def _resting(self, index: int) -> bool:
        rest = self._rest.get(index)
        return rest is not None and rest[0] > time.monotonic()

    def _refused(self, index: int) -> None:
        """Server ``index`` said busy: not asked again for a random pause, doubled at each refusal in a row."""
        if self.backoff is None:
            return
        import random  # only under load: an AGI's start-up imports nothing it may not need

        last = self._rest.get(index)
        pause = min(MAX_BACKOFF, last[1] * 2) if last is not None else self.backoff
        self._rest[index] = (time.monotonic() + pause * random.uniform(0.5, 1.5), pause)

    def _pass(
        self, endpoint: str, call_id: str, method: str, path: str, body: bytes, deadline: float
    ) -> tuple[dict[str, Any] | None, bool]:
        """Each server once, in order: (the answer, False), or (None, whether any server said busy)."""
        busy = 0
        for index in self._order():
            host, port = self.servers[index]
            if self._resting(index):
                busy += 1  # it said busy a moment ago: asking again now would only add to its load
                continue
            budget = min(self.timeout, deadline - time.monotonic())
            if budget <= 0.001:
                log.warning("call %s: %s: no time left to try %s:%d", call_id, endpoint, host, port)
                break
            try:
                status, answer = self._exchange(index, call_id, method, path, body, time.monotonic() + budget)
            except _Busy:
                busy += 1
                self._refused(index)
                log.info("call %s: %s: %s:%d is busy; trying the next server", call_id, endpoint, host, port)
                continue
            except _TryNext as e:
                log.warning("call %s: %s via %s:%d failed (%s); trying the next server", call_id, endpoint, host, port, e)
                continue
            except Exception as e:
                # A fault of this client's own must not reach the dialog: the server counts as failed.
                log.error(
                    "call %s: %s via %s:%d failed unexpectedly (%s); trying the next server",
                    call_id, endpoint, host, port, type(e).__name__,
                )
                continue
            self._rest.pop(index, None)
            if index != self.current:
                log.warning("call %s: now using %s:%d", call_id, host, port)
                self.current = index
            if status == 200:
                log.info("call %s: %s -> %s (%s:%d)", call_id, endpoint, answer.get("outcome", "-"), host, port)
                return answer, False
            # A 4xx: this request is wrong, and would be wrong on the other server too.
            log.error(
                "call %s: %s refused by %s:%d: HTTP %d %s: %s", call_id, endpoint, host, port, status,
                answer.get("error", "-"), answer.get("message", "-"),
            )
            return {"outcome": SERVICE_UNAVAILABLE, "error": answer.get("error", f"http_{status}")}, False
        return None, busy > 0

    def _exchange(
        self, index: int, call_id: str, method: str, path: str, body: bytes, end: float
    ) -> tuple[int, dict[str, Any]]:
        """One request to one server by monotonic time ``end``: (status, decoded object), or ``_TryNext``."""
        host, port = self.servers[index]
        conn = self._idle.pop(index, None)
        try:
            if conn is not None and conn.still_open():
                try:
                    return self._attempt(index, conn, method, path, body, end)
                except _Closed as e:
                    # Closed as the request went out (the server's idle timeout, a restart).  Every
                    # request is idempotent on call id and sequence number: send it again, signed again.
                    log.debug("call %s: the kept connection to %s:%d was lost (%s); opening a new one", call_id, host, port, e)
            elif conn is not None:
                conn.close()
                log.debug("call %s: the kept connection to %s:%d was closed while idle; opening a new one", call_id, host, port)
            try:
                fresh = _Connection.open(host, port, end, self.tls)
            except (ConnectionResetError, ConnectionAbortedError, ssl.SSLEOFError, ssl.SSLZeroReturnError) as e:
                # Accepted and closed before the handshake finished: a busy server sheds new connections
                # this way (recharge_server.tls), so it is a busy answer, not a dead server.
                raise _Busy(f"closed the connection during the handshake ({type(e).__name__})") from None
            return self._attempt(index, fresh, method, path, body, end)
        except _Closed as e:
            raise _TryNext(f"closed the connection without answering ({e})") from None
        except TimeoutError:
            raise _TryNext("timed out") from None
        except ssl.SSLCertVerificationError as e:
            raise _TryNext(f"its TLS certificate is not trusted: {e.verify_message}") from None
        except OSError as e:
            raise _TryNext(type(e).__name__ + (f": {e.strerror}" if e.strerror else "")) from None

    def _attempt(
        self, index: int, conn: "_Connection", method: str, path: str, body: bytes, end: float
    ) -> tuple[int, dict[str, Any]]:
        """The request on ``conn``, signed now; afterwards the connection is kept for the next request or closed."""
        host, port = self.servers[index]
        try:
            status, raw, keep = conn.exchange(self._request(host, port, method, path, body), end)
            answer = _decode(status, raw, path)
        except _Busy:
            # A whole, deliberate refusal: the connection is sound, and coming back on it spares
            # the busy server a new TLS handshake.
            self._keep(index, conn, keep)
            raise
        except TimeoutError:
            if conn.owed:
                self._keep(index, conn, True)  # its late answer is read before the next request
            else:
                conn.close()
            raise
        except BaseException:
            conn.close()
            raise
        self._keep(index, conn, keep)
        return status, answer

    def _keep(self, index: int, conn: "_Connection", keep: bool) -> None:
        """Keep ``conn`` for the next request to this server, unless it may not serve one or one is kept already."""
        if not keep or self._idle.setdefault(index, conn) is not conn:
            conn.close()

    def _request(self, host: str, port: int, method: str, path: str, body: bytes) -> bytes:
        """The request's bytes, signed now with a fresh nonce (every attempt is signed again)."""
        from ivr import protocol  # the signing code is needed from the first request on, not at start-up

        host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host_header}", "Accept: application/json", "Accept-Encoding: identity"]
        if method == "POST":
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
            lines += [f"{k}: {v}" for k, v in protocol.sign(self._key, method, path, body, self.clock(), client=self.client).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (body if method == "POST" else b"")


def _decode(status: int, raw: bytes, path: str) -> dict[str, Any]:
    """The answer's JSON object, or ``_TryNext`` for a 5xx or an answer that is not one."""
    if status == 503 and _error_of(raw) == BUSY:
        raise _Busy("busy")
    if status >= 500:
        raise _TryNext(f"HTTP {status}")
    try:
        answer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _TryNext(f"HTTP {status} with a body that is not JSON") from None
    if not isinstance(answer, dict) or (status == 200 and path != "/v1/health" and not isinstance(answer.get("outcome"), str)):
        raise _TryNext(f"HTTP {status} with an answer of the wrong shape")
    return answer


def _error_of(raw: bytes) -> object:
    """The ``error`` field of a JSON object answer, or ``None``."""
    try:
        answer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return answer.get("error") if isinstance(answer, dict) else None


class _Connection:
    """One HTTP/1.1 connection to one server, for one request at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def open(cls, host: str, port: int, end: float, tls: ssl.SSLContext) -> "_Connection":
        sock = socket.create_connection((host, port), timeout=_left(end))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(_left(end))
            # The handshake runs here, within this server's time; the name checked is the one dialled.
            return cls(tls.wrap_socket(sock, server_hostname=host))
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def still_open(self) -> bool:
        """False when the server has closed or reset this idle connection, or sent something unasked."""
        if self.owed:
            return True  # bytes waiting are the late answer; a close shows when it is read (``settle``)
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return False  # decrypted bytes nobody asked for
        try:
            self.sock.settimeout(0)  # a look, not a wait
            # Under TLS, a look at the raw stream: anything there while idle is a close_notify or junk.
            socket.socket.recv(self.sock, 1, socket.MSG_PEEK)
        except BlockingIOError:
            return True  # nothing to read: the connection is open and quiet
        except OSError:
            return False
        return False  # the end of the stream, or bytes no request asked for

    def exchange(self, request: bytes, end: float) -> tuple[int, bytes, bool]:
        """Send ``request`` and read its answer by ``end``: (status, body, whether this connection may serve another).

        Raises ``_Closed`` when the server closed or reset the connection
        before sending a byte of the answer, ``TimeoutError``, ``OSError``
        and ``_TryNext`` (an answer that is not HTTP as the servers speak it).
        The caller closes the connection after any of them, except a time-out
        that came before a byte of the answer (``owed``; see ``settle``).
        """
        self.settle(end)
        try:
            self.sock.settimeout(_left(end))
            self.sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, ssl.SSLEOFError, ssl.SSLZeroReturnError) as e:
            raise _Closed(type(e).__name__) from None
        reader = _Reader(self.sock, end)
        try:
            return _answer(reader)
        except TimeoutError:
            if not reader.received:
                self.owed = True  # the answer will come later, whole: keep the connection, read it then
            raise

    owed = False  # a request went out whose answer was not waited for

    def settle(self, end: float) -> None:
        """Read and drop the answer still owed on this connection, if any, by ``end``.

        A request given up after its time (the server was slow, not gone)
        leaves its answer to come later; reading it before the next request
        keeps the connection, where closing it would cost the next request a
        TLS handshake on both sides, the dearest thing an overloaded server
        does.  The late answer's request was repeated elsewhere (the same
        call id and sequence number: the servers answer a repeat alike).
        """
        if not self.owed:
            return
        reader = _Reader(self.sock, end)
        try:
            _status, _body, keep = _answer(reader)
        except TimeoutError:
            self.owed = False  # two time-outs in a row: hung, not slow; the caller closes it
            raise
        if not keep:
            raise _Closed("the late answer closed the connection")
        self.owed = False


def _answer(reader: "_Reader") -> tuple[int, bytes, bool]:
    """One answer from ``reader``: (status, body, whether its connection may serve another)."""
    while True:
        version, status = _status_line(reader.line())
        headers = _headers(reader)
        if not 100 <= status < 200:
            break
        # An interim answer (100 Continue): the real one follows.
    te = headers.get("transfer-encoding")
    length = headers.get("content-length")
    framed = True
    if status in (204, 304):
        body = b""
    elif te is not None:
        if te.lower() != "chunked":
            raise _TryNext(f"transfer coding {te[:20]!r} not understood")
        body = _chunked(reader)
    elif length is not None:
        body = reader.exact(_content_length(length))
    else:
        body, framed = reader.rest(), False
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
    # Bytes after the answer were never asked for: that connection is not to be trusted again.
    return status, body, framed and alive and not reader.buffer


class _Reader:
    """The answer's bytes from a socket, each wait narrowed to the time left before ``end``."""

    def __init__(self, sock: socket.socket, end: float) -> None:
        self.sock = sock
        self.end = end
        self.buffer = bytearray()
        self.received = 0

    def _fill(self, eof_ends: bool = False) -> bool:
        """Read more; False at the end of the stream when ``eof_ends``."""
        # A socket timeout limits each wait, not the sum: narrow it to what is left before each one.
        self.sock.settimeout(_left(self.end))
        try:
            chunk = self.sock.recv(_RECV)
        except (ConnectionResetError, ConnectionAbortedError, ssl.SSLEOFError, ssl.SSLZeroReturnError) as e:
            if not self.received:
                raise _Closed(type(e).__name__) from None
            raise
        if not chunk:
            if not self.received:
                raise _Closed("end of stream")
            if eof_ends:
                return False
            raise _TryNext("the connection was closed in the middle of the answer")
        self.received += len(chunk)
        self.buffer += chunk
        return True

    def line(self) -> bytes:
        """The next line, without its CRLF (or LF)."""
        while True:
            i = self.buffer.find(b"\n")
            if i >= 0:
                if i > MAX_LINE:
                    break
                line = bytes(self.buffer[:i])
                del self.buffer[: i + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self.buffer) > MAX_LINE:
                break
            self._fill()
        raise _TryNext("a line of the answer is too long")

    def exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def rest(self) -> bytes:
        """Everything up to the end of the stream."""
        while len(self.buffer) <= MAX_RESPONSE and self._fill(eof_ends=True):
            pass
        if len(self.buffer) > MAX_RESPONSE:
            raise _TryNext("answer too large")
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def _status_line(line: bytes) -> tuple[str, int]:
    parts = line.split(None, 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise _TryNext("an answer that is not HTTP/1.x")
    return parts[0].decode("ascii"), int(parts[1])


def _headers(reader: _Reader) -> dict[str, str]:
    """The header fields, names in lower case; repeated fields joined with commas."""
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = reader.line()
        if not line:
            return headers
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            raise _TryNext("a malformed header line in the answer")
        key = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    raise _TryNext("too many header lines in the answer")


def _content_length(text: str) -> int:
    values = {v.strip() for v in text.split(",")}
    if len(values) != 1:
        raise _TryNext("conflicting Content-Length headers")
    value = values.pop()
    if not value.isdigit() or not value.isascii():
        raise _TryNext("a malformed Content-Length")
    if int(value) > MAX_RESPONSE:
        raise _TryNext("answer too large")
    return int(value)


def _chunked(reader: _Reader) -> bytes:
    body = bytearray()
    while True:
        size = reader.line().split(b";", 1)[0].strip()
        if not size or len(size) > 8 or not _HEX.issuperset(size):
            raise _TryNext("a malformed chunk size")
        n = int(size, 16)
        if n == 0:
            break
        if len(body) + n > MAX_RESPONSE:
            raise _TryNext("answer too large")
        body += reader.exact(n)
        if reader.line():
            raise _TryNext("a chunk longer than its size")
    for _ in range(MAX_HEADERS + 1):  # trailer fields, unused
        if not reader.line():
            return bytes(body)
    raise _TryNext("too many trailer lines in the answer")


def _left(end: float) -> float:
    left = end - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left
