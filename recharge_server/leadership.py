"""Which recharge server runs the background jobs: a lease in the card database, and each server's signs of life.

Both servers answer requests; only the holder of the lease row
``Lease(name="recharge-jobs")`` runs the jobs.  Every second each server
tries a conditional ``UPDATE``: it takes the lease if it already holds it or
if the lease has run out (``holder = me OR expires_at <= now``), and the
fencing token goes up by one whenever the holder changes.  The database
settles a race (one row, one winner), never a check in Python.  A leader that
stops renewing (dead, hung, cut off from the database) loses the lease after
``ttl`` seconds and the other server takes it on its next renewal; a leader
counts itself leader only until one renewal interval before its lease runs
out, so the two can never both believe it at once unless their clocks differ
by more than that.  A server that stops cleanly gives the lease up at once.

Beside the lease, each server upserts its ``ServerHeartbeat`` row every
second (what ``cli.py ha status`` shows) and asks its peer's ``/v1/health``
what the peer thinks it is, over TLS, trusting only the installation's CA
(``recharge_server.tls.peer_policy``).
"""

# test-case-name: tests.recharge_server.test_leadership

import datetime as dt
import functools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import case, insert, or_, update
from sqlalchemy.exc import IntegrityError
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IPolicyForHTTPS

from cardmgmt.db import Database
from cardmgmt.ha import LEASE_NAME, LeaseState, read_lease  # the reading side lives with the domain
from cardmgmt.models import Lease, ServerHeartbeat

log = Logger(namespace="recharge_server.leadership")

UTC = dt.UTC

RunBlocking = Callable[..., defer.Deferred[Any]]


def utc_at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, UTC)


# --- the lease and the heartbeat rows (blocking; run in the thread pool) -------------------


def try_acquire(db: Database, holder: str, now: dt.datetime, ttl: float, lease_name: str = LEASE_NAME) -> LeaseState:
    """Take or keep the lease for ``holder`` until ``now + ttl`` if it is free; the lease as it now stands."""
    expires = now + dt.timedelta(seconds=ttl)
    for _ in range(3):
        try:
            with db.transaction() as s:
                taken = s.execute(
                    update(Lease)
                    .where(Lease.name == lease_name, or_(Lease.holder == holder, Lease.expires_at <= now))
                    # Both sides of SET see the row as it was, so the token moves only on a change of holder.
                    .values(
                        token=case((Lease.holder == holder, Lease.token), else_=Lease.token + 1),
                        holder=holder,
                        expires_at=expires,
                    ),
                    execution_options={"synchronize_session": False},
                ).rowcount
                if not taken and read_lease(s, lease_name) is None:
                    s.execute(insert(Lease).values(name=lease_name, holder=holder, token=1, expires_at=expires))
                state = read_lease(s, lease_name)
                assert state is not None
                return state
        except IntegrityError:
            # The other server created the row at the same moment; the UPDATE will see it now.
            continue
    raise RuntimeError(f"could not read or create lease {lease_name!r}")


def release(db: Database, holder: str, now: dt.datetime, lease_name: str = LEASE_NAME) -> bool:
    """Give the lease up now if ``holder`` has it, so the other server need not wait for it to run out."""
    with db.transaction() as s:
        return bool(
            s.execute(
                update(Lease)
                .where(Lease.name == lease_name, Lease.holder == holder, Lease.expires_at > now)
                .values(expires_at=now),
                execution_options={"synchronize_session": False},
            ).rowcount
        )


def beat(
    db: Database, name: str, address: str, role: str, now: dt.datetime, started_at: dt.datetime, detail: dict[str, Any]
) -> None:
    """Upsert this server's heartbeat row."""
    values = {
        "address": address[:128],
        "role": role,
        "started_at": started_at,
        "last_seen": now,
        "detail": json.dumps(detail, sort_keys=True),
    }
    with db.transaction() as s:
        seen = s.execute(
            update(ServerHeartbeat).where(ServerHeartbeat.name == name).values(**values),
            execution_options={"synchronize_session": False},
        ).rowcount
        if not seen:
            s.execute(insert(ServerHeartbeat).values(name=name, **values))


