"""The hotline's phone edge on one machine: two Asterisk front ends behind the Kamailio dispatcher.

``FrontEnds`` starts two sandboxed Asterisks (a root and a copy of it
beside it, ``<root>-b``, each with its own SIP port and RTP ports), both
with the prompts and the AGI pointed at the recharge servers, and the
dispatcher (``testkit.dispatcher``) in front of them; callers call the
dispatcher.  ``Hotline.start_front_ends`` (the e2e tests and
``bench/bench_front_ends.py``) and the command line use it::

    python -m testkit.frontends start --server 127.0.0.1:8441 --server 127.0.0.1:8442 \\
        --api-key-file KEYS/api.key --ca-file KEYS/tls-ca.pem     # prints the dispatcher's address
    python -m testkit.frontends status [--json]
    python -m testkit.frontends stop

The command line keeps what it started in ``/tmp/recharge-topology-phones``
(or ``--dir``) as ``frontends.json`` (roots, ports), so ``status`` and
``stop`` find it again; Asterisk and Kamailio run on after ``start``
returns.  Needs root (the sandbox runs under chroot) and Debian's kamailio.
"""

# test-case-name: tests.e2e.test_front_ends, tests.testkit.test_frontends

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testkit.dispatcher import DEFAULT_PORT, Dispatcher, DispatcherError
from testkit.sandbox import (
    RTP_PORTS,
    SANDBOX_WAIT,
    SECOND_RTP_PORTS,
    Sandbox,
    SandboxError,
    build_prompts,
    free_sip_port,
    parse_server,
    resolve_root,
    start_hotline,
)
from voice_prompts.build import BuildError

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
        return self.dispatcher

    def stop(self) -> None:
        """Stop the dispatcher, then both Asterisks."""
        try:
            if self.dispatcher is not None:
                self.dispatcher.stop()
        finally:
            for sandbox in self.sandboxes:
                sandbox.stop()

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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m testkit.frontends start|status|stop``; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m testkit.frontends",
        description="Two sandboxed Asterisks behind a Kamailio dispatcher, on this machine (needs root).",
        epilog="Example: python -m testkit.frontends start --server 127.0.0.1:8441 --server 127.0.0.1:8442 "
               "--api-key-file demo-run/var/keys/api.key --ca-file demo-run/var/keys/tls-ca.pem && "
               "python -m testkit.frontends status --json",
    )
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "recharge-topology-phones",
                        help="where the dispatcher's files and the state are kept (default /tmp/recharge-topology-phones)")
    parser.add_argument("--root", help="the first Asterisk's root (default: $ASTERISK_SANDBOX_DIR or "
                                       "~/.cache/recharge-asterisk/root); the second is beside it, <root>-b")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start both Asterisks and the dispatcher; print the address to call")
    start.add_argument("--server", action="append", default=[], metavar="HOST:PORT",
                       help="a recharge server for the AGI, primary first (repeat)")
    start.add_argument("--api-key-file", type=Path, help="the hotline client's key (keys/api.key)")
    start.add_argument("--ca-file", type=Path, help="the installation's CA certificate (keys/tls-ca.pem)")
    start.add_argument("--prompts", type=Path, metavar="DIR", help="keep the rendered prompts in DIR")
    start.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the dispatcher's UDP port (default {DEFAULT_PORT})")
    status = commands.add_parser("status", help="each Asterisk running or not, and live or down as the dispatcher sees it")
    status.add_argument("--json", action="store_true", help="print it as JSON")
    commands.add_parser("stop", help="stop the dispatcher and both Asterisks")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            args.dir.mkdir(parents=True, exist_ok=True)
            edge = FrontEnds(resolve_root(args.root, os.environ), args.dir, args.port)
            key = args.api_key_file.read_bytes() if args.api_key_file else None
            ca = args.ca_file.read_bytes() if args.ca_file else None
            with tempfile.TemporaryDirectory(prefix="recharge-prompts-") as scratch:
                dispatcher = edge.start(build_prompts(args.prompts or Path(scratch)),
                                        [parse_server(s) for s in args.server], key, ca, wait=0)
            (args.dir / STATE).write_text(json.dumps(edge.state(), indent=2), encoding="utf-8")
            ports = ", ".join(str(s.sip_port) for s in edge.sandboxes)
            print(f"call 95598 at udp:{dispatcher.address}:{dispatcher.port} (Asterisks on 127.0.0.1:{ports})")
        elif args.command == "status":
            found = FrontEnds.load(args.dir).status()
            if args.json:
                print(json.dumps(found, indent=2))
            else:
                d = found["dispatcher"]
                print(f"dispatcher {d['address']}: {'running' if d['running'] else 'not running'}")
                for a in found["asterisks"]:
                    print(f"asterisk {a['sip']} ({a['root']}): {'running' if a['running'] else 'not running'}, "
                          f"dispatcher sees it {a['dispatcher_sees']}")
        elif args.command == "stop":
            FrontEnds.load(args.dir).stop()
            (args.dir / STATE).unlink(missing_ok=True)
            print("stopped")
    except (SandboxError, BuildError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
