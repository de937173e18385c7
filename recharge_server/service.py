"""Wiring one recharge server together, running it, and reading both servers' state for ``ha status``.

``makeService`` builds the parts (thread pool, HTTP API — the recharge
endpoints and the sales-point API for POS terminals — on its TLS endpoint,
the channel-client table kept fresh, lease keeper, background jobs) from a ``Settings`` and a reactor, and returns
one ``RechargeServer`` service that starts them in order and stops them in
the reverse order: stop listening, stop the jobs, give the lease up, drain
the thread pool, close the databases.  ``run`` is what ``cli.py serve`` calls;
``twistd recharge`` goes through ``twisted/plugins/recharge_plugin.py``.
"""

# test-case-name: tests.recharge_server.test_service

import datetime as dt
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import text
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Site

from cardmgmt import audit, channel_clients, ha, nonces
from cardmgmt.config import Settings
from cardmgmt.db import Database, database_hosts, probe_hosts
from cardmgmt.errors import CardError
from cardmgmt.keys import load_keyring
from cardmgmt.system import check_keyring
from cardmgmt.terminals import SalesPoint
from recharge_server.api import RechargeAPI, make_site
from recharge_server.jobs import Job, JobRunner, standard_jobs
from recharge_server.leadership import LeaseKeeper, PeerMonitor
from recharge_server.metrics import Metrics
from recharge_server.tls import peer_policy, server_endpoint, server_options

log = Logger(namespace="recharge_server.service")

UTC = dt.UTC
# The operator's listener (metrics, the full health answer) is never on the network.
OPS_HOST = "127.0.0.1"


class ServerStartError(CardError):
    """A recharge server could not start (its port is taken, say)."""

    code = "server_start"
    http_status = 503  # never answered over HTTP: the server did not start
    exit_code = 1


@dataclass(frozen=True)
class ServerOptions:
    """The server's own tunables; the defaults are the ones the architecture asks for."""

    lease_ttl: float = 3.0
    renew_every: float = 1.0
    request_timeout: float = 2.0
    # A POS terminal's sale (cardmgmt.terminals): a box or a range in one transaction; repeating it is safe.
    sale_timeout: float = 10.0
    # Measured (bench/RESULTS.md): 8 threads give the pair a lower latency
    # tail than 16 at the same rate; each holds one database connection.
    threads: int = 8
    # Admission control (recharge_server.api): at most this many recharge
    # requests queued for the pool or running in it; more are refused at
    # once (503 busy) so that the client tries the other server within its
    # round instead of waiting past it.  A pool thread plus a short queue:
    # measured on a quiet 2-core machine (bench/RESULTS.md), 10 kept the
    # pair's goodput at 200 closed-loop callers higher than 24 did, and 8
    # with 4 threads lower.
    max_in_flight: int = 10
    # A request still queued this long is refused busy when its turn comes.
    # The client waits 0.5 s per server, and the reactor can hold a request
    # or its answer unseen for up to a further ~0.2 s under overload (the
    # "reactor late" log lines), so work started later is answered to nobody.
    shed_after: float = 0.2
    max_skew: float = 30.0
    # The revocation bound (cardmgmt.channel_clients): reload the client table this often, trust it this long.
    client_refresh: float = channel_clients.REFRESH_SECONDS
    client_max_age: float = channel_clients.MAX_AGE_SECONDS


class ClientTableRefresher(Service):
    """Reloads the channel-client table into ``registry`` every ``interval`` seconds, in the thread pool."""

    def __init__(
        self, registry: channel_clients.ClientRegistry, interval: float, run_blocking: Any, reactor: Any
    ) -> None:
        self.registry, self.interval, self.run_blocking, self.reactor = registry, interval, run_blocking, reactor
        self._loop: LoopingCall | None = None
        self._done: defer.Deferred[Any] | None = None
        self._failing = False
        self._in_pool = False  # a reload still running (perhaps past its time limit): not started twice

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self.reactor
        self._done = self._loop.start(self.interval, now=False)

    def stopService(self) -> defer.Deferred[Any]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._done if self._done is not None else defer.succeed(None)

    def tick(self) -> defer.Deferred[None] | None:
        """One reload; never fails (the loop must go on).  Past ``max_age`` without one, requests get 503."""
        if self._in_pool:
            return None
        self._in_pool = True
        d = self.run_blocking(self._refresh)
        d.addTimeout(self.interval, self.reactor)
        d.addCallbacks(self._done_ok, self._failed)
        return d

    def _refresh(self) -> None:
        try:
            self.registry.refresh()
        finally:
            self._in_pool = False

    def _done_ok(self, _: object) -> None:
        if self._failing:
            log.info("the channel-client table is readable again")
        self._failing = False

    def _failed(self, failure: Failure) -> None:
        if not self._failing:
            log.warn("the channel-client table could not be reloaded: {reason}",
                     reason=" ".join((failure.getErrorMessage() or type(failure.value).__name__).split())[:200])
        self._failing = True