# --- the peer --------------------------------------------------------------------------------


@dataclass
class PeerStatus:
    """What the peer last said about itself (``reachable`` is ``None`` before the first try)."""

    url: str
    reachable: bool | None = None
    name: str | None = None
    role: str | None = None
    db: str | None = None
    checked_at: str | None = None
    error: str | None = None


class _BodyCollector(Protocol):
    """Collects a small response body.  (Twisted's ``readBody`` warns about the proxy transport
    ``Agent`` hands it, and warnings are errors in the tests.)"""

    def __init__(self, done: defer.Deferred[bytes], limit: int) -> None:
        self.done, self.limit = done, limit
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            if self.transport is not None:
                self.transport.stopProducing()
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if self.size > self.limit:
            self.done.errback(ValueError("the answer is too large"))
        elif reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


def quiet_agent(reactor: Any, timeout: float, tls: IPolicyForHTTPS | None = None) -> Agent:
    """An ``Agent`` with a connect timeout whose connections are not logged.

    A connection a second to the peer would otherwise log "Starting factory"
    and "Stopping factory" every second; the pool's factory class is private
    to Twisted, so it is quietened only if it is still where we expect it.
    """
    pool = HTTPConnectionPool(reactor, persistent=False)
    factory = getattr(pool, "_factory", None)
    if isinstance(factory, type):
        pool._factory = _quiet(factory)  # type: ignore[attr-defined]
    if tls is None:
        return Agent(reactor, connectTimeout=timeout, pool=pool)
    from recharge_server.tls import PeerEndpoints

    return Agent.usingEndpointFactory(reactor, PeerEndpoints(reactor, tls, timeout), pool=pool)


@functools.cache
def _quiet(factory: type) -> type:
    return type("Quiet" + factory.__name__.lstrip("_"), (factory,), {"noisy": False})


def fetch_health(
    reactor: Any, url: str, timeout: float, agent: Agent | None = None, limit: int = 65536
) -> defer.Deferred[dict[str, Any]]:
    """GET ``url`` with a time limit and decode its JSON object."""
    agent = agent or quiet_agent(reactor, timeout)
    d = agent.request(b"GET", url.encode("ascii"), None)

    def got(response: Any) -> defer.Deferred[bytes]:
        if response.code != 200:
            response.deliverBody(Protocol())  # read and drop it, so the connection can close
            raise ValueError(f"HTTP {response.code}")
        def cancel(_: defer.Deferred[bytes]) -> None:
            if collector.transport is not None:
                collector.transport.stopProducing()

        collector = _BodyCollector(defer.Deferred(cancel), limit)
        response.deliverBody(collector)
        return collector.done

    def decoded(body: bytes) -> dict[str, Any]:
        obj = json.loads(body)
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        return obj

    d.addCallback(got)
    d.addCallback(decoded)
    d.addTimeout(timeout, reactor)
    return d


