"""The hotline's phone edge on one machine: two Asterisk front ends behind the Kamailio dispatcher.

``FrontEnds`` starts two sandboxed Asterisks (a root and a copy of it
beside it, ``<root>-b``, each with its own SIP port and RTP ports), both
with the prompts and the AGI pointed at the recharge servers, and the
dispatcher (``testkit.dispatcher``) in front of them; callers call the
dispatcher.  ``Hotline.start_front_ends`` (the e2e tests and
``bench/bench_front_ends.py``), ``testkit.stack`` and the command line use it::

    python -m testkit.topology phones start --server 127.0.0.1:8441 --server 127.0.0.1:8442 \\
        --api-key-file KEYS/api.key --ca-file KEYS/tls-ca.pem     # prints the dispatcher's address
    python -m testkit.topology phones status [--json]
    python -m testkit.topology phones stop

``start`` keeps what it started in its work directory as ``frontends.json``
(roots, ports; the command line's is ``/tmp/recharge-topology-phones`` or
``--dir``), so ``FrontEnds.load``, ``status`` and ``stop`` find it again;
Asterisk and Kamailio run on after the command line's ``start`` returns.
Needs root (the sandbox runs under chroot) and Debian's kamailio.
"""

# test-case-name: tests.e2e.test_front_ends, tests.testkit.test_frontends

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testkit.dispatcher import Dispatcher, DispatcherError
from testkit.sandbox import (
    RTP_PORTS,
    SANDBOX_WAIT,
    SECOND_RTP_PORTS,
    Sandbox,
    SandboxError,
    free_sip_port,
    start_hotline,
)

STATE = "frontends.json"


def second_root(root: Path) -> Path:
    """The second Asterisk's root, beside the first: ``<root>-b``."""
    return root.with_name(root.name + "-b")


class FrontEnds:
    """Two Asterisks from ``root`` (and ``<root>-b``, copied from it when missing) behind a dispatcher in ``workdir``."""

    def __init__(self, root: Path, workdir: Path, dispatcher_port: int | None = None) -> None:
        self.root = Path(root)
        self.workdir = Path(workdir)
        self.dispatcher_port = dispatcher_port
        self.sandboxes: list[Sandbox] = []
        self.dispatcher: Dispatcher | None = None

    def start(self, prompts: Path, servers: Sequence[tuple[str, int]] = (), api_key: bytes | None = None,
              ca_cert: bytes | None = None, *, wait: float = SANDBOX_WAIT,
              sip_ports: Sequence[int] | None = None) -> Dispatcher:
        """Build the second root if needed, start both Asterisks and the dispatcher; wait until it probes both live."""
        second = second_root(self.root)
        Sandbox(self.root).build()
        Sandbox(second).build(copy_of=self.root)
        ports = list(sip_ports or (free_sip_port(), free_sip_port()))
        try:
            for root, port, rtp in ((self.root, ports[0], RTP_PORTS), (second, ports[1], SECOND_RTP_PORTS)):
                self.sandboxes.append(start_hotline(Sandbox(root, port, rtp), prompts, servers, api_key, wait=wait,
                                                    ca_cert=ca_cert))
            self.dispatcher = Dispatcher(self.workdir, [("127.0.0.1", s.sip_port) for s in self.sandboxes],
                                         self.dispatcher_port)
            self.dispatcher.start()
            self.dispatcher.wait_live(len(self.sandboxes))
        except BaseException:
            self.stop()
            raise
        (self.workdir / STATE).write_text(json.dumps(self.state(), indent=2), encoding="utf-8")
        return self.dispatcher

    def stop(self) -> None:
        """Stop the dispatcher, then both Asterisks; the state file goes with them."""
        try:
            if self.dispatcher is not None:
                self.dispatcher.stop()
        finally:
            for sandbox in self.sandboxes:
                sandbox.stop()
            (self.workdir / STATE).unlink(missing_ok=True)

    def state(self) -> dict[str, Any]:
        assert self.dispatcher is not None
        return {"dispatcher": {"address": self.dispatcher.address, "port": self.dispatcher.port,
                               "workdir": str(self.workdir)},
                "asterisks": [{"root": str(s.root), "sip_port": s.sip_port} for s in self.sandboxes]}

    @classmethod
    def load(cls, workdir: Path) -> FrontEnds:
        """The front ends a ``start`` from the command line left running, from ``workdir``'s state file."""
        try:
            state = json.loads((workdir / STATE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SandboxError(f"no front ends started from {workdir} (no {STATE}); run start first") from None
        edge = cls(Path(state["asterisks"][0]["root"]), workdir, state["dispatcher"]["port"])
        edge.sandboxes = [Sandbox(Path(a["root"]), a["sip_port"]) for a in state["asterisks"]]
        edge.dispatcher = Dispatcher(workdir, [("127.0.0.1", a["sip_port"]) for a in state["asterisks"]],
                                     state["dispatcher"]["port"])
        return edge

    def status(self) -> dict[str, Any]:
        """Each Asterisk running or not, and the dispatcher's view of them (when it runs)."""
        assert self.dispatcher is not None
        try:
            seen = self.dispatcher.states()
        except DispatcherError:
            seen = {}
        return {
            "dispatcher": {"address": f"{self.dispatcher.address}:{self.dispatcher.port}", "running": bool(seen)},
            "asterisks": [{"root": str(s.root), "sip": f"127.0.0.1:{s.sip_port}", "running": s.is_running(),
                           "dispatcher_sees": seen.get(f"sip:127.0.0.1:{s.sip_port}", "unknown")}
                          for s in self.sandboxes],
        }
