#!/usr/bin/env python
"""Benchmark: what TLS costs a call - the AGI's imports, the handshake, a request on a kept connection.

The recharge API here is the real Twisted one (``testkit.live_api.serve_api``)
with a stub recharge core, so the figures are TLS and HTTP alone, without
the database or the marketing system.  Measured, each as the median of
``--rounds`` runs:

- the import a call pays before its first prompt: a fresh
  ``python3 -I -S -c 'import ivr.agi_main'`` against the same without
  ``ssl`` imported (``ssl`` is now among the AGI's imports), in ms of wall time;
- the client's TLS context (``ivr.client.tls_context``: loading the CA);
- a call's first request on a new connection (TCP + TLS handshake +
  ``/v1/account``) and a request on the kept connection, for TLS and for a
  plain listener (``--plain``-style: the same site on ``TCP4ServerEndpoint``,
  what the servers were before); wall ms, and the client's and the server
  process's CPU per new connection (both ends run in this process: the
  server on its own reactor thread, so CPU is the process's, summed).

Run (seconds, no root, no PostgreSQL)::

    .venv/bin/python bench/bench_tls.py
    .venv/bin/python bench/bench_tls.py --record      # append the results to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as bl

ROOT = bl.ROOT


def _import_ms(code: str, rounds: int, root: Path = ROOT) -> float:
    """Median wall ms of a fresh interpreter running ``code`` with the AGI's path (no site, as under Asterisk)."""
    import asterisk
    import six

    path = [str(root), str(Path(asterisk.__path__[0]).parent), str(Path(six.__file__).parent)]
    probe = f"import sys; sys.path[:0] = {path!r}; {code}"
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-S", "-c", probe], check=True, cwd="/")
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _connections(reactor: Any, db: Any, key: bytes, tls: bool, rounds: int) -> dict[str, float]:
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.internet.threads import blockingCallFromThread

    from ivr.client import RechargeClient
    from recharge_server import api as server_api
    from testkit.live_api import StubRecharge, client_tls, serve_api

    if tls:
        context = client_tls()
        with serve_api(reactor, db, StubRecharge(), key) as live:
            return _measure(lambda: RechargeClient([live.address], key, tls=context, timeout=2, total_timeout=4), rounds)
    # Plain: the same site on a plain listener, and a client whose "TLS" is no wrapping at all.
    api = server_api.RechargeAPI(
        name="A", client_key=lambda n: key, clients=lambda n: _hotline(), recharge=StubRecharge(db=db),
        run_blocking=_pool_runner(reactor), reactor=reactor,
    )
    port = blockingCallFromThread(
        reactor, lambda: TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server_api.make_site(api, reactor))
    )
    try:
        address = ("127.0.0.1", port.getHost().port)
        return _measure(lambda: RechargeClient([address], key, tls=_NoTLS(), timeout=2, total_timeout=4), rounds)
    finally:
        blockingCallFromThread(reactor, port.stopListening)


class _NoTLS:
    """Stands in for an ``ssl.SSLContext``: hands the plain socket back (what the client did before TLS)."""

    def wrap_socket(self, sock: Any, server_hostname: str | None = None) -> Any:
        return sock


def _hotline() -> Any:
    from cardmgmt.channel_clients import ClientEntry

    return ClientEntry("hotline", "hotline", False)


def _pool_runner(reactor: Any) -> Any:
    from functools import partial

    from twisted.internet.threads import deferToThreadPool
    from twisted.python.threadpool import ThreadPool

    pool = ThreadPool(minthreads=0, maxthreads=4, name="bench-tls")
    pool.start()
    return partial(deferToThreadPool, reactor, pool)


