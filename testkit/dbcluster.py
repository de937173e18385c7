"""The card database's failover topology on one machine: a pg_auto_failover monitor, a primary and a synchronous standby.

Production runs three machines (see the README's "Database failover"); tests,
the demo and a tester's laptop run the same three parts as throwaway
clusters on free loopback ports under one directory, started with Debian's
``pg_autoctl`` (``postgresql-15-auto-failover``, ``pg-auto-failover-cli``)::

    topo = DbTopology.create()        # a new directory under /tmp, owned by the postgres user
    topo.start()                      # monitor, node1 (primary), node2 (synchronous standby): ~20 s
    topo.url()                        # postgresql://postgres@127.0.0.1:P1,127.0.0.1:P2/cards?target_session_attrs=read-write
    topo.kill(topo.primary())         # kill -9 the node's keeper, postmaster and backends: a machine that died
    topo.wait_writable()              # the standby is promoted (seconds)
    topo.restart("node1")             # the old primary rejoins as a standby, never as a second writer
    topo.stop()                       # stops everything and removes the directory

Each part runs in a process group of its own (``kill`` is ``killpg`` with
SIGKILL), as the ``postgres`` user when started by root (PostgreSQL refuses
root), with ``XDG_CONFIG_HOME``/``XDG_DATA_HOME`` inside the directory, so
nothing is left in the postgres user's home.  The PostgreSQL server on
127.0.0.1:5432 is never touched.  The monitor is tuned to fail over in
seconds (``FAST_FAILOVER``: health checks every half second, a node silent for a
second is unhealthy); pg_auto_failover's defaults take about 30 s.

``python -m testkit.topology db start|status|stop`` runs it from the command
line (``testkit.topology``); a ``topology.json`` in its directory names the
ports and process groups, so that ``DbTopology.load`` finds it again.
"""

# test-case-name: tests.integration.test_db_failover, tests.testkit.test_topology

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from testkit.ports import free_tcp_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"
DBNAME = "cards"
NODES = ("node1", "node2")
DEFAULT_DIR = Path("/tmp/recharge-topology-db")
STATE_FILE = "topology.json"
# The monitor's failure detection, in milliseconds (pg_auto_failover's defaults in brackets).
FAST_FAILOVER = {
    "pgautofailover.health_check_period": 500,  # [5000]
    "pgautofailover.health_check_timeout": 500,  # [5000]
    "pgautofailover.health_check_max_retries": 1,  # [2]
    "pgautofailover.health_check_retry_delay": 250,  # [2000]
    "pgautofailover.node_considered_unhealthy_timeout": 1000,  # [20000]
    # How long the standby waits for an unreachable primary to demote itself before
    # taking over.  A primary cut off but alive cannot commit meanwhile anyway: its
    # commits wait for the synchronous standby, which no longer follows it.
    "pgautofailover.primary_demote_timeout": 500,  # [30000]
    # No failover for this long after the monitor starts (nodes have not reported yet).
    "pgautofailover.startup_grace_period": 2000,  # [10000]
}


class TopologyError(Exception):
    """The topology could not be started or is not as expected; the message is one line."""


@dataclass
class Part:
    """One pg_autoctl process (monitor or node): its name, port and process group."""

    name: str
    port: int
    pgid: int = 0

    def alive(self) -> bool:
        if not self.pgid:
            return False
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        return True


