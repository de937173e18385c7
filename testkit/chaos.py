"""Killing parts of a running installation on purpose: the leading recharge server, the database primary; and waiting.

Shared by the integration tests of the server pair and of database
failover, and by the failover benchmark.  ``leader`` asks each live server
of an installation (``testkit.install.Installation``) for its role;
``kill_leading_server`` and ``kill_db_primary`` kill -9 a part and return
the kill's moment (``time.monotonic()``) with a ``restore`` function that
brings the part back.  Restoring the database primary also checks, sampling
every 50 ms while the old primary restarts, that it never takes writes
(it rejoins as the standby) and that the topology is whole again.
"""

# test-case-name: tests.integration.test_db_failover, tests.integration.test_server_pair

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from ivr.client import tls_context
from testkit.pair import Server


def wait_for(predicate: Callable[[], Any], timeout: float, step: float = 0.1) -> Any:
    """The predicate's first true value within ``timeout`` seconds (else its last value)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def health(server: Server) -> dict[str, Any]:
    context = tls_context(str(server.env["CARDS_KEY_DIR"] + "/tls-ca.pem"))
    with urllib.request.urlopen(f"https://127.0.0.1:{server.port}/v1/health", timeout=1, context=context) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def leader(inst: Any) -> Server | None:
    """The installation's server that says it leads the jobs, if any answers so."""
    for s in inst.servers:
        if s.alive:
            try:
                if health(s).get("role") == "leader":
                    return s
            except OSError:
                pass
    return None


def kill_leading_server(inst: Any) -> tuple[float, Callable[[], None]]:
    victim = wait_for(lambda: leader(inst), 10)
    assert victim is not None, "a server leads"
    at = time.monotonic()
    victim.kill()

    def restore() -> None:
        victim.start()
        victim.wait_ready()

    return at, restore


def kill_db_primary(inst: Any) -> tuple[float, Callable[[], None]]:
    """kill -9 the primary of ``inst.topology`` (a ``testkit.dbcluster.DbTopology``)."""
    topo = inst.topology
    old = topo.primary()
    assert old is not None and topo.healthy(), topo.states()
    killed_at = topo.kill(old)

    def restore() -> None:
        samples: list[bool | None] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                samples.append(topo.writable(old))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            topo.restart(old)
            topo.wait_healthy(90)
        finally:
            stop.set()
            watcher.join()
        assert topo.primary() != old, "the promoted standby stays primary"
        assert True not in samples, "the old primary never takes writes again"
        assert False in samples, "the old primary answered, read-only"

    return killed_at, restore