def _client_snapshot(db: Database) -> dict[str, channel_clients.ClientEntry]:
    with db.transaction() as s:
        return channel_clients.snapshot(s)


class HTTPListener(Service):
    """Listens with ``factory`` on ``endpoint``; a failure to listen is raised at once, not logged later."""

    def __init__(self, endpoint: IStreamServerEndpoint, factory: Site, description: str) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.description = description
        self.port: IListeningPort | None = None

    def listen(self) -> None:
        if self.port is not None:
            return
        outcome: list[Any] = []
        self.endpoint.listen(self.factory).addBoth(outcome.append)
        if not outcome:
            raise ServerStartError(f"listening on {self.description} did not finish at once")
        if isinstance(outcome[0], Failure):
            raise ServerStartError(f"cannot listen on {self.description}: {outcome[0].getErrorMessage()}")
        self.port = outcome[0]

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self.listen()

    def startService(self) -> None:
        super().startService()
        self.listen()

    def stopService(self) -> defer.Deferred[Any]:
        super().stopService()
        port, self.port = self.port, None
        return defer.maybeDeferred(port.stopListening) if port is not None else defer.succeed(None)


class RechargeServer(Service):
    """One recharge server: its parts, started in order and stopped in the reverse order."""

    def __init__(
        self,
        *,
        name: str,
        host: str,
        db: Database,
        marketing: Any,
        pool: ThreadPool,
        http: HTTPListener,
        keeper: LeaseKeeper,
        jobs: JobRunner,
        api: RechargeAPI,
        clients: ClientTableRefresher,
        ops: HTTPListener | None = None,
    ) -> None:
        self.setName(name)
        self.host = host
        self.db, self.marketing, self.pool = db, marketing, pool
        self.http, self.keeper, self.jobs, self.api = http, keeper, jobs, api
        self.clients = clients
        self.ops = ops

    @property
    def port(self) -> int | None:
        """The TCP port it listens on (useful when it was asked for port 0)."""
        return self.http.port.getHost().port if self.http.port is not None else None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self.http.privilegedStartService()
        if self.ops is not None:
            self.ops.privilegedStartService()

    def startService(self) -> None:
        super().startService()
        self.pool.start()
        self.clients.startService()
        self.http.startService()
        if self.ops is not None:
            self.ops.startService()
        self.keeper.address = self.url
        self.keeper.startService()
        self.jobs.startService()
        log.info("recharge server {name} listening on {url}", name=self.name, url=self.url)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        for part in (self.http, self.ops, self.jobs, self.keeper, self.clients):
            if part is None:
                continue
            if part.running:
                try:
                    yield part.stopService()
                except Exception:
                    log.failure("stopping {part} failed", part=type(part).__name__)
        self.pool.stop()
        _close(self.marketing)
        self.db.dispose()
        log.info("recharge server {name} stopped", name=self.name)


def _close(thing: Any) -> None:
    for method in ("dispose", "close"):
        f = getattr(thing, method, None)
        if callable(f):
            f()
            return


def _ping(db: Database) -> None:
    with db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _backlog(db: Database) -> dict[str, object]:
    from marketing_iface import outbox

    with db.transaction() as s:
        return dict(outbox.backlog(s))


SWITCH_INTERVAL = 0.001  # seconds; see run()
GC_PAUSE_LOGGED = 0.005  # seconds: a collection this long is logged (it stalls every request of the process)
REACTOR_LAG_LOGGED = 0.05  # seconds: a timer this late is logged (requests wait unseen meanwhile)


class _GcWatch:
    """Logs every garbage collection that stops the process for ``GC_PAUSE_LOGGED`` or longer."""

    def __init__(self) -> None:
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        if took >= GC_PAUSE_LOGGED:
            log.info("gc pause generation={generation} ms={ms:.1f} collected={collected}",
                     generation=info.get("generation"), ms=took * 1000, collected=info.get("collected"))


