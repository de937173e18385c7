#!/usr/bin/env python3
"""The demo's phone side: the real Asterisk sandbox running the hotline for the demo's server pair, until stopped.

``demo/card-life.sh`` (``make demo``) runs it in the background once the
recharge servers are up::

    python demo/phone.py --server 127.0.0.1:8441 --server 127.0.0.1:8442 \\
        --api-key-file demo-run/var/keys/api.key --ca-file demo-run/var/keys/tls-ca.pem --prompts demo-run/prompts --ready demo-run/asterisk.port &

It brings Asterisk up exactly as the end-to-end tests do
(``testkit.sandbox.start_hotline``, in the root they share,
``<root>-e2e``): it builds the sandbox root on first use (about
two minutes and 550 MB, once per machine), renders the prompts, starts
Asterisk on a free port with the prompts installed and the AGI pointed at the
two servers with the installation's API key, and writes the SIP port into
the ``--ready`` file.  It stops Asterisk on SIGTERM or SIGINT.  Exit codes: 0
stopped cleanly, 1 the sandbox could not be built or started (one line on
stderr).  Needs root, like the sandbox.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from testkit.sandbox import (
    SANDBOX_WAIT,
    Sandbox,
    SandboxError,
    build_prompts,
    e2e_root,
    free_sip_port,
    parse_server,
    start_hotline,
)
from voice_prompts.build import BuildError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo/phone.py", description=__doc__.splitlines()[0])
    parser.add_argument("--server", action="append", required=True, metavar="HOST:PORT",
                        help="a recharge server, primary first (repeat)")
    parser.add_argument("--api-key-file", type=Path, required=True, help="the hotline client's key (keys/api.key)")
    parser.add_argument("--ca-file", type=Path, required=True, help="the installation's CA certificate (keys/tls-ca.pem)")
    parser.add_argument("--prompts", type=Path, required=True, help="where to render the prompts")
    parser.add_argument("--ready", type=Path, required=True, help="written with the SIP port once Asterisk takes calls")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    root = e2e_root(os.environ)
    args.ready.unlink(missing_ok=True)
    try:
        servers = [parse_server(s) for s in args.server]
        api_key = args.api_key_file.read_bytes()
        ca_cert = args.ca_file.read_bytes()
        sandbox = Sandbox(root, free_sip_port())
        if not sandbox.is_built():
            say(f"building the Asterisk sandbox in {root} (first time only: about two minutes)")
        sandbox.build()
        say("rendering the prompts (espeak-ng, sox)")
        prompts = build_prompts(args.prompts)
        say("starting Asterisk (waits while the end-to-end tests use the sandbox)")
        start_hotline(sandbox, prompts, servers, api_key, wait=SANDBOX_WAIT, ca_cert=ca_cert)
    except (SandboxError, BuildError, OSError) as e:
        print(f"demo/phone.py: {str(e).strip() or type(e).__name__}", file=sys.stderr)  # a failed build adds its tail
        return 1
    try:
        say(f"Asterisk takes calls to 95598 on udp 127.0.0.1:{sandbox.sip_port}")
        partial = args.ready.with_name(args.ready.name + ".partial")
        partial.write_text(f"{sandbox.sip_port}\n", encoding="utf-8")
        partial.rename(args.ready)
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
        say("Asterisk stopped")
    return 0


def say(text: str) -> None:
    print(f"  [asterisk] {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
