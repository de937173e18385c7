"""The SIP dispatcher in front of the Asterisk front ends: Kamailio on this machine, for tests, the demo and a laptop.

``Dispatcher`` renders ``kamailio_conf/kamailio.cfg`` with its address and
the front ends' SIP addresses, runs Debian's ``kamailio`` in the foreground
as a child process (its log in ``WORKDIR/kamailio.log``), and reads the
dispatcher's view of the front ends over its control socket (``kamcmd
dispatcher.list``): which are live, which are probed as down.

It listens on ``DISPATCHER_ADDR`` (127.0.0.2, a loopback address of its
own), so the Asterisks tell calls that came through it from a tester
calling them directly (``asterisk_conf/pjsip.conf``: the ``dispatcher``
endpoint, identified by that address, keeps the caller's Contact as sent).

    with Dispatcher(workdir, [("127.0.0.1", 5160), ("127.0.0.1", 5162)]) as d:
        d.wait_live(2)
        ...  # SIPp calls 127.0.0.2:<d.port>
"""

# test-case-name: tests.testkit.test_dispatcher

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from testkit.ports import free_udp_port
from testkit.sandbox import DISPATCHER_ADDR, SandboxError, render_config

CONFIG = Path(__file__).resolve().parents[1] / "kamailio_conf" / "kamailio.cfg"
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"
DEFAULT_PORT = 5170  # the command line's (testkit.frontends); tests take a free port
PING_S = 1  # OPTIONS probe interval
FR_TIMER_MS = 1000  # a front end that does not answer an INVITE within this is marked down and the next one tried


class DispatcherError(SandboxError):
    """Kamailio could not be started, or its front ends are not as asked; the message says why in one line."""


def _modules_dir() -> str:
    for candidate in (MODULES, *sorted(str(p) for p in Path("/usr/lib").glob("*/kamailio/modules"))):
        if Path(candidate, "dispatcher.so").is_file():
            return candidate
    raise DispatcherError("Kamailio's modules are not installed (Debian package kamailio; `make system-deps`)")


def _last_error(log: Path) -> str:
    """The last ERROR or CRITICAL line of Kamailio's log, shortened to what it says."""
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
             if "ERROR" in line or "CRITICAL" in line]
    return re.sub(r"^.*?\]:\s*", "", lines[-1]).strip()[:200] if lines else "no error logged"


class Dispatcher:
    """One Kamailio dispatching new calls to ``front_ends`` (``(host, port)`` of each Asterisk's SIP transport)."""

    def __init__(self, workdir: Path, front_ends: Sequence[tuple[str, int]], port: int | None = None,
                 address: str = DISPATCHER_ADDR) -> None:
        if not front_ends:
            raise DispatcherError("a dispatcher needs at least one Asterisk front end")
        self.workdir = Path(workdir)
        self.front_ends = list(front_ends)
        self.address = address
        self.port = port or free_udp_port()
        self.ctl = self.workdir / "kamailio.ctl"
        self.log = self.workdir / "kamailio.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def uris(self) -> list[str]:
        return [f"sip:{host}:{port}" for host, port in self.front_ends]

    def render(self) -> Path:
        """Write ``kamailio.cfg`` and the dispatcher list into the work directory; the configuration's path."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        listing = self.workdir / "dispatcher.list"
        listing.write_text("".join(f"1 {uri}\n" for uri in self.uris), encoding="utf-8")
        values = {"DEBUG": 2, "CHILDREN": 2, "LISTEN_ADDR": self.address, "LISTEN_PORT": self.port,
                  "MODULES": _modules_dir(), "CTL_SOCKET": self.ctl, "LIST_FILE": listing, "PING_S": PING_S,
                  "FR_TIMER_MS": FR_TIMER_MS}
        cfg = self.workdir / "kamailio.cfg"
        cfg.write_text(render_config(CONFIG.read_text(encoding="utf-8"), values), encoding="utf-8")
        return cfg

    def start(self, timeout: float = 15.0) -> None:
        """Start Kamailio and wait until its control socket answers."""
        if shutil.which("kamailio") is None:
            raise DispatcherError("kamailio is not installed (Debian package kamailio; `make system-deps`)")
        if self._process is not None:
            raise DispatcherError("this dispatcher is already started")
        cfg = self.render()
        check = subprocess.run(["kamailio", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            last = [line for line in (check.stderr + check.stdout).splitlines() if "ERROR" in line][-1:]
            raise DispatcherError(f"kamailio refused {cfg}: {last[0] if last else check.returncode}")
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                ["kamailio", "-DD", "-E", "-f", str(cfg), "-P", str(self.workdir / "kamailio.pid")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise DispatcherError(f"kamailio exited with {self._process.returncode}: {_last_error(self.log)} "
                                      f"(see {self.log})")
            try:
                self.states()
                return
            except DispatcherError:
                time.sleep(0.1)
        self.stop()
        raise DispatcherError(f"kamailio's control socket did not answer within {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        """Stop Kamailio (SIGTERM to its process group, then SIGKILL); nothing happens if it is not running.

        Also stops a Kamailio started from this work directory by another
        process (the command line's ``start``), found by its pid file.
        """
        proc, self._process = self._process, None
        pid = proc.pid if proc is not None and proc.poll() is None else self._pid_from_file()
        if pid is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (proc.poll() is None if proc else Path(f"/proc/{pid}").exists()):
                time.sleep(0.05)
            if not (proc.poll() is None if proc else Path(f"/proc/{pid}").exists()):
                break
        if proc is not None:
            proc.wait()

    def _pid_from_file(self) -> int | None:
        try:
            pid = int((self.workdir / "kamailio.pid").read_text().strip())
            if Path(f"/proc/{pid}/comm").read_text().strip() != "kamailio":
                return None
        except (OSError, ValueError):
            return None
        return pid

    def is_running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self._pid_from_file() is not None

    def states(self) -> dict[str, str]:
        """Each front end's state as the dispatcher sees it: ``live`` or ``down`` (probed, not answering)."""
        try:
            out = subprocess.run(["kamcmd", "-s", f"unix:{self.ctl}", "dispatcher.list"], capture_output=True,
                                 text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DispatcherError(f"kamcmd could not ask the dispatcher: {e}") from None
        if out.returncode != 0:
            raise DispatcherError(f"kamcmd dispatcher.list failed: {(out.stderr or out.stdout).strip()[:200]}")
        found = dict(re.findall(r"URI:\s*(\S+)\s+FLAGS:\s*(\S+)", out.stdout))
        return {uri: "live" if flags.startswith("A") else "down" for uri, flags in found.items()}

    def live(self) -> list[str]:
        return [uri for uri, state in self.states().items() if state == "live"]

    def wait_live(self, count: int, timeout: float = 15.0) -> list[str]:
        """Wait until exactly ``count`` front ends are live (probes take ``PING_S`` s each); the live ones."""
        deadline = time.monotonic() + timeout
        live = self.live()
        while len(live) != count and time.monotonic() < deadline:
            time.sleep(0.1)
            live = self.live()
        if len(live) != count:
            raise DispatcherError(f"{len(live)} of {len(self.front_ends)} Asterisk front ends are live, not {count}: "
                                  f"{self.states()}")
        return live

    def __enter__(self) -> Dispatcher:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