class _ReactorLag:
    """Logs every time the reactor thread ran a timer ``REACTOR_LAG_LOGGED`` or more late.

    The reactor reads every request and writes every answer: while it is late
    (starved of the CPU or of the interpreter lock) requests wait in socket
    buffers where no server-side timing sees them.
    """

    def __init__(self, reactor: Any, every: float = 0.05, clock: Callable[[], float] = time.monotonic) -> None:
        self.reactor, self.every, self.clock = reactor, every, clock
        self._due = 0.0

    def start(self) -> None:
        self._due = self.clock() + self.every
        self.reactor.callLater(self.every, self._tick)

    def _tick(self) -> None:
        now = self.clock()
        late = now - self._due
        if late >= REACTOR_LAG_LOGGED:
            log.info("reactor late ms={ms:.1f}", ms=late * 1000)
        self._due = now + self.every
        self.reactor.callLater(self.every, self._tick)


# Twisted's default listen backlog is 50: a burst of callers (every AGI host
# failing over at once) would see connections reset before the server runs.
LISTEN_BACKLOG = 1024


def check_peer_url(url: str) -> str:
    """The peer's base URL, which must be ``https://``: the servers speak TLS only."""
    if not url.startswith("https://"):
        raise ServerStartError(f"the peer's URL {url[:80]!r} must start with https:// (the servers speak TLS only)")
    return url


def open_marketing(settings: Settings) -> Any:
    """The marketing system named by ``settings``, its mapping checked against its database.

    A mapping that is malformed or names a table or column the database
    lacks refuses the start (``ServerStartError``, one line); a marketing
    database that cannot be reached now is an outage to ride out: logged,
    and the start goes on (quotes answer "unavailable", the outbox retries).
    """
    from cardmgmt.marketing import MappingError, MarketingUnavailable
    from marketing_iface.sql import SqlMarketing

    try:
        marketing = SqlMarketing(settings.marketing_url, mapping=settings.marketing_mapping)
    except MappingError as e:
        raise ServerStartError(f"marketing mapping: {e}") from None
    try:
        marketing.check()
    except MappingError as e:
        marketing.close()
        raise ServerStartError(f"marketing mapping: {e}") from None
    except MarketingUnavailable as e:
        log.warn("marketing mapping not checked at start-up: {error}", error=str(e))
    return marketing


def makeService(
    settings: Settings,
    name: str,
    listen_host: str,
    listen_port: int,
    peer_url: str | None,
    reactor: Any,
    *,
    options: ServerOptions = ServerOptions(),
    marketing: Any = None,
    recharge: Any = None,
    jobs: list[Job] | None = None,
    ops_port: int | None = None,
    shared_port: bool = False,
) -> RechargeServer:
    """One recharge server, ready to start: nothing listens or runs until ``startService``.

    ``ops_port`` adds the operator's listener (``/metrics`` and the full
    ``/v1/health``) on ``OPS_HOST``, plain HTTP: loopback only, never the network.
    ``shared_port`` lets other server processes of this host (each with a name
    of its own) listen on the same port (``recharge_server.tls.shared_socket``).

    Refuses (``CardError``) a database not at the newest schema, a key
    directory that is not this database's, or one without the TLS
    certificate (saying to run ``cli.py keys tls``).  ``marketing``, ``recharge`` and
    ``jobs`` replace the real ones (tests).
    """
    tls_options = server_options(settings.key_dir)
    peer_trust = peer_policy(settings.key_dir) if peer_url else None
    if peer_url:
        check_peer_url(peer_url)
    # A connection for every pool thread; no liveness test per request (a
    # request on a connection broken meanwhile is a 503 the client fails over on).
    db = Database(settings.database_url, pool_size=options.threads, pre_ping=False)
    try:
        db.check_schema()
        warn_unreachable_hosts(settings.database_url)
        keys = load_keyring(settings.key_dir)
        with db.transaction() as s:
            check_keyring(s, keys)
        if marketing is None:
            marketing = open_marketing(settings)
        from cardmgmt.recharge import Policy, RechargeService

        policy = Policy.from_settings(settings)
        if recharge is None:
            recharge = RechargeService(db, marketing, keys.pin_key, policy)
        sales = SalesPoint(db, keys, settings.audit_anchor_file)
        registry = channel_clients.ClientRegistry(partial(_client_snapshot, db), reactor.seconds, options.client_max_age)
        registry.refresh()  # before listening: the first request already needs it
    except BaseException:
        db.dispose()
        raise

    pool = ThreadPool(minthreads=0, maxthreads=options.threads, name=f"recharge-{name}")
    run_blocking = partial(deferToThreadPool, reactor, pool)
    metrics = Metrics()
    peer = PeerMonitor(peer_url, reactor, interval=options.renew_every, tls=peer_trust) if peer_url else None
    keeper = LeaseKeeper(
        db=db, name=name, address=f"https://{listen_host}:{listen_port}", reactor=reactor, run_blocking=run_blocking,
        peer=peer, ttl=options.lease_ttl, renew_every=options.renew_every,
    )
    if jobs is None:
        from cardmgmt import lockouts

        def watch_guard(now: dt.datetime) -> bool:
            status = lockouts.watch_guard(db, keys, policy, settings.audit_anchor_file, f"server {name}", now)
            return metrics.guard_seen(status)

        from marketing_iface.outbox import PostingLog

        def anchor(seq: int, entry_hash: str) -> None:
            audit.anchor(settings.audit_anchor_file, keys.system_private, keys.fingerprint, seq, entry_hash)

        jobs = standard_jobs(
            db=db, recharge=recharge, marketing=marketing, prune_nonces=partial(nonces.prune, db), watch_guard=watch_guard,
            journal=PostingLog(keys.audit_key, f"server {name}", anchor),
        )
    runner = JobRunner(
        jobs, is_leader=lambda: keeper.is_leader, run_blocking=run_blocking, reactor=reactor, metrics=metrics
    )
    # The API and the operator's listener answer from the same server: one set of parts.
    parts: dict[str, Any] = dict(
        name=name, client_key=keys.channel_client_key, clients=registry.lookup, recharge=recharge,
        run_blocking=run_blocking, reactor=reactor,
        metrics=metrics, status=keeper.status, db_ping=partial(_ping, db), backlog=partial(_backlog, db),
        request_timeout=options.request_timeout, max_skew=options.max_skew, max_in_flight=options.max_in_flight,
        shed_after=options.shed_after,
        sales=sales, sale_timeout=options.sale_timeout,
    )
    api = RechargeAPI(**parts)
    http = HTTPListener(
        server_endpoint(reactor, listen_host, listen_port, tls_options, LISTEN_BACKLOG, shared=shared_port),
        make_site(api, reactor),
        f"{listen_host}:{listen_port}",
    )
    ops = None
    if ops_port is not None:
        # Metrics and the full health answer: plain HTTP, on the loopback address only.
        ops_api = RechargeAPI(**parts, ops=True)
        ops = HTTPListener(TCP4ServerEndpoint(reactor, ops_port, interface=OPS_HOST), make_site(ops_api, reactor),
                           f"{OPS_HOST}:{ops_port} (ops)")
    refresher = ClientTableRefresher(registry, options.client_refresh, run_blocking, reactor)
    return RechargeServer(
        name=name, host=listen_host, db=db, marketing=marketing, pool=pool, http=http, keeper=keeper, jobs=runner,
        api=api, clients=refresher, ops=ops,
    )