@dataclass
class DbTopology:
    """A monitor and two nodes under ``root``; see the module."""

    root: Path
    monitor: Part = field(default_factory=lambda: Part("monitor", 0))
    nodes: dict[str, Part] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)  # type: ignore[type-arg]

    # --- making, saving, finding ------------------------------------------------------------

    @classmethod
    def create(cls, root: Path | None = None) -> DbTopology:
        """A topology with free ports in a new (or empty) directory the postgres user can write."""
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="recharge-db-topology-"))
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(root, pw.pw_uid, pw.pw_gid)
        topo = cls(root, Part("monitor", free_tcp_port()), {n: Part(n, free_tcp_port()) for n in NODES})
        topo.save()
        return topo

    @classmethod
    def load(cls, root: Path) -> DbTopology:
        try:
            data = json.loads((root / STATE_FILE).read_text())
        except (OSError, ValueError):
            raise TopologyError(f"no database topology in {root} (start one with `db start`)") from None
        return cls(root, Part(**data["monitor"]), {n: Part(**p) for n, p in data["nodes"].items()})

    def save(self) -> None:
        data = {"monitor": asdict(self.monitor), "nodes": {n: asdict(p) for n, p in self.nodes.items()}}
        (self.root / STATE_FILE).write_text(json.dumps(data, indent=1))

    # --- addresses --------------------------------------------------------------------------

    def url(self, dbname: str = DBNAME) -> str:
        """The multi-host URL of the card database: whichever node takes writes (libpq's form)."""
        hosts = ",".join(f"{HOST}:{p.port}" for p in self.nodes.values())
        return f"postgresql://postgres@{hosts}/{dbname}?target_session_attrs=read-write"

    def node_url(self, name: str, dbname: str = DBNAME) -> str:
        return f"postgresql://postgres@{HOST}:{self.nodes[name].port}/{dbname}"

    @property
    def monitor_url(self) -> str:
        return f"postgresql://autoctl_node@{HOST}:{self.monitor.port}/pg_auto_failover?sslmode=disable"

    # --- processes --------------------------------------------------------------------------

    def _spawn(self, part: Part, args: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PATH=f"{PG_BIN}:/usr/local/bin:/usr/bin:/bin", XDG_CONFIG_HOME=str(self.root / "xdg-config"),
                   XDG_DATA_HOME=str(self.root / "xdg-data"), XDG_RUNTIME_DIR=str(self.root / "xdg-run"))
        kw: dict[str, Any] = {}
        if os.geteuid() == 0:
            kw.update(user="postgres", group="postgres", extra_groups=[])
        with (self.root / f"{part.name}.log").open("ab") as log:
            proc = subprocess.Popen(["pg_autoctl", *args], env=env, cwd=self.root, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, **kw)
        part.pgid = proc.pid
        self._procs[part.name] = proc
        self.save()

    def _pgdata(self, part: Part) -> str:
        return str(self.root / part.name)

    def _run_part(self, part: Part) -> None:
        """Start (or restart) a part: ``create ... --run`` the first time, ``run`` afterwards."""
        pgdata = self._pgdata(part)
        common = ["--pgdata", pgdata, "--pgport", str(part.port), "--hostname", HOST, "--listen", HOST,
                  "--auth", "trust", "--no-ssl"]
        if Path(pgdata, "PG_VERSION").exists():
            self._spawn(part, ["run", "--pgdata", pgdata])
        elif part is self.monitor:
            self._spawn(part, ["create", "monitor", *common, "--run"])
        else:
            self._spawn(part, ["create", "postgres", *common, "--name", part.name, "--monitor", self.monitor_url,
                               "--dbname", DBNAME, "--run"])

    def start(self, timeout: float = 120) -> None:
        """Start the monitor, then node1 (the first primary), then node2, and wait for a synchronous pair."""
        end = time.monotonic() + timeout
        if not shutil.which("pg_autoctl"):
            raise TopologyError("pg_autoctl is not installed (Debian pg-auto-failover-cli; `make system-deps`)")
        self._run_part(self.monitor)
        self._wait(lambda: self._sql(self.monitor_admin_url(), "SELECT 1 FROM pgautofailover.formation"), end,
                   "the monitor")
        with psycopg.connect(self.monitor_admin_url(), autocommit=True) as conn:
            for name, value in FAST_FAILOVER.items():
                conn.execute(f"ALTER SYSTEM SET {name} = {int(value)}")
            conn.execute("SELECT pg_reload_conf()")
        first, second = (self.nodes[n] for n in NODES)
        self._run_part(first)
        self._wait(lambda: self.states().get(first.name, ("", ""))[0] in ("single", "wait_primary", "primary"), end,
                   "the first node")
        self._run_part(second)
        # pg_basebackup asks for a spread checkpoint (minutes on an idle server): make it now.
        self._wait(lambda: self._checkpoint(first) and self.healthy(), end, "the standby", step=1.0)

    def monitor_admin_url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.monitor.port}/pg_auto_failover"

    def kill(self, name: str) -> float:
        """kill -9 every process of a part (keeper, postmaster, backends), as when its machine dies; the kill's moment.

        PostgreSQL puts each backend in a session of its own, so the part's
        process group alone would leave them running: its processes are the
        group and every descendant (``pids``).  Returns ``time.monotonic()``
        at the signals, once they are all gone.
        """
        part = self.monitor if name == "monitor" else self.nodes[name]
        victims = self.pids(name) if part.pgid else []  # found first: the scan takes a while on a busy machine
        at = time.monotonic()
        end = at + 10
        while victims and time.monotonic() < end:
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._reap(part.name)  # a zombie leader would keep the group "alive"
            time.sleep(0.02)
            victims = self.pids(name)  # anything forked meanwhile; zombies are not counted (init reaps them)
        self._reap(part.name)  # gone already (a stop's SIGINT): reaped all the same
        return at

    def _reap(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def pids(self, name: str) -> list[int]:
        """The live processes of a part: its process group and all their descendants (backends included)."""
        part = self.monitor if name == "monitor" else self.nodes[name]
        table = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]))
        found = {pid for pid, (_ppid, pgrp) in table.items() if pgrp == part.pgid}
        while True:
            more = {pid for pid, (ppid, _pgrp) in table.items() if ppid in found} - found
            if not more:
                return sorted(found)
            found |= more

    def restart(self, name: str) -> None:
        """Start a killed node again (``pg_autoctl run``): the monitor tells it what it is now."""
        self._run_part(self.nodes[name])

    def stop(self, remove: bool = True) -> None:
        """Stop every part (SIGINT: pg_autoctl's fast shutdown; SIGKILL after 5 s) and, by default, remove the directory."""
        parts = [*self.nodes.values(), self.monitor]
        for part in parts:
            if part.alive():
                os.killpg(part.pgid, signal.SIGINT)
        end = time.monotonic() + 5
        while any(self.pids(p.name) for p in parts) and time.monotonic() < end:
            time.sleep(0.1)
        for part in parts:
            self.kill(part.name)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- what it is now ---------------------------------------------------------------------

    def states(self) -> dict[str, tuple[str, str]]:
        """Each node's (reported, assigned) state as the monitor has them; empty if it cannot be asked."""
        rows = self._sql(self.monitor_admin_url(),
                         "SELECT nodename, reportedstate::text, goalstate::text FROM pgautofailover.node")
        return {name: (reported, goal) for name, reported, goal in rows or []}

    def primary(self) -> str | None:
        """The node the monitor holds for primary (reported and assigned), if any."""
        for name, (reported, goal) in self.states().items():
            if reported == goal and reported in ("primary", "wait_primary", "single"):
                return name
        return None

    def healthy(self) -> bool:
        """A primary with a synchronous standby following it, as the monitor sees them."""
        states = sorted(r for r, g in self.states().values() if r == g)
        return states == ["primary", "secondary"]

    def writable(self, name: str) -> bool | None:
        """Whether node ``name`` takes writes now (``None``: it does not answer)."""
        rows = self._sql(self.node_url(name), "SELECT pg_is_in_recovery()")
        return None if rows is None else not rows[0][0]

    def status(self) -> dict[str, Any]:
        """The topology as ``db status`` shows it."""
        states = self.states()
        nodes = []
        for name, part in self.nodes.items():
            writable = self.writable(name)
            reported, goal = states.get(name, ("?", "?"))
            nodes.append({"name": name, "address": f"{HOST}:{part.port}", "running": bool(self.pids(name)),
                          "answers": "no" if writable is None else ("read-write" if writable else "read-only"),
                          "reported_state": reported, "assigned_state": goal})
        sync = None
        primary = self.primary()
        if primary:
            rows = self._sql(self.node_url(primary), "SHOW synchronous_standby_names")
            sync = rows[0][0] if rows else None
        return {"directory": str(self.root), "url": self.url(),
                "monitor": {"address": f"{HOST}:{self.monitor.port}", "running": bool(self.pids("monitor")),
                            "answers": bool(states)},
                "nodes": nodes, "primary": primary, "synchronous_standby_names": sync, "healthy": self.healthy()}

    def wait_writable(self, timeout: float = 30) -> float:
        """Seconds until some node takes writes through the multi-host URL; ``TopologyError`` past ``timeout``."""
        start = time.monotonic()
        self._wait(lambda: self._sql(self.url(), "SELECT 1"), start + timeout, "a writable node", step=0.05)
        return time.monotonic() - start

    def wait_healthy(self, timeout: float = 60) -> None:
        primary = self.primary() or NODES[0]
        self._wait(lambda: self._checkpoint(self.nodes[primary]) and self.healthy(), time.monotonic() + timeout,
                   "a primary with its synchronous standby", step=0.5)

    # --- helpers ----------------------------------------------------------------------------

    def _checkpoint(self, part: Part) -> bool:
        self._sql(self.node_url(part.name, "postgres"), "CHECKPOINT")
        return True

    @staticmethod
    def _sql(url: str, statement: str) -> list[tuple[Any, ...]] | None:
        try:
            with psycopg.connect(url, connect_timeout=1, autocommit=True) as conn:
                cur = conn.execute(statement)
                return cur.fetchall() if cur.description else []
        except psycopg.Error:
            return None

    def _wait(self, predicate: Any, end: float, what: str, step: float = 0.2) -> None:
        while time.monotonic() < end:
            if predicate():
                return
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise TopologyError(f"{name} exited with {proc.returncode} while waiting for {what}; "
                                        f"see {self.root / (name + '.log')}")
            time.sleep(step)
        raise TopologyError(f"{what} did not come up in time; see the logs in {self.root}")
