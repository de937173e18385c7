"""The whole hotline on one machine: the failover database, the server pair, two Asterisks behind the dispatcher.

``Stack`` puts together the three topologies a utility runs on separate
machines, for the demo, a tester's laptop and the tests::

    database   testkit.dbcluster.DbTopology  pg_auto_failover monitor, primary, synchronous standby
    servers    testkit.install.Installation  cli.py serve A and B on the card database's multi-host URL,
                                              the stand-in marketing system on the PostgreSQL at 127.0.0.1:5432
    phones     testkit.frontends.FrontEnds   two Asterisks (a sandbox root and its copy) behind Kamailio

``up`` starts them in that order (about a minute, more when the sandbox
roots are built the first time) and keeps what it started in
``DIR/stack.json``; ``status`` shows each part; ``down`` stops them in the
reverse order and removes what ``up`` made.  The operators are the test
installation's (``testkit.install.PASSWORDS``).  Needs root.  The command
line is ``python -m testkit.topology all start|status|stop``.
"""

# test-case-name: tests.e2e.test_front_ends

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from cardmgmt.system import CardSystem
from testkit import databases
from testkit.dbcluster import DbTopology, TopologyError
from testkit.frontends import STATE as STATE_PHONES
from testkit.frontends import FrontEnds
from testkit.install import PASSWORDS, Installation
from testkit.sandbox import build_prompts

STATE = "stack.json"


class Stack:
    """What ``up`` started under ``root``: the database topology, the installation and its servers, the phone edge."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def up(self, root: Path) -> dict[str, Any]:
        """Start the database topology, the installation and its servers, and the phone edge from sandbox ``root``."""
        if (self.root / STATE).exists():
            raise TopologyError(f"a stack already runs from {self.root}; `all stop` it first")
        self.root.mkdir(parents=True, exist_ok=True)
        db = DbTopology.create()  # a directory of its own under /tmp: the postgres user must reach it
        state: dict[str, Any] = {"db": str(db.root)}
        try:
            db.start()
            inst = Installation(self.root / "install", given_card_url=db.url())
            (self.root / "install").mkdir(exist_ok=True)
            inst.setup()
            state["marketing_db"] = inst.marketing_db
            system = CardSystem(inst.settings())
            system.initialise("alice", PASSWORDS["alice"])
            system.close()
            servers = inst.start_pair()
            state["servers"] = [{"name": s.name, "port": s.port, "pid": s.proc.pid, "log": str(s.log)}
                                for s in servers if s.proc]
            keys = inst.workdir / "keys"
            edge = FrontEnds(root, self.root / "phones")
            dispatcher = edge.start(build_prompts(self.root / "prompts"), [("127.0.0.1", s.port) for s in servers],
                                    (keys / "api.key").read_bytes(), (keys / "tls-ca.pem").read_bytes(), wait=0)
            state["phones"] = edge.state()
            state["call"] = f"{dispatcher.address}:{dispatcher.port}"
            state["card_url"] = db.url()
            state["key_dir"] = str(keys)
        except BaseException:
            self._write(state)
            self.down()
            raise
        self._write(state)
        return state

    def _write(self, state: dict[str, Any]) -> None:
        (self.root / STATE).write_text(json.dumps(state, indent=2), encoding="utf-8")

    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / STATE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TopologyError(f"no stack runs from {self.root} (start one with `all start`)") from None

    def status(self) -> dict[str, Any]:
        state = self.state()
        out: dict[str, Any] = {"call": state.get("call")}
        try:
            out["db"] = DbTopology.load(Path(state["db"])).status()
        except TopologyError as e:
            out["db"] = {"error": str(e)}
        out["servers"] = [{"name": s["name"], "port": s["port"], "running": _serves(s["pid"])}
                          for s in state.get("servers", [])]
        if (self.root / "phones" / STATE_PHONES).exists():
            out["phones"] = FrontEnds.load(self.root / "phones").status()
        return out

    def down(self) -> None:
        """Stop the phone edge, the servers and the database topology, and remove what ``up`` made."""
        state = self.state()
        if (self.root / "phones" / STATE_PHONES).exists():
            FrontEnds.load(self.root / "phones").stop()
        for s in state.get("servers", []):
            if _serves(s["pid"]):
                os.kill(s["pid"], signal.SIGTERM)
        if state.get("marketing_db"):
            databases.drop_database(state["marketing_db"])
        try:
            DbTopology.load(Path(state["db"])).stop()
        except TopologyError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def _serves(pid: int) -> bool:
    try:
        return b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
