"""Tests for recharge_server.tls: the servers speak TLS only, and the heartbeat trusts only the installation's CA.

A real listening site on the test's own reactor (``running_reactor``), a
stdlib client and the heartbeat's ``Agent``; no recharge core is needed.
"""

import json
import os
import shutil
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.threads import blockingCallFromThread
from twisted.web import server
from twisted.web.resource import Resource

from cardmgmt import tls
from recharge_server.leadership import fetch_health, quiet_agent
from recharge_server.tls import peer_policy, server_endpoint, server_options
from testkit.live_api import tls_test_certificates


def _key_dir(tmp_path: Path, source: Path) -> Path:
    d = tmp_path / "keys"
    d.mkdir(mode=0o700, parents=True)
    for name in (tls.CA_CERT, tls.SERVER_CERT, tls.SERVER_KEY):
        shutil.copy(source / name, d / name)
    os.chmod(d / tls.SERVER_KEY, 0o600)
    return d


class _Health(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"name": "A", "role": "leader"}).encode()


@pytest.fixture
def site_port(live_reactor: Any, tmp_path: Path) -> Any:
    site = server.Site(_Health())
    endpoint = server_endpoint(live_reactor, "127.0.0.1", 0, server_options(_key_dir(tmp_path, tls_test_certificates())), 50)
    port = blockingCallFromThread(live_reactor, lambda: endpoint.listen(site))
    yield port.getHost().port
    blockingCallFromThread(live_reactor, port.stopListening)


def test_plain_http_gets_no_http_answer(site_port: int) -> None:
    with socket.create_connection(("127.0.0.1", site_port), timeout=2) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = s.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/")


def test_a_client_trusting_the_ca_is_answered(site_port: int) -> None:
    context = ssl.create_default_context(cafile=str(tls_test_certificates() / tls.CA_CERT))
    with socket.create_connection(("127.0.0.1", site_port), timeout=2) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.")


def test_a_client_offering_alpn_is_answered_over_http_1_1(site_port: int) -> None:
    """Browsers and curl offer ALPN (h2, http/1.1); the gated listener must answer it, not abort the handshake."""
    context = ssl.create_default_context(cafile=str(tls_test_certificates() / tls.CA_CERT))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", site_port), timeout=2) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        assert s.selected_alpn_protocol() == "http/1.1"
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.")


def test_the_heartbeat_reaches_a_peer_with_the_installations_certificate(live_reactor: Any, site_port: int, tmp_path: Path) -> None:
    agent = quiet_agent(live_reactor, 2.0, peer_policy(_key_dir(tmp_path / "mine", tls_test_certificates())))
    health = blockingCallFromThread(
        live_reactor, lambda: fetch_health(live_reactor, f"https://127.0.0.1:{site_port}/v1/health", 2.0, agent)
    )
    assert health == {"name": "A", "role": "leader"}


def test_the_heartbeat_refuses_a_peer_of_another_installation(live_reactor: Any, site_port: int, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    tls.create_authority(other, "other")
    agent = quiet_agent(live_reactor, 2.0, peer_policy(other))
    with pytest.raises(Exception) as caught:
        blockingCallFromThread(
            live_reactor, lambda: fetch_health(live_reactor, f"https://127.0.0.1:{site_port}/v1/health", 2.0, agent)
        )
    assert "certificate" in repr(caught.value).lower() or "ssl" in repr(caught.value).lower()


def _closed_at_once(port: int) -> bool:
    """A new connection is closed by the server without a word (within a second)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.settimeout(1.0)
        try:
            return s.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def test_handshakes_beyond_the_bound_are_closed_at_once_and_the_bound_is_given_back(
    live_reactor: Any, tmp_path: Path
) -> None:
    from recharge_server.tls import HandshakeGate

    gate = HandshakeGate(live_reactor, limit=1, timeout=0.5)
    endpoint = server_endpoint(live_reactor, "127.0.0.1", 0, server_options(_key_dir(tmp_path, tls_test_certificates())), 50,
                               gate)
    listening = blockingCallFromThread(live_reactor, lambda: endpoint.listen(server.Site(_Health())))
    port = listening.getHost().port
    context = ssl.create_default_context(cafile=str(tls_test_certificates() / tls.CA_CERT))
    try:
        stalled = socket.create_connection(("127.0.0.1", port), timeout=2)  # connected, never says hello
        try:
            assert _closed_at_once(port), "a second handshake while one is in progress is refused"
            assert gate.refused >= 1
            # The stalled one is dropped after the gate's timeout, and its place given back.
            stalled.settimeout(2)
            try:
                assert stalled.recv(1) == b""
            except ConnectionResetError:
                pass
        finally:
            stalled.close()
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.")
        # A finished handshake gives its place back while the connection lives on.
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.")
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw2, \
                    context.wrap_socket(raw2, server_hostname="127.0.0.1") as s2:
                s2.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert s2.recv(4096).startswith(b"HTTP/1.")
        assert gate.pending <= 1  # the last connection may still be closing
    finally:
        blockingCallFromThread(live_reactor, listening.stopListening)


class _Named(Resource):
    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render_GET(self, request: Any) -> bytes:
        return self.name.encode()


def test_server_processes_sharing_a_port_are_each_reached_and_a_server_not_sharing_finds_it_taken(
    live_reactor: Any, tmp_path: Path,
) -> None:
    """``serve --shared-port``: the kernel spreads new connections across the listeners of one port."""
    from twisted.internet.error import CannotListenError

    from testkit.ports import free_tcp_port

    options = server_options(_key_dir(tmp_path, tls_test_certificates()))
    number = free_tcp_port()
    ports = [
        blockingCallFromThread(
            live_reactor, lambda name=name: server_endpoint(live_reactor, "127.0.0.1", number, options, 50, shared=True)
            .listen(server.Site(_Named(name)))
        )
        for name in ("A1", "A2")
    ]
    try:
        context = ssl.create_default_context(cafile=str(tls_test_certificates() / tls.CA_CERT))
        seen = set()
        for _ in range(40):
            with socket.create_connection(("127.0.0.1", number), timeout=2) as raw, \
                    context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                seen.add(s.recv(4096).split(b"\r\n\r\n", 1)[-1])
        assert seen == {b"A1", b"A2"}
        alone = server_endpoint(live_reactor, "127.0.0.1", number, options, 50)
        with pytest.raises(CannotListenError):
            blockingCallFromThread(live_reactor, lambda: alone.listen(server.Site(_Named("B"))))
    finally:
        for port in ports:
            blockingCallFromThread(live_reactor, port.stopListening)
    taken = blockingCallFromThread(live_reactor, lambda: server_endpoint(live_reactor, "127.0.0.1", number, options, 50)
                                   .listen(server.Site(_Named("C"))))
    try:
        shared = server_endpoint(live_reactor, "127.0.0.1", number, options, 50, shared=True)
        with pytest.raises(CannotListenError):
            blockingCallFromThread(live_reactor, lambda: shared.listen(server.Site(_Named("D"))))
    finally:
        blockingCallFromThread(live_reactor, taken.stopListening)
