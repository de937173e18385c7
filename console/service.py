"""Wiring the console: its TLS listener (the installation's own certificate), its thread pool, its card system.

``makeService`` builds a ``ConsoleServer`` from a ``Settings`` and a reactor;
nothing listens until ``startService``.  It refuses at once (``CardError``,
one line) a database not at the newest schema, a key directory that is not
this database's, and an installation without its TLS certificate (``cli.py
keys tls``).  ``run`` is what ``cli.py console`` calls.
"""

# test-case-name: tests.console.test_web

import datetime as dt
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from cardmgmt.config import Settings
from cardmgmt.console_sessions import Policy
from cardmgmt.models import utcnow
from cardmgmt.system import CardSystem, check_keyring
from console.resource import ConsoleResource, ConsoleSite
from console.web import Console
from recharge_server.service import HTTPListener
from recharge_server.tls import server_endpoint, server_options

log = Logger(namespace="console.service")

THREADS = 4
LISTEN_BACKLOG = 128


class ConsoleServer(Service):
    """The console's listener and thread pool, started and stopped together."""

    def __init__(self, system: CardSystem, pool: ThreadPool, http: HTTPListener, console: Console, host: str) -> None:
        self.system, self.pool, self.http, self.console, self.host = system, pool, http, console, host

    @property
    def port(self) -> int | None:
        return self.http.port.getHost().port if self.http.port is not None else None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def startService(self) -> None:
        super().startService()
        self.pool.start()
        try:
            self.http.startService()
        except BaseException:
            self.pool.stop()
            raise
        log.info("web console listening on {url}", url=self.url)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        if self.http.running:
            yield self.http.stopService()
        self.pool.stop()
        self.system.close()


def makeService(
    settings: Settings, host: str, port: int, reactor: Any, *,
    policy: Policy | None = None, now: Callable[[], dt.datetime] = utcnow, threads: int = THREADS,
) -> ConsoleServer:
    """The console on ``host``:``port`` with TLS, ready to start."""
    tls = server_options(settings.key_dir)
    system = CardSystem(settings)
    try:
        system.db.check_schema()
        with system.db.transaction() as session:
            check_keyring(session, system.keys())
    except BaseException:
        system.close()
        raise
    console = Console(system, policy=policy, now=now)
    pool = ThreadPool(minthreads=0, maxthreads=threads, name="console")
    resource = ConsoleResource(console, partial(deferToThreadPool, reactor, pool))
    site = ConsoleSite(resource)
    site.displayTracebacks = False
    http = HTTPListener(server_endpoint(reactor, host, port, tls, LISTEN_BACKLOG), site, f"{host}:{port}")
    return ConsoleServer(system, pool, http, console, host)


def run(settings: Settings, host: str, port: int) -> None:
    """Run the console in this process until it is stopped (SIGINT or SIGTERM)."""
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    server = makeService(settings, host, port, reactor)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    server.startService()
    reactor.addSystemEventTrigger("before", "shutdown", server.stopService)
    reactor.run()  # type: ignore[attr-defined]