class PeerMonitor:
    """Asks the other server's ``/v1/health`` every ``interval`` seconds and keeps its last answer."""

    def __init__(
        self,
        peer_url: str,
        reactor: IReactorTime,
        *,
        interval: float = 1.0,
        timeout: float = 0.8,
        fetch: Callable[[str], defer.Deferred[dict[str, Any]]] | None = None,
        tls: IPolicyForHTTPS | None = None,
    ) -> None:
        """``tls`` is how an ``https://`` peer is checked (``recharge_server.tls.peer_policy``)."""
        self.url = peer_url.rstrip("/") + "/v1/health"
        self.reactor = reactor
        self.interval = interval
        if fetch is None:
            agent = quiet_agent(reactor, timeout, tls)
            fetch = lambda url: fetch_health(reactor, url, timeout, agent)  # noqa: E731
        self.fetch = fetch
        self.current = PeerStatus(url=peer_url)
        self.answered_at: float | None = None  # reactor time of the peer's last answer
        self._loop: LoopingCall | None = None
        self._done: defer.Deferred[Any] | None = None

    def start(self) -> None:
        self._loop = LoopingCall(self.poll)
        self._loop.clock = self.reactor
        self._done = self._loop.start(self.interval, now=True)

    def stop(self) -> defer.Deferred[Any]:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._done if self._done is not None else defer.succeed(None)

    def poll(self) -> defer.Deferred[Any]:
        """One question to the peer; never fails (the loop must go on)."""
        d = defer.maybeDeferred(self.fetch, self.url)
        d.addCallbacks(self._answered, self._unanswered)
        return d

    def _answered(self, health: dict[str, Any]) -> None:
        before = self.current
        self.answered_at = self.reactor.seconds()
        self.current = PeerStatus(
            url=before.url, reachable=True, name=_short(health.get("name")), role=_short(health.get("role")),
            db=_short(health.get("db")), checked_at=utc_at(self.reactor.seconds()).isoformat(timespec="seconds"),
        )
        if before.reachable is not True or before.role != self.current.role:
            log.info("peer {url} is reachable, role {role}", url=before.url, role=self.current.role)

    def _unanswered(self, failure: Failure) -> None:
        before = self.current
        reason = _short(failure.getErrorMessage() or type(failure.value).__name__, 120)
        self.current = PeerStatus(
            url=before.url, reachable=False, checked_at=utc_at(self.reactor.seconds()).isoformat(timespec="seconds"),
            error=reason,
        )
        if before.reachable is not False:
            log.warn("peer {url} is unreachable: {reason}", url=before.url, reason=reason)

    def status(self) -> dict[str, Any]:
        return asdict(self.current)


def _short(value: object, limit: int = 64) -> str | None:
    if value is None:
        return None
    return " ".join(str(value).split())[:limit]


# --- the keeper ------------------------------------------------------------------------------


