"""The FastAGI service: one long-lived process beside Asterisk runs the dialog for every call, a thread per call.

Process AGI (``ivr.agi_main``) starts a Python interpreter per call, about
45 ms of CPU before the first prompt; a rush of calls on two cores queues
behind those starts.  This service starts once and serves
``AGI(agi://127.0.0.1:4573/recharge)``::

    python3 -m ivr.fastagi --config /etc/recharge/agi.conf --listen 127.0.0.1:4573 --supervise

It reads the same configuration as the process AGI (``ivr.agi_main``) once,
at its start (a bad one is one line on stderr and exit status 2), and runs
the same code for a call: ``ivr.agi_main.serve`` over pyst2's ``AGI``, the
dialog (``ivr.dialog``) and the failover client (``ivr.client``).  Only the
transport differs: the AGI session is a TCP connection instead of
stdin/stdout.

- *A thread per call.*  The dialog and the client block (a prompt, a
  request with failover); each call has its own thread, so a call waiting for
  a slow server or a long prompt never delays another call's prompt.  At most
  ``--max-calls`` calls at once; a connection beyond that is closed at once,
  and the dialplan then runs the call by process AGI.
- *Bounded.*  The AGI request header (``agi_*: ...`` lines, then a blank
  line) must arrive within ``--header-timeout`` seconds (5) and look like
  one; each answer within ``--answer-timeout`` seconds (180: the longest
  prompt with key entry); no line longer than 8 KiB.  A connection that sends
  anything else or stalls is closed (the call's dialog ends as on a hangup,
  releasing a held card) and the service goes on serving the others.
- *Marked.*  The first command of a call sets the channel variable
  ``RECHARGE_DIALOG=fastagi``: when ``AGI()`` returns on a live channel, the
  dialplan knows whether the service took the call (it says
  service-unavailable and goodbye) or never did (it runs process AGI).
- *Supervised.*  ``--supervise`` runs the service as a child and starts it
  again when it dies (after 1 s, backing off to 30 s while it keeps dying at
  once; a host with systemd runs the supervisor itself with
  ``Restart=always``, ``asterisk_conf/README.md``).  A service that is alive
  but frozen (a stopped process, a deadlock) would take Asterisk's
  connections into its listen queue and leave those callers in silence, so
  the supervisor also asks it every ``--probe-every`` seconds (2) for the
  script ``health``, which the service answers with one ``NOOP`` and a close
  (a full service's close at once is an answer too).  After
  ``PROBE_FAILURES`` probes in a row without an answer within
  ``--probe-every`` seconds it kills the service, which ends its calls as a
  death does (the dialplan says service-unavailable on the calls it had, and
  runs process AGI for the ones it never answered), and starts it again.

Runs under the Asterisk host's Python (3.11 to 3.14) like the process AGI:
standard library, pyst2 and ``ivr`` only.  Logging as ``ivr.agi_main``
(syslog and stderr); the PIN is never logged.
"""

# test-case-name: tests.ivr.test_fastagi

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from asterisk.agi import AGI

from ivr.agi_main import DEFAULT_CONFIG, ConfigError, Prepared, prepare, serve, setup_logging

log = logging.getLogger("ivr.fastagi")

DEFAULT_LISTEN = "127.0.0.1:4573"  # 4573 is FastAGI's registered port
HEADER_TIMEOUT = 5.0
ANSWER_TIMEOUT = 180.0
MAX_LINE = 8192
MAX_HEADER_LINES = 100
MAX_CALLS = 400
BACKLOG = 512  # a rush of calls connects within one second
DIALOG_MARK = ("RECHARGE_DIALOG", "fastagi")
HEALTH_SCRIPT = "health"  # agi://HOST:PORT/health: the supervisor's probe, answered with one NOOP
PROBE_EVERY = 2.0
PROBE_FAILURES = 3

_HEADER_LINE = re.compile(r"^agi_[a-z0-9_]{1,40}: ?[^\x00]*$")


class _Dropped(Exception):
    """The connection sent something that is not AGI, or stalled past its bound."""


class SocketStream:
    """The AGI session's two directions over one socket, as pyst2 reads and writes them; every read is bounded.

    ``readline`` returns ``""`` (which pyst2 takes as "Asterisk is gone")
    once the peer has closed, stalled past the timeout or sent an overlong
    line; the connection is then dead for good.
    """

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.timeout = timeout
        self.dead = False
        self._buffer = b""

    def readline(self, deadline: float | None = None) -> str:
        if self.dead:
            return ""
        end = time.monotonic() + self.timeout if deadline is None else deadline
        while b"\n" not in self._buffer:
            left = end - time.monotonic()
            if left <= 0 or len(self._buffer) > MAX_LINE:
                return self._die()
            try:
                self.sock.settimeout(left)
                chunk = self.sock.recv(4096)
            except OSError:  # socket.timeout is one
                return self._die()
            if not chunk:
                return self._die()
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        if len(line) > MAX_LINE:
            return self._die()
        return line.decode("utf-8", errors="replace") + "\n"

    def write(self, text: str) -> int:
        if self.dead:
            raise BrokenPipeError(32, "the AGI connection is closed")
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(text.encode("utf-8"))
        except OSError:
            self.dead = True
            raise BrokenPipeError(32, "the AGI connection is closed") from None
        return len(text)

    def flush(self) -> None:
        pass

    def _die(self) -> str:
        self.dead = True
        return ""


