"""A real installation on PostgreSQL with the two recharge servers running as processes.

Used by the integration tests of the hot-standby pair: it creates a card
database and a stand-in marketing database of its own on the PostgreSQL
server, issues a batch of cards (learning their PINs from the new-card file,
as the factory would), and starts ``cli.py serve A`` and ``cli.py serve B``
as child processes that can be killed with SIGKILL and started again.
"""

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from cardmgmt.db import make_engine, upgrade
from cardmgmt.keys import load_api_key
from ivr.client import RechargeClient, tls_context
from marketing_iface.standin import create_standin
from tests.conftest import PG_ADMIN_URL, settings_for

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_url(name: str) -> str:
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def create_database(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
        c.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def set_reachable(name: str, reachable: bool) -> None:
    """Take a database off the air (as if its server stopped) or bring it back."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as c:
        c.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if reachable else "false"}')
        if not reachable:
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


@dataclass
class Server:
    name: str
    port: int
    peer_port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "cli.py"), "serve", self.name, "--port", str(self.port),
                 "--peer", f"https://127.0.0.1:{self.peer_port}"],
                env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 20) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"server {self.name} exited with {self.proc.returncode}; see {self.log}")
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


@dataclass
class Installation:
    workdir: Path
    card_db: str = ""
    marketing_db: str = ""
    servers: list[Server] = field(default_factory=list)

    @property
    def card_url(self) -> str:
        return pg_url(self.card_db)

    @property
    def marketing_url(self) -> str:
        return pg_url(self.marketing_db)

    def setup(self) -> None:
        self.card_db = create_database("cards_it")
        self.marketing_db = create_database("marketing_it")
        engine = make_engine(self.card_url)
        upgrade(engine)
        engine.dispose()
        create_standin(self.marketing_url)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARDS_")}
        env.update(CARDS_DATABASE_URL=self.card_url, CARDS_MARKETING_URL=self.marketing_url,
                   CARDS_KEY_DIR=str(self.workdir / "keys"), PYTHONPATH=str(ROOT))
        return env

    def start_pair(self) -> list[Server]:
        a, b = free_port(), free_port()
        logs = self.workdir
        self.servers = [Server("A", a, b, self.env(), logs / "server-A.log"), Server("B", b, a, self.env(), logs / "server-B.log")]
        for s in self.servers:
            s.start()
        for s in self.servers:
            s.wait_ready()
        return self.servers

    def client(self, timeout: float = 0.5, total_timeout: float = 1.0) -> RechargeClient:
        return RechargeClient([("127.0.0.1", s.port) for s in self.servers], load_api_key(self.workdir / "keys"),
                              timeout=timeout, total_timeout=total_timeout, tls=self.tls())

    def tls(self) -> "ssl.SSLContext":
        """A client context trusting this installation's CA (the servers speak TLS only)."""
        return tls_context(str(self.workdir / "keys" / "tls-ca.pem"))

    def settings(self, operator: str = "alice"):  # type: ignore[no-untyped-def]
        s = settings_for(self.card_url, self.workdir / "keys", operator)
        import dataclasses

        return dataclasses.replace(s, marketing_url=self.marketing_url)

    def teardown(self) -> None:
        for s in self.servers:
            s.stop()
        for name in (self.card_db, self.marketing_db):
            if name:
                drop_database(name)
