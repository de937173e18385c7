"""The hotline's topology on one machine, from the command line: the database, the phones, or all of it.

    python -m testkit.topology db start|status|stop       # testkit.dbcluster: monitor, primary, synchronous standby
    python -m testkit.topology phones start|status|stop   # testkit.frontends: two Asterisks behind the dispatcher
    python -m testkit.topology all start|status|stop      # testkit.stack: the database, the server pair, the phones

Each keeps what it started in its directory (``--dir``; ``/tmp/recharge-topology-db``
or ``RECHARGE_TOPOLOGY_DIR``, ``/tmp/recharge-topology-phones``,
``/tmp/recharge-topology``), so that ``status`` and ``stop`` find it again.
Bad input and a part that will not start are one line on stderr and exit 1.
"""

# test-case-name: tests.testkit.test_topology, tests.testkit.test_frontends, tests.e2e.test_front_ends

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testkit.dbcluster import DEFAULT_DIR, STATE_FILE, DbTopology, TopologyError
from testkit.stack import Stack

# --- command line ---------------------------------------------------------------------------


def resolve_dir(option: str | None, environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    return Path(option or environ.get("RECHARGE_TOPOLOGY_DIR") or DEFAULT_DIR)


def print_status(status: dict[str, Any]) -> None:
    print(f"card database: {status['url']}")
    print(f"monitor {status['monitor']['address']}: {'running' if status['monitor']['running'] else 'stopped'}")
    for n in status["nodes"]:
        print(f"{n['name']} {n['address']}: {'running' if n['running'] else 'stopped'}, answers {n['answers']}, "
              f"{n['reported_state']} (assigned {n['assigned_state']})")
    print(f"primary: {status['primary'] or 'none'}; synchronous standby: {status['synchronous_standby_names'] or 'none'}; "
          f"{'healthy' if status['healthy'] else 'NOT healthy'}")


PARTS = {
    "db": ("the card database's clusters: a pg_auto_failover monitor, a primary and a synchronous standby",
           {"start": "start a monitor, a primary and a synchronous standby; print the URL",
            "stop": "stop them and remove their directory",
            "status": "show each part and which node is primary"}),
    "phones": ("two sandboxed Asterisks behind the Kamailio dispatcher (testkit.frontends; needs root)",
               {"start": "start both Asterisks and the dispatcher; print the address to call",
                "stop": "stop the dispatcher and both Asterisks",
                "status": "each Asterisk running or not, and live or down as the dispatcher sees it"}),
    "all": ("the whole hotline: the database topology, the server pair on it, the phones in front (testkit.stack)",
            {"start": "start the database topology, an installation with its servers, and the phones",
             "stop": "stop them all and remove what start made",
             "status": "show every part"}),
}
DIRS = {"db": DEFAULT_DIR, "phones": Path("/tmp/recharge-topology-phones"), "all": Path("/tmp/recharge-topology")}
EXAMPLES = {
    ("db", "start"): "python -m testkit.topology db start --dir /tmp/mytopo",
    ("phones", "start"): "python -m testkit.topology phones start --server 127.0.0.1:8441 --server 127.0.0.1:8442 "
                         "--api-key-file demo-run/var/keys/api.key --ca-file demo-run/var/keys/tls-ca.pem",
    ("all", "start"): "python -m testkit.topology all start && python -m testkit.topology all status --json",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m testkit.topology",
        description="Start, stop and show the hotline's topology on this machine: the card database's failover "
                    "clusters (db), two Asterisks behind the SIP dispatcher (phones), or everything with the server "
                    "pair between them (all).",
        epilog="Example: python -m testkit.topology db start && python -m testkit.topology db status --json",
    )
    sub = parser.add_subparsers(dest="part", required=True)
    for part, (text, actions) in PARTS.items():
        p = sub.add_parser(part, help=text, description=text,
                           epilog=f"Example: {EXAMPLES.get((part, 'start'), f'python -m testkit.topology {part} status')}")
        acts = p.add_subparsers(dest="action", required=True)
        for name, what in actions.items():
            a = acts.add_parser(name, help=what, description=what,
                                epilog=f"Example: {EXAMPLES.get((part, name), f'python -m testkit.topology {part} {name}')}")
            a.add_argument("--dir", help=f"where it lives (default {DIRS[part]}, or RECHARGE_TOPOLOGY_DIR)")
            if name == "status":
                a.add_argument("--json", action="store_true", help="print the status as JSON")
            if part in ("phones", "all") and name == "start":
                a.add_argument("--root", help="the first Asterisk's sandbox root (default: $ASTERISK_SANDBOX_DIR or "
                                              "~/.cache/recharge-asterisk/root, its e2e root for all); the second is "
                                              "beside it, <root>-b")
            if part == "phones" and name == "start":
                a.add_argument("--server", action="append", default=[], metavar="HOST:PORT",
                               help="a recharge server for the AGI, primary first (repeat)")
                a.add_argument("--api-key-file", type=Path, help="the hotline client's key (keys/api.key)")
                a.add_argument("--ca-file", type=Path, help="the installation's CA certificate (keys/tls-ca.pem)")
                a.add_argument("--prompts", type=Path, metavar="DIR", help="keep the rendered prompts in DIR")
                a.add_argument("--port", type=int, help="the dispatcher's UDP port on 127.0.0.2 (default 5170)")
    return parser


def _db(action: str, root: Path) -> Any:
    if action == "start":
        if (root / STATE_FILE).exists() and DbTopology.load(root).monitor.alive():
            raise TopologyError(f"a database topology already runs in {root}; `db stop` it first")
        if root.exists():
            shutil.rmtree(root)
        topo = DbTopology.create(root)
        try:
            topo.start()
        except BaseException:
            topo.stop(remove=False)
            raise
        return topo.url()
    if action == "stop":
        DbTopology.load(root).stop()
        return f"stopped and removed {root}"
    return DbTopology.load(root).status()


def _phones(action: str, root: Path, args: argparse.Namespace) -> Any:
    from testkit.dispatcher import DEFAULT_PORT
    from testkit.frontends import FrontEnds
    from testkit.sandbox import build_prompts, parse_server, resolve_root

    if action == "start":
        root.mkdir(parents=True, exist_ok=True)
        edge = FrontEnds(resolve_root(args.root, os.environ), root, args.port or DEFAULT_PORT)
        key = args.api_key_file.read_bytes() if args.api_key_file else None
        ca = args.ca_file.read_bytes() if args.ca_file else None
        with tempfile.TemporaryDirectory(prefix="recharge-prompts-") as scratch:
            d = edge.start(build_prompts(args.prompts or Path(scratch)), [parse_server(s) for s in args.server],
                           key, ca, wait=0)
        ports = ", ".join(str(s.sip_port) for s in edge.sandboxes)
        return f"call 95598 at udp:{d.address}:{d.port} (Asterisks on 127.0.0.1:{ports})"
    edge = FrontEnds.load(root)
    if action == "stop":
        edge.stop()
        return "stopped"
    return edge.status()


def _all(action: str, root: Path, args: argparse.Namespace) -> Any:
    from testkit.sandbox import e2e_root, resolve_root

    stack = Stack(root)
    if action == "start":
        state = stack.up(resolve_root(args.root, os.environ) if args.root else e2e_root(os.environ))
        return (f"call 95598 at udp:{state['call']}; card database {state['card_url']}; "
                f"key directory {state['key_dir']}")
    if action == "stop":
        stack.down()
        return f"stopped and removed {root}"
    return stack.status()


def print_words(part: str, status: dict[str, Any]) -> None:
    """A status in words: the database's (``print_status``), the phones', or each of the whole's parts."""
    if part == "db":
        print_status(status)
        return
    phones = status if part == "phones" else status.get("phones")
    if part == "all":
        print(f"call 95598 at udp:{status['call']}")
        if "error" in status["db"]:
            print(f"database: {status['db']['error']}")
        else:
            print_status(status["db"])
        for s in status["servers"]:
            print(f"server {s['name']} 127.0.0.1:{s['port']}: {'running' if s['running'] else 'stopped'}")
    if phones:
        d = phones["dispatcher"]
        print(f"dispatcher {d['address']}: {'running' if d['running'] else 'not running'}")
        for a in phones["asterisks"]:
            print(f"asterisk {a['sip']} ({a['root']}): {'running' if a['running'] else 'not running'}, "
                  f"dispatcher sees it {a['dispatcher_sees']}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m testkit.topology db|phones|all start|stop|status``; see the module docstring."""
    from testkit.sandbox import SandboxError
    from voice_prompts.build import BuildError

    args = _parser().parse_args(argv)
    root = Path(args.dir) if args.dir else (resolve_dir(None) if args.part == "db" else DIRS[args.part])
    try:
        if args.part == "db":
            result = _db(args.action, root)
        elif args.part == "phones":
            result = _phones(args.action, root, args)
        else:
            result = _all(args.action, root, args)
    except (TopologyError, SandboxError, BuildError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 1
    if isinstance(result, str):
        print(result)
    elif args.json:
        print(json.dumps(result, indent=2))
    else:
        print_words(args.part, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
