"""TLS for the recharge servers: the listening side, and the heartbeat's client side towards the peer.

Both use the installation's own files (``cardmgmt.tls``): the server
presents ``tls-server.pem``; the peer heartbeat trusts only ``tls-ca.pem``
and checks the peer's host name or address against its certificate
(Twisted's ``optionsForClientTLS``, through ``service_identity``).  A plain
HTTP request to a server fails its TLS handshake: the servers speak TLS only.

A handshake is the dearest thing a connection asks of the reactor thread, so
the listener bounds the handshakes in progress (``HandshakeGate``): a
connection that comes while ``limit`` others are still handshaking is closed
as it is accepted, which costs the server nothing and tells the client at
once to try the other server or back off (``ivr.client`` takes it as
"busy"); a handshake not done within ``timeout`` seconds is dropped.
Without the bound, clients that time out and reconnect under overload turn
every retry into a handshake, and the server spends itself on them.
"""

# test-case-name: tests.recharge_server.test_tls

import socket
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import defer, ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint, TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IHandshakeListener,
    IListeningPort,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from cardmgmt import tls
from cardmgmt.errors import KeyFileError


def server_options(key_dir: Path) -> ssl.CertificateOptions:
    """What the server presents: its certificate and key from ``key_dir``; TLS 1.2 at the least."""
    files = tls.server_files(key_dir)
    try:
        cert = x509.load_pem_x509_certificate(files.certificate.read_bytes())
        key = serialization.load_pem_private_key(files.private_key.read_bytes(), password=None)
    except ValueError:
        raise KeyFileError(f"{files.certificate} or {files.private_key} is unreadable; run `cli.py keys tls`") from None
    # cryptography's objects, not pyOpenSSL's (whose use for this is deprecated); Twisted passes them through.
    return ssl.CertificateOptions(privateKey=key, certificate=cert, raiseMinimumTo=ssl.TLSVersion.TLSv1_2)


class HandshakeGate:
    """How many TLS handshakes are in progress on a listener, bounded by ``limit``; see the module docstring."""

    def __init__(self, reactor: Any, limit: int = 64, timeout: float = 2.0) -> None:
        self.reactor, self.limit, self.timeout = reactor, limit, timeout
        self.pending = 0
        self.refused = 0

    def admit(self) -> bool:
        if self.pending >= self.limit:
            self.refused += 1
            return False
        self.pending += 1
        return True


@implementer(IHandshakeListener)
class _Handshaking(ProtocolWrapper):
    """Between the TLS layer and the HTTP channel: gives the gate its place back when the handshake ends."""

    factory: "_HandshakeWatch"
    _counted = True

    def makeConnection(self, transport: Any) -> None:
        gate = self.factory.gate
        self._timer: Any = gate.reactor.callLater(gate.timeout, self._too_slow)
        super().makeConnection(transport)

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.factory.gate.pending -= 1
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def handshakeCompleted(self) -> None:
        self._release()

    def _too_slow(self) -> None:
        self._timer = None
        if self._counted:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        self._release()
        super().connectionLost(reason)


@implementer(IProtocolNegotiationFactory)
class _HandshakeWatch(WrappingFactory):
    protocol = _Handshaking  # type: ignore[assignment]
    noisy = False

    def __init__(self, wrapped: IProtocolFactory, gate: HandshakeGate) -> None:
        super().__init__(wrapped)
        self.gate = gate

    def acceptableProtocols(self) -> list[bytes]:
        """The wrapped site's ALPN protocols: a client that offers ALPN (browsers, curl) must get an answer."""
        if IProtocolNegotiationFactory.providedBy(self.wrappedFactory):
            return list(self.wrappedFactory.acceptableProtocols())
        return [b"http/1.1"]


