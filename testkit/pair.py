"""The recharge server pair as child processes: ``cli.py serve A`` and ``cli.py serve B``, started, killed, restarted.

A ``Server`` is one ``cli.py serve NAME`` process listening on a loopback
port with its peer's address for the heartbeat; its output goes to a log
file the failure messages point at.  ``kill`` is SIGKILL (a server that
dies), ``stop`` is SIGTERM with a grace period (a server that is shut down).
``start_pair`` starts both on free ports and waits until each listens.
Used by the integration tests of the hot-standby pair, the end-to-end
hotline and the recharge benchmark.
"""

# test-case-name: tests.integration.test_server_pair, tests.e2e.test_hotline

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from testkit.ports import free_tcp_port

ROOT = Path(__file__).resolve().parents[1]  # where cli.py is


@dataclass
class Server:
    """One recharge server process; ``env`` carries the installation's ``CARDS_*`` settings."""

    name: str
    port: int
    peer_port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None  # type: ignore[type-arg]
    shared: bool = False  # ``--shared-port``: one of several processes of a server host on one port

    def start(self) -> None:
        with self.log.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "cli.py"), "serve", self.name, "--port", str(self.port),
                 "--peer", f"https://127.0.0.1:{self.peer_port}", *(["--shared-port"] if self.shared else [])],
                env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 20) -> None:
        """Wait until the server listens; ``RuntimeError`` naming its log if it exits or never does.

        A process sharing its port may find it answered by another: it is
        ready when its own log says it listens.
        """
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"server {self.name} exited with {self.proc.returncode}; see {self.log}")
            if self.shared:
                if f"recharge server {self.name} listening on" in self.log.read_text(errors="replace"):
                    return
                time.sleep(0.05)
                continue
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server {self.name} did not start; see {self.log}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def alive(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)


def start_pair(env: Mapping[str, str], logs: Path) -> list[Server]:
    """Servers A and B on free ports, each the other's peer, started and listening; A first."""
    a, b = free_tcp_port(), free_tcp_port()
    servers = [Server("A", a, b, dict(env), logs / "server-A.log"), Server("B", b, a, dict(env), logs / "server-B.log")]
    for s in servers:
        s.start()
    for s in servers:
        s.wait_ready()
    return servers