def warn_unreachable_hosts(url: str) -> list[str]:
    """One warning line per host of a replicated card database that does not answer (a standby down at start).

    The server starts anyway: the writable host is what it needs, and the
    standby's keeper brings it back; but whoever starts it should know that
    the database has no failover until then.  Returns the lines.
    """
    if len(database_hosts(url)) < 2:
        return []
    lines = [f"database host {host} {state}; the card database has no standby to fail over to until it is back"
             for host, state in probe_hosts(url).items() if state.startswith("unreachable")]
    for line in lines:
        log.warn("{line}", line=line)
    return lines


def run(
    settings: Settings, name: str, port: int, peer: str | None, host: str = "127.0.0.1", ops_port: int | None = None,
    shared_port: bool = False,
) -> None:
    """Run one recharge server in this process until it is stopped (SIGINT or SIGTERM)."""
    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    server = makeService(settings, name, host, port, peer, reactor, ops_port=ops_port, shared_port=shared_port)
    try:
        server.privilegedStartService()
    except BaseException:
        server.db.dispose()
        _close(server.marketing)
        raise
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stdout), [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)]
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    # Everything made while starting (modules, SQLAlchemy's statement caches)
    # lives as long as the process: keep it out of the collector's full
    # passes, which would otherwise stall every request for tens of ms.
    gc.collect()
    gc.freeze()
    # The reactor thread gives the interpreter lock up at every socket call and
    # then waits for a pool thread to hand it back, by default up to 5 ms each
    # time: under load the reactor, which reads every request and writes every
    # answer, falls behind the pool it feeds.  1 ms keeps it in step (measured
    # in bench/RESULTS.md).
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.callbacks.append(_GcWatch())
    reactor.callWhenRunning(_ReactorLag(reactor).start)
    reactor.callWhenRunning(server.startService)
    reactor.addSystemEventTrigger("before", "shutdown", server.stopService)
    reactor.run()


def ha_status(settings: Settings, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Every recharge server that has ever beaten, with its last heartbeat and the jobs lease (no operator needed)."""
    db = Database(settings.database_url)
    try:
        with db.transaction() as s:
            return ha.servers(s, now or dt.datetime.now(UTC))
    finally:
        db.dispose()

