"""Free ports on this machine's loopback, for the servers, Asterisks and SIPp callers that tests and benchmarks start.

A port is free when the kernel hands it out for a socket bound to port 0;
it stays free only until someone else binds it, so ask for one just before
starting whatever listens there.  ``testkit.sandbox.free_sip_port`` builds on
``free_udp_port`` to keep clear of Asterisk's RTP range.
"""

# test-case-name: tests.testkit.test_ports

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_tcp_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing holds right now."""
    return _free_port(socket.SOCK_STREAM, host)


def free_udp_port(host: str = LOOPBACK) -> int:
    """A UDP port on ``host`` that nothing holds right now."""
    return _free_port(socket.SOCK_DGRAM, host)


def _free_port(kind: socket.SocketKind, host: str) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