class LeaseKeeper(Service):
    """Keeps (or waits for) the jobs lease, writes this server's heartbeat, and watches the peer."""

    def __init__(
        self,
        *,
        db: Database,
        name: str,
        address: str,
        reactor: IReactorTime,
        run_blocking: RunBlocking,
        peer: PeerMonitor | None = None,
        ttl: float = 3.0,
        renew_every: float = 1.0,
        lease_name: str = LEASE_NAME,
    ) -> None:
        if not 0 < renew_every < ttl:
            raise ValueError("renew_every must be shorter than the lease's ttl")
        self.db = db
        self.server_name = name
        self.address = address
        self.reactor = reactor
        self.run_blocking = run_blocking
        self.peer = peer
        self.ttl = ttl
        self.renew_every = renew_every
        self.lease_name = lease_name
        # Stop counting ourselves leader a renewal before the lease runs out: one missed renewal is fine.
        self.guard = min(renew_every, ttl / 2)
        self.lease: LeaseState | None = None
        self.token: int | None = None
        self.started_at: dt.datetime | None = None
        self.renewal: LoopingCall | None = None
        self._renewal_done: defer.Deferred[Any] | None = None
        self._valid_until: float | None = None
        self._was_leader = False
        self._leader_since = 0.0
        self._in_pool = False  # a renewal still running in the pool (perhaps past its time limit)

    # --- what the rest of the server asks --------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._valid_until is not None and self.reactor.seconds() < self._valid_until

    @property
    def role(self) -> str:
        return "leader" if self.is_leader else "standby"

    def status(self) -> dict[str, Any]:
        """Role, lease and peer, for ``/v1/health``."""
        out: dict[str, Any] = {"role": self.role, "lease_token": self.token if self.is_leader else None}
        if self.peer is not None:
            out["peer"] = self.peer.status()
        return out

    # --- service ---------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.started_at = utc_at(self.reactor.seconds())
        self.renewal = LoopingCall(self.tick)
        self.renewal.clock = self.reactor
        self._renewal_done = self.renewal.start(self.renew_every, now=True)
        if self.peer is not None:
            self.peer.start()

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        waits = []
        if self.renewal is not None and self.renewal.running:
            self.renewal.stop()
        if self._renewal_done is not None:
            waits.append(self._renewal_done)
        if self.peer is not None:
            waits.append(self.peer.stop())
        yield defer.DeferredList(waits)
        was_leader = self.is_leader
        self._valid_until = None
        d = self.run_blocking(self._sign_off, utc_at(self.reactor.seconds()), self._detail())
        d.addTimeout(self.ttl, self.reactor)
        try:
            yield d
        except Exception as e:
            log.warn("{name}: could not sign off cleanly: {reason}", name=self.server_name, reason=str(e)[:200])
        else:
            if was_leader:
                log.info("{name}: gave the jobs lease up", name=self.server_name)

    def _sign_off(self, now: dt.datetime, detail: dict[str, Any]) -> None:
        release(self.db, self.server_name, now, self.lease_name)
        if self.started_at is not None:
            beat(self.db, self.server_name, self.address, "stopped", now, self.started_at, detail)

    # --- one renewal -----------------------------------------------------------------------

    def tick(self) -> defer.Deferred[None] | None:
        """Take or keep the lease and write the heartbeat; never fails (the loop must go on)."""
        if self._in_pool:
            log.warn("{name}: the last lease renewal is still running; skipping one", name=self.server_name)
            self._note_role()
            return None
        started = self.reactor.seconds()
        self._in_pool = True
        d = self.run_blocking(self._renew_and_beat, utc_at(started), self._detail())
        d.addTimeout(self.ttl / 2, self.reactor)
        d.addCallbacks(self._renewed, self._not_renewed, callbackArgs=(started,))
        return d

    def _renew_and_beat(self, now: dt.datetime, detail: dict[str, Any]) -> LeaseState:
        try:
            state = try_acquire(self.db, self.server_name, now, self.ttl, self.lease_name)
            role = "leader" if state.holder == self.server_name else "standby"
            assert self.started_at is not None
            try:
                beat(self.db, self.server_name, self.address, role, now, self.started_at, detail)
            except Exception as e:  # the heartbeat is for people; the lease is what matters
                log.warn("{name}: heartbeat not written: {reason}", name=self.server_name, reason=str(e)[:200])
            return state
        finally:
            self._in_pool = False

    def _renewed(self, state: LeaseState, started: float) -> None:
        self.lease = state
        if state.holder == self.server_name:
            self._valid_until = started + self.ttl - self.guard
            self.token = state.token
        else:
            self._valid_until = None
        self._note_role()

    def _not_renewed(self, failure: Failure) -> None:
        # Keep whatever validity we had: it lapses by itself if this goes on.
        log.warn(
            "{name}: lease renewal failed: {reason}", name=self.server_name,
            reason=" ".join((failure.getErrorMessage() or type(failure.value).__name__).split())[:200],
        )
        self._note_role()

    def _note_role(self) -> None:
        leader = self.is_leader
        if leader and not self._was_leader:
            log.info("{name}: now the leader (fencing token {token})", name=self.server_name, token=self.token)
        elif self._was_leader and not leader:
            log.warn("{name}: no longer the leader", name=self.server_name)
        if leader and not self._was_leader:
            self._leader_since = self.reactor.seconds()
        peer = self.peer
        if (
            leader and peer is not None and peer.current.role == "leader"
            and peer.answered_at is not None and peer.answered_at > self._leader_since
        ):
            log.error("{name}: the peer also says it is the leader; check both clocks", name=self.server_name)
        self._was_leader = leader

    def _detail(self) -> dict[str, Any]:
        out: dict[str, Any] = {"token": self.token if self.is_leader else None}
        if self.peer is not None:
            out["peer"] = self.peer.status()
        return out
