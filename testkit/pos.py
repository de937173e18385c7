"""POS terminals for tests: register one at a hall, serve the sales-point API, sign and send a sale.

``serve_sales`` puts a ``RechargeAPI`` with the real ``SalesPoint`` on a
loopback TLS port of a live reactor (``testkit.live_api.serve_api``), over a
``Bench``'s installation: its keys, its client table (read through a real
``ClientRegistry``; call ``LiveSales.refresh`` after adding or revoking a
client, as a server's refresher would).  ``terminal`` registers a POS
terminal at a hall and returns its key; ``sell`` signs a sale as a terminal
and sends it, once; ``SalesPointClient`` (``recharge_server.sales_point``)
is the client that also fails over.
"""

# test-case-name: tests.recharge_server.test_sales_api

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cardmgmt import channel_clients
from cardmgmt.channel_clients import ClientRegistry
from cardmgmt.context import Permission
from cardmgmt.db import Database
from cardmgmt.terminals import SalesPoint
from ivr import protocol
from recharge_server.sales_point import PATH
from testkit.lifecycle import Bench
from testkit.live_api import LiveAPI, StubRecharge, send, serve_api


def terminal(bench: Bench, name: str, hall: str | None = "H01", channel: str = "pos") -> bytes:
    """Register channel client ``name`` (a POS terminal at ``hall``); its signing key."""
    with bench.unit(Permission.MANAGE_CLIENTS) as ctx:
        return channel_clients.add(ctx, name, channel, hall=hall)


def revoke(bench: Bench, name: str) -> None:
    with bench.unit(Permission.MANAGE_CLIENTS) as ctx:
        channel_clients.revoke(ctx, name, "terminal lost")


@dataclass
class LiveSales:
    """A sales-point API being served, and the registry it checks clients against."""

    live: LiveAPI
    registry: ClientRegistry

    @property
    def port(self) -> int:
        return self.live.port

    def refresh(self) -> None:
        """Reload the client table now (a server does it every 2 s)."""
        self.registry.refresh()


@contextmanager
def serve_sales(reactor: Any, bench: Bench, *, name: str = "A", threads: int = 8, **kw: Any) -> Iterator[LiveSales]:
    """The sales-point API of ``bench``'s installation on a loopback TLS port; ``kw`` goes to ``RechargeAPI``."""
    settings = bench.system.settings
    db = Database(settings.database_url, pool_size=threads)
    keys = bench.system.keys()

    def load() -> dict[str, channel_clients.ClientEntry]:
        with db.transaction() as s:
            return channel_clients.snapshot(s)

    registry = ClientRegistry(load, time.monotonic, max_age=float("inf"))
    registry.refresh()
    try:
        with serve_api(reactor, db, StubRecharge(), b"unused", name=name, client_key=keys.channel_client_key,
                       clients=registry.lookup, sales=SalesPoint(db, keys, settings.audit_anchor_file),
                       threads=threads, **kw) as live:
            yield LiveSales(live, registry)
    finally:
        db.dispose()


def signed_sale(key: bytes, client: str, payload: Any, raw: bytes | None = None) -> tuple[bytes, dict[str, str]]:
    """A sale's body and the headers that sign it as terminal ``client``."""
    body = raw if raw is not None else json.dumps(payload).encode()
    return body, protocol.sign(key, "POST", PATH, body, time.time(), client=client) | {"Content-Type": "application/json"}


def sell(port: int, key: bytes, client: str, payload: Any) -> tuple[int, dict[str, Any]]:
    """One signed sale to the listener on ``port``; its status and JSON answer."""
    body, headers = signed_sale(key, client, payload)
    status, raw, _ = send(port, "POST", PATH, body, headers)
    return status, json.loads(raw)