class _GatedTLSFactory(TLSMemoryBIOFactory):
    """The TLS layer, refusing (closing at accept) a connection while the gate is full."""

    def __init__(self, options: Any, wrapped: IProtocolFactory, gate: HandshakeGate, clock: Any) -> None:
        super().__init__(options, False, _HandshakeWatch(wrapped, gate), clock=clock)
        self.gate = gate

    def buildProtocol(self, addr: Any) -> Any:
        if not self.gate.admit():
            return None  # Twisted closes the accepted socket at once
        return super().buildProtocol(addr)


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """``SSL4ServerEndpoint`` with the reactor it is given as the TLS layer's clock.

    Twisted's own TLS endpoints time their write batching on the global
    reactor: with any other reactor (each test runs its own) the answers
    would sit unsent.  ``interface`` may be an IPv6 address.
    """

    def __init__(
        self, reactor: Any, port: int, options: ssl.CertificateOptions, backlog: int, interface: str,
        gate: HandshakeGate | None = None, shared: bool = False,
    ) -> None:
        self._tcp = TCP4ServerEndpoint(reactor, port, backlog=backlog, interface=interface)
        self._port, self._backlog, self._interface, self._shared = port, backlog, interface, shared
        self._options, self._reactor = options, reactor
        self.gate = gate or HandshakeGate(reactor)

    def listen(self, factory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        tls_factory = _GatedTLSFactory(self._options, factory, self.gate, self._reactor)
        if not self._shared:
            return self._tcp.listen(tls_factory)
        try:
            sock = shared_socket(self._interface, self._port, self._backlog)
        except OSError as e:
            return defer.fail(CannotListenError(self._interface, self._port, e))
        try:
            return defer.succeed(self._reactor.adoptStreamPort(sock.fileno(), sock.family, tls_factory))
        finally:
            sock.close()  # the reactor listens on its own copy of the descriptor


def shared_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket that other processes of this host may bind too (``SO_REUSEPORT``).

    Several server processes, each with its own name, then serve one port and
    the kernel spreads new connections across them: one Python process is
    bound by its interpreter lock to about one core, however many the host
    has.  Only sockets that all ask for sharing, of the same user, share a
    port: a server started without it still finds the port taken.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def server_endpoint(
    reactor: Any, host: str, port: int, options: ssl.CertificateOptions, backlog: int,
    gate: HandshakeGate | None = None, shared: bool = False,
) -> TLSServerEndpoint:
    """A TLS listening endpoint on ``host``:``port`` (an IPv6 address is understood as such), handshakes bounded by
    ``gate``; ``shared``: the port is shared with this host's other server processes (``shared_socket``)."""
    return TLSServerEndpoint(reactor, port, options, backlog, host, gate, shared)


@implementer(IStreamClientEndpoint)
class _TLSClientEndpoint:
    def __init__(self, reactor: Any, host: str, port: int, creator: Any, timeout: float) -> None:
        self._tcp = HostnameEndpoint(reactor, host.encode("idna") if not _is_ip(host) else host.encode("ascii"), port,
                                     timeout=timeout)
        self._creator, self._reactor = creator, reactor

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[Any]:
        d = self._tcp.connect(TLSMemoryBIOFactory(self._creator, True, factory, clock=self._reactor))
        # The caller wants its own protocol, not the TLS layer around it (as Twisted's wrapClientTLS gives).
        return d.addCallback(lambda tls_protocol: tls_protocol.wrappedProtocol)


@implementer(IAgentEndpointFactory)
class PeerEndpoints:
    """Where an ``Agent`` opens its connections to the peer: TLS under ``policy``, timed by ``reactor``."""

    def __init__(self, reactor: Any, policy: IPolicyForHTTPS, timeout: float) -> None:
        self.reactor, self.policy, self.timeout = reactor, policy, timeout

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        if uri.scheme != b"https":
            raise ValueError("the peer is reached over https only")
        host = uri.host.decode("ascii")
        creator = self.policy.creatorForNetloc(uri.host, uri.port)
        return _TLSClientEndpoint(self.reactor, host, uri.port, creator, self.timeout)


def _is_ip(host: str) -> bool:
    return isIPAddress(host) or isIPv6Address(host)


def peer_policy(key_dir: Path) -> BrowserLikePolicyForHTTPS:
    """The heartbeat client's policy: trust the installation's CA only, check the peer's name."""
    ca = ssl.Certificate.loadPEM(tls.ca_file(key_dir).read_bytes())
    return BrowserLikePolicyForHTTPS(trustRoot=ca)