class _Sink:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


class SocketAGI(AGI):
    """pyst2's ``AGI`` over a FastAGI connection whose request header is already read.

    pyst2's constructor reads the header itself and installs a SIGHUP handler,
    which only the main thread may do; a FastAGI call learns of a hangup from
    the connection instead (``HANGUP`` or a closed socket).
    """

    def __init__(self, stream: SocketStream, env: dict[str, str]) -> None:  # noqa: D107 - pyst2's is not called
        self.stdin = self.stdout = stream
        self.stderr = _Sink()  # pyst2 echoes every command and answer, the caller's keys included
        self._got_sighup = False
        self.env = env


def read_header(stream: SocketStream, timeout: float) -> dict[str, str]:
    """The ``agi_*`` variables Asterisk sends first; ``_Dropped`` if they are not that or do not end in ``timeout`` s."""
    deadline = time.monotonic() + timeout
    env: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES + 1):
        line = stream.readline(deadline)
        if not line:  # closed, stalled past the deadline, or a line too long
            raise _Dropped("closed or stalled in the request header" if env else "no request header")
        line = line.rstrip("\r\n")
        if line == "":
            if "agi_request" not in env:
                raise _Dropped("a request header without agi_request")
            return env
        if not _HEADER_LINE.match(line):
            raise _Dropped("not an AGI request header")
        key, _, value = line.partition(":")
        env[key] = value.strip()
    raise _Dropped("a request header of too many lines")


class FastAGIServer:
    """Accepts FastAGI connections on ``listen`` and runs ``ivr.agi_main.serve`` for each in a thread of its own."""

    def __init__(self, setup: Prepared, host: str, port: int, *, max_calls: int = MAX_CALLS,
                 header_timeout: float = HEADER_TIMEOUT, answer_timeout: float = ANSWER_TIMEOUT) -> None:
        self.setup = setup
        self.max_calls = max_calls
        self.header_timeout = header_timeout
        self.answer_timeout = answer_timeout
        self.sock = socket.create_server((host, port), backlog=BACKLOG, reuse_port=False)
        self.address = self.sock.getsockname()[:2]
        self._active = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.served = 0
        self.dropped = 0
        self.refused = 0

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    def serve_forever(self) -> None:
        """Accept until ``shutdown``."""
        self.sock.settimeout(0.5)
        while not self._stopping.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    break
                time.sleep(0.05)  # out of file descriptors, for a moment
                continue
            with self._lock:
                full = self._active >= self.max_calls
                if not full:
                    self._active += 1
            if full:
                with self._lock:
                    self.refused += 1
                log.warning("%d calls already; a connection from %s:%d is refused (process AGI takes it)",
                            self.max_calls, *peer[:2])
                conn.close()
                continue
            threading.Thread(target=self._handle, args=(conn, peer), name=f"call-{peer[1]}", daemon=True).start()

    def shutdown(self) -> None:
        self._stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass

    def _handle(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream = SocketStream(conn, self.answer_timeout)
            try:
                env = read_header(stream, self.header_timeout)
            except _Dropped as e:
                with self._lock:
                    self.dropped += 1
                log.warning("a connection from %s:%d is dropped: %s", peer[0], peer[1], e)
                return
            if env.get("agi_network_script") == HEALTH_SCRIPT:
                stream.write("NOOP healthy\n")
                return
            agi = SocketAGI(stream, env)
            try:
                agi.set_variable(*DIALOG_MARK)
            except Exception:
                log.info("call %s: gone before the dialog began", env.get("agi_uniqueid", "?"))
                return
            serve(agi, self.setup)
            with self._lock:
                self.served += 1
        except Exception as e:  # serve() handles the call's own failures; this is the connection's
            log.error("a connection from %s:%d failed: %s", peer[0], peer[1], type(e).__name__)
        finally:
            try:
                conn.close()
            except OSError:
                pass
            with self._lock:
                self._active -= 1


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN})")
    return host.strip("[]"), int(port)


