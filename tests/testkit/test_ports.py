"""``testkit.ports``: the ports it hands out can be bound at once."""

import socket

from testkit.ports import free_tcp_port, free_udp_port


def test_free_tcp_port_can_be_listened_on() -> None:
    port = free_tcp_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()


def test_free_udp_port_can_be_bound() -> None:
    port = free_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))