def _measure(make_client: Any, rounds: int) -> dict[str, float]:
    first, kept = [], []
    cpu0 = time.process_time()
    for i in range(rounds):
        with make_client() as client:
            t0 = time.perf_counter()
            assert client.account(call_id=f"b{i}", account_no="3100000001")["outcome"] == "ok"
            t1 = time.perf_counter()
            assert client.account(call_id=f"b{i}", account_no="3100000001")["outcome"] == "ok"
            t2 = time.perf_counter()
        first.append((t1 - t0) * 1000)
        kept.append((t2 - t1) * 1000)
    cpu = (time.process_time() - cpu0) * 1000 / rounds
    return {"first": statistics.median(first), "kept": statistics.median(kept), "cpu": cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="connections per kind (default %(default)s)")
    parser.add_argument("--import-rounds", type=int, default=30, help="interpreter starts per kind (default %(default)s)")
    parser.add_argument("--compare-root", type=Path, metavar="DIR",
                        help="another checkout (e.g. `git archive` of main before TLS) whose `import ivr.agi_main` is timed too")
    parser.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    args = parser.parse_args(argv)
    machine = bl.machine_summary(None)

    bl.log("timing the AGI's imports")
    without_ssl = _import_ms("import sys; sys.modules['ssl'] = None; import ivr.dialog, ivr.agi_channel, asterisk.agi", args.import_rounds)
    bare = _import_ms("pass", args.import_rounds)
    ssl_only = _import_ms("import ssl", args.import_rounds)
    agi = _import_ms("import ivr.agi_main", args.import_rounds)
    before = _import_ms("import ivr.agi_main", args.import_rounds, args.compare_root) if args.compare_root else None
    from ivr.client import tls_context
    from testkit.live_api import tls_test_certificates

    ca = str(tls_test_certificates() / "tls-ca.pem")
    t0 = time.perf_counter()
    for _ in range(args.rounds):
        tls_context(ca)
    context_ms = (time.perf_counter() - t0) * 1000 / args.rounds

    from cardmgmt.db import Database, make_engine, upgrade
    from testkit.live_api import running_reactor

    with tempfile.TemporaryDirectory(prefix="bench-tls-") as d:
        url = f"sqlite:///{d}/cards.db"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        db = Database(url)
        key = os.urandom(32)
        results = {}
        with running_reactor() as reactor:
            for kind in ("plain", "tls", "plain", "tls"):  # interleaved: the machine's load hits both alike
                bl.log(f"{kind}: {args.rounds} connections")
                got = _connections(reactor, db, key, kind == "tls", args.rounds)
                results.setdefault(kind, []).append(got)
        db.dispose()

    def best(kind: str, field: str) -> float:
        return min(r[field] for r in results[kind])

    rows = [
        ("python -I -S -c pass (an interpreter's start)", f"{bare:.1f}"),
        ("... import ssl", f"{ssl_only:.1f} (+{ssl_only - bare:.1f})"),
        ("... import ivr.agi_main (ssl included)", f"{agi:.1f}"),
        ("... the AGI's modules without ssl", f"{without_ssl:.1f}"),
        *([(f"... import ivr.agi_main of {args.compare_root} (plain HTTP)", f"{before:.1f}")] if before is not None else []),
        ("tls_context(ca_file), once per call", f"{context_ms:.2f}"),
    ]
    conn_rows = [
        (kind, f"{best(kind, 'first'):.2f}", f"{best(kind, 'kept'):.2f}", f"{best(kind, 'cpu'):.2f}")
        for kind in ("plain", "tls")
    ]
    body = (
        "What a call pays for TLS, apart from the database (`bench/bench_tls.py`; stub recharge core, both ends in one "
        "process, the server on its own reactor thread).  Import times: median wall ms of a fresh `python3 -I -S` over "
        f"{args.import_rounds} starts.  Connections: {args.rounds} per kind, two interleaved runs each, the better one; "
        "first = a call's first request on a new connection (TCP, TLS handshake, `/v1/account`), kept = the next request "
        "on it; CPU = the process's CPU (client and server) per connection with its two requests.\n\n"
        + bl.markdown_table(["AGI start", "ms"], [list(r) for r in rows]) + "\n\n"
        + bl.markdown_table(["listener", "first request ms", "kept-connection request ms", "CPU ms per connection"], [list(r) for r in conn_rows])
    )
    print(body)
    if args.record:
        command = "bench/bench_tls.py " + " ".join(argv if argv is not None else sys.argv[1:])
        bl.record("bench_tls: what TLS costs a call", command.strip(), body, None, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