def _positive(kind: type) -> object:
    def check(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
        return value

    return check


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m ivr.fastagi",
        description="Serve the recharge hotline's dialog to Asterisk over FastAGI (AGI(agi://HOST:PORT/recharge)).",
        epilog=f"Example: python3 -m ivr.fastagi --config {DEFAULT_CONFIG} --listen {DEFAULT_LISTEN} --supervise",
    )
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"the AGI configuration (default {DEFAULT_CONFIG})")
    p.add_argument("--listen", type=parse_listen, default=parse_listen(DEFAULT_LISTEN), metavar="HOST:PORT",
                   help=f"where Asterisk connects (default {DEFAULT_LISTEN}; keep it on the loopback)")
    p.add_argument("--max-calls", type=_positive(int), default=MAX_CALLS,
                   help=f"calls at once; more are refused and run by process AGI (default {MAX_CALLS})")
    p.add_argument("--header-timeout", type=_positive(float), default=HEADER_TIMEOUT, metavar="SECONDS",
                   help=f"for a connection's request header (default {HEADER_TIMEOUT:g})")
    p.add_argument("--answer-timeout", type=_positive(float), default=ANSWER_TIMEOUT, metavar="SECONDS",
                   help=f"for each answer of Asterisk's within a call (default {ANSWER_TIMEOUT:g})")
    p.add_argument("--supervise", action="store_true",
                   help="run the service as a child process and start it again whenever it dies or stops answering")
    p.add_argument("--probe-every", type=_positive(float), default=PROBE_EVERY, metavar="SECONDS",
                   help=f"with --supervise: how often the service is asked whether it answers (default {PROBE_EVERY:g})")
    return p


def supervise(argv: Sequence[str], listen: tuple[str, int], probe_every: float = PROBE_EVERY) -> int:
    """Run ``python3 -m ivr.fastagi ARGV`` (without ``--supervise``) again and again until SIGTERM or SIGINT.

    The service listening on ``listen`` is probed every ``probe_every``
    seconds once it has answered a first probe; see the module docstring.
    """
    child: list[subprocess.Popen[bytes]] = []
    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        stopping.set()
        if child and child[0].poll() is None:
            child[0].send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    delay = 1.0
    while not stopping.is_set():
        started = time.monotonic()
        child[:] = [subprocess.Popen([sys.executable, "-m", "ivr.fastagi", *argv])]
        status = _watch(child[0], listen, probe_every, stopping)
        if stopping.is_set():
            break
        delay = 1.0 if time.monotonic() - started > 30 else min(delay * 2, 30.0)
        log.error("the FastAGI service ended with status %s; starting it again in %.0f s", status, delay)
        stopping.wait(delay)
    return 0


def _watch(proc: subprocess.Popen[bytes], listen: tuple[str, int], every: float, stopping: threading.Event) -> int:
    """Wait for ``proc`` to end, killing it after ``PROBE_FAILURES`` unanswered probes in a row; its exit status."""
    answered_once = False
    failures = 0
    while True:
        try:
            return proc.wait(every)
        except subprocess.TimeoutExpired:
            pass
        if stopping.is_set():
            continue  # SIGTERM is on its way to the service
        if probe(listen, every):
            answered_once, failures = True, 0
            continue
        if not answered_once:
            continue  # still starting (the configuration, the listening socket)
        failures += 1
        if failures >= PROBE_FAILURES:
            log.error("the FastAGI service (pid %d) did not answer %d probes in %.0f s; killing it",
                      proc.pid, failures, failures * every)
            proc.kill()


def probe(listen: tuple[str, int], timeout: float) -> bool:
    """Whether the service on ``listen`` answers a ``health`` request (a line or a close) within ``timeout`` s."""
    host, port = listen
    header = f"agi_network: yes\nagi_network_script: {HEALTH_SCRIPT}\nagi_request: agi://{host}:{port}/{HEALTH_SCRIPT}\n\n"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:  # nobody listening, or not accepted in time
        return False
    with sock:
        try:
            sock.settimeout(timeout)
            sock.sendall(header.encode("ascii"))
            sock.recv(64)  # "NOOP healthy", or b"" when a full service closed it at once
        except (ConnectionResetError, BrokenPipeError):
            pass  # a full service closed it at once, with the header unread: a reset, and an answer
        except OSError:  # no answer in time (socket.timeout is one)
            return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m ivr.fastagi [--config PATH] [--listen HOST:PORT] [--supervise]``; see the module docstring."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(args_list)
    setup_logging()
    if args.supervise:
        return supervise([a for a in args_list if a != "--supervise"], args.listen, args.probe_every)
    try:
        setup = prepare(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    host, port = args.listen
    try:
        server = FastAGIServer(setup, host, port, max_calls=args.max_calls, header_timeout=args.header_timeout,
                               answer_timeout=args.answer_timeout)
    except OSError as e:
        print(f"error: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 2

    def stop(signum: int, _frame: object) -> None:
        server.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("FastAGI service on %s:%d (pid %d, at most %d calls)", host, server.address[1], os.getpid(), args.max_calls)
    server.serve_forever()
    log.info("FastAGI service stopped (%d calls served, %d connections dropped)", server.served, server.dropped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
