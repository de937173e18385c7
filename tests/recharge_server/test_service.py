"""End-to-end tests of a pair of recharge servers built by ``makeService``, with the real recharge core.

Two servers run in one live reactor on loopback ports, over the real card
database (SQLite and PostgreSQL) with issued cards, and a ``NullMarketing``
stand-in for the marketing system.  The AGI client drives them; server A is
stopped half way and the same commit is answered by B, which also takes over
the jobs lease and posts the recharge through the outbox.
"""

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import formatEvent, globalLogPublisher

from cardmgmt.errors import KeyFileError
from cardmgmt.keys import load_api_key
from cardmgmt.marketing import Account
from cardmgmt.recharge import Outcome
from cardmgmt.secret_files import write_private
from ivr.client import RechargeClient, tls_context
from marketing_iface.null import NullMarketing
from recharge_server.service import RechargeServer, ServerOptions, ServerStartError, ha_status, makeService
from testkit.lifecycle import sold_batch
from testkit.ports import free_tcp_port

ACCOUNT = Account("3100000001", "张三明", 12_850)


def wait_for(check: Callable[[], Any], seconds: float = 20.0) -> Any:
    """Poll ``check`` until it is true; the servers' own timers set the pace, so no fixed sleep."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event) + repr(event.get("log_failure") or ""))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


@pytest.fixture
def pair(bench: Any, live_reactor: Any) -> Iterator[dict[str, Any]]:
    pins = sold_batch(bench, "B1", quantity=3)
    settings = bench.system.settings
    marketing = NullMarketing([ACCOUNT])
    ports = {"A": free_tcp_port(), "B": free_tcp_port()}
    servers: dict[str, RechargeServer] = {}
    for name, other in (("A", "B"), ("B", "A")):
        servers[name] = makeService(
            settings, name, "127.0.0.1", ports[name], f"https://127.0.0.1:{ports[other]}", live_reactor,
            # Re-read the client table often (revocation shows fast) but trust a copy as long as a real server
            # does: on a busy machine a refresh can run late, and a stale table would turn requests into 503s.
            marketing=marketing, options=ServerOptions(client_refresh=0.2),
        )
    for server in servers.values():
        blockingCallFromThread(live_reactor, server.startService)
    yield {"servers": servers, "ports": ports, "pins": pins, "marketing": marketing, "settings": settings}
    for server in servers.values():
        if server.running:
            blockingCallFromThread(live_reactor, server.stopService)


def on_reactor(reactor: Any, f: Callable[[], Any]) -> Any:
    return blockingCallFromThread(reactor, f)


def test_a_recharge_survives_losing_the_primary(pair: dict[str, Any], live_reactor: Any, log_lines: list[str]) -> None:
    servers = pair["servers"]

    def leading() -> str | None:
        return on_reactor(live_reactor, lambda: next((n for n, s in servers.items() if s.keeper.is_leader), None))

    # Whichever server took the lease first is the primary: on a busy machine that need not be A.
    first = wait_for(leading)
    assert first is not None
    second = "B" if first == "A" else "A"
    a, b = servers[first], servers[second]
    # Generous per-server time: this test is about losing a server, not about a slow one on a busy machine.
    client = RechargeClient(
        [("127.0.0.1", pair["ports"][first]), ("127.0.0.1", pair["ports"][second])],
        load_api_key(pair["settings"].key_dir),
        timeout=5.0, total_timeout=10.0, tls=tls_context(str(pair["settings"].key_dir / "tls-ca.pem")),
    )
    serial, pin = sorted(pair["pins"].items())[0]
    call = "1790000000.1"
    assert client.account(call_id=call, account_no=ACCOUNT.account_no) == {
        "outcome": "ok", "account_no": ACCOUNT.account_no, "holder": "张*明", "balance": 12_850,
    }
    wrong = client.quote(call_id=call, seq=1, account_no=ACCOUNT.account_no, pin="0" * 18, caller="13800000000")
    assert wrong["outcome"] == Outcome.WRONG_PIN
    quoted = client.quote(call_id=call, seq=1, account_no=ACCOUNT.account_no, pin=pin, caller="13800000000")
    assert quoted["outcome"] == Outcome.OK and quoted["amount"] == 5000 and quoted["serial_tail"] == serial[-4:]
    committed = client.commit(call_id=call, seq=1)
    assert committed["outcome"] == Outcome.OK and committed["amount"] == 5000
    assert client.current == 0

    on_reactor(live_reactor, a.stopService)
    again = client.commit(call_id=call, seq=1)  # the dialog did not hear the first answer, say
    assert again == committed
    assert client.current == 1
    assert client.health()["name"] == second

    # The other server takes the jobs over and the outbox posts the recharge, once.
    assert wait_for(lambda: on_reactor(live_reactor, lambda: b.keeper.is_leader))
    assert wait_for(lambda: committed["recharge_ref"] in pair["marketing"].postings)
    assert len(pair["marketing"].postings) == 1
    assert pair["marketing"].accounts[ACCOUNT.account_no].balance == 12_850 + 5000

    def status_once_b_noticed() -> dict[str, Any] | None:
        # The survivor's heartbeat row says what its last look at its peer found; give it a moment to notice.
        rows = {r["name"]: r for r in ha_status(pair["settings"])}
        return rows if rows[second]["peer"]["reachable"] is False else None

    rows = wait_for(status_once_b_noticed)
    assert rows is not None
    assert rows[first]["role"] == "stopped" and not rows[first]["alive"]
    assert rows[second]["role"] == "leader" and rows[second]["holds_lease"] and rows[second]["lease_token"] == 2

    text = "\n".join(log_lines)
    assert call in text
    assert pin not in text and "0" * 18 not in text


def test_both_servers_see_each_other(pair: dict[str, Any], live_reactor: Any) -> None:
    a, b = pair["servers"]["A"], pair["servers"]["B"]

    def peers_known() -> bool:
        return on_reactor(
            live_reactor,
            lambda: a.keeper.status()["peer"]["reachable"] is True and b.keeper.status()["peer"]["reachable"] is True,
        )

    assert wait_for(peers_known), on_reactor(live_reactor, lambda: (a.keeper.status(), b.keeper.status()))
    assert wait_for(lambda: on_reactor(live_reactor, lambda: a.keeper.status()["peer"]["name"] == "B"))
    statuses = on_reactor(live_reactor, lambda: (a.keeper.role, b.keeper.role))
    assert sorted(statuses) == ["leader", "standby"]


def test_the_server_refuses_a_key_directory_that_is_not_its_databases(system: Any, tmp_path: Any, live_reactor: Any) -> None:
    import os
    import shutil
    from dataclasses import replace

    other = tmp_path / "other-keys"
    shutil.copytree(system.settings.key_dir, other)
    (other / "master.key").unlink()
    write_private(other / "master.key", os.urandom(32).hex().encode())
    settings = replace(system.settings, key_dir=other)
    with pytest.raises(KeyFileError):
        makeService(settings, "A", "127.0.0.1", 0, None, live_reactor, marketing=NullMarketing())


def test_a_taken_port_is_a_clear_error(system: Any, live_reactor: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = makeService(system.settings, "A", "127.0.0.1", port, None, live_reactor, marketing=NullMarketing())
        try:
            with pytest.raises(ServerStartError, match=f"cannot listen on 127.0.0.1:{port}"):
                on_reactor(live_reactor, server.privilegedStartService)
        finally:
            server.db.dispose()


def test_twistd_finds_the_plugin(tmp_path: Any) -> None:
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
    assert "recharge" in makers
    options = makers["recharge"].options()
    options.parseOptions(["--name", "A", "--port", "8441", "--peer", "https://127.0.0.1:8442",
                          "--database-url", "sqlite:///cards.db", "--key-dir", str(tmp_path)])
    assert (options["name"], options["port"], options["host"]) == ("A", 8441, "127.0.0.1")


# --- TLS and channel clients on the real pair ----------------------------------------------------


def _client(pair: dict[str, Any], server: str, key: bytes, name: str) -> RechargeClient:
    return RechargeClient([("127.0.0.1", pair["ports"][server])], key, timeout=5.0, total_timeout=10.0,
                          tls=tls_context(str(pair["settings"].key_dir / "tls-ca.pem")), client=name)


def test_the_channel_and_client_are_recorded_on_the_quote_and_the_recharge(pair: dict[str, Any], bench: Any) -> None:
    from sqlalchemy import select

    from cardmgmt import channel_clients
    from cardmgmt.context import Permission
    from cardmgmt.models import Quote, Recharge

    with bench.system.unit(Permission.MANAGE_CLIENTS) as ctx:
        pos_key = channel_clients.add(ctx, "pos-hall-1", "pos")
    serial, pin = sorted(pair["pins"].items())[0]
    client = _client(pair, "A", pos_key, "pos-hall-1")
    assert wait_for(lambda: client.account(call_id="pos-1", account_no=ACCOUNT.account_no)["outcome"] == "ok")
    assert client.quote(call_id="pos-1", seq=1, account_no=ACCOUNT.account_no, pin=pin, caller="")["outcome"] == "ok"
    assert client.commit(call_id="pos-1", seq=1)["outcome"] == "ok"
    with bench.system.db.transaction() as s:
        quote = s.execute(select(Quote).where(Quote.call_id == "pos-1")).scalar_one()
        recharge = s.execute(select(Recharge).where(Recharge.call_id == "pos-1")).scalar_one()
        assert (quote.channel, quote.client) == ("pos", "pos-hall-1")
        assert (recharge.channel, recharge.client, recharge.card_serial) == ("pos", "pos-hall-1", serial)


def test_a_revoked_client_is_refused_by_both_servers_within_the_bound(
    pair: dict[str, Any], bench: Any, log_lines: list[str]
) -> None:
    from cardmgmt import channel_clients
    from cardmgmt.context import Permission

    with bench.system.unit(Permission.MANAGE_CLIENTS) as ctx:
        key = channel_clients.add(ctx, "partner-x", "partner")
    clients = {name: _client(pair, name, key, "partner-x") for name in ("A", "B")}
    for name, client in clients.items():
        assert wait_for(lambda c=client, n=name: c.account(call_id=f"px-{n}", account_no=ACCOUNT.account_no)["outcome"] == "ok")
    with bench.system.unit(Permission.MANAGE_CLIENTS) as ctx:
        channel_clients.revoke(ctx, "partner-x", "contract ended")
    revoked_at = time.monotonic()
    for name, client in clients.items():
        def refused(c: RechargeClient = client) -> bool:
            return c.account(call_id="px-late", account_no=ACCOUNT.account_no).get("error") == "client_revoked"

        assert wait_for(refused, 5.0), f"server {name} still serves the revoked client"
    # The documented bound is channel_clients.MAX_AGE_SECONDS; this pair reloads every 0.2 s.
    assert time.monotonic() - revoked_at < channel_clients.MAX_AGE_SECONDS
    hotline = _client(pair, "A", load_api_key(pair["settings"].key_dir), "hotline")
    assert hotline.account(call_id="hl-1", account_no=ACCOUNT.account_no)["outcome"] == "ok"
    text = "\n".join(log_lines)
    assert key.hex() not in text and load_api_key(pair["settings"].key_dir).hex() not in text
    assert sum("client_revoked" in line and "partner-x" in line for line in log_lines) <= 2  # one line a minute per server


def test_a_server_without_a_certificate_says_what_to_run(system: Any, live_reactor: Any) -> None:
    for name in ("tls-server.pem", "tls-server.key"):
        (system.settings.key_dir / name).unlink()
    with pytest.raises(KeyFileError, match=r"run `cli.py keys tls"):
        makeService(system.settings, "A", "127.0.0.1", 0, None, live_reactor, marketing=NullMarketing())


def test_a_plain_http_peer_is_refused(system: Any, live_reactor: Any) -> None:
    with pytest.raises(ServerStartError, match="https://"):
        makeService(system.settings, "A", "127.0.0.1", 0, "http://127.0.0.1:8442", live_reactor, marketing=NullMarketing())


def test_the_client_table_is_reloaded_and_a_stale_copy_refused() -> None:
    from twisted.internet.task import Clock

    from cardmgmt import channel_clients as cc
    from recharge_server.service import ClientTableRefresher
    from testkit.live_api import run_now

    clock = Clock()
    table = {"hotline": cc.ClientEntry("hotline", "hotline", False)}
    down = []

    def load() -> dict[str, cc.ClientEntry]:
        if down:
            raise OSError("database unavailable")
        return dict(table)

    registry = cc.ClientRegistry(load, clock.seconds, max_age=5.0)
    registry.refresh()
    refresher = ClientTableRefresher(registry, 2.0, run_now, clock)
    refresher.startService()
    table["hotline"] = cc.ClientEntry("hotline", "hotline", True)
    clock.advance(2.0)
    with pytest.raises(cc.ClientRevoked):
        registry.lookup("hotline")
    down.append(True)
    clock.advance(2.0)
    clock.advance(2.0)
    with pytest.raises(cc.ClientRevoked):  # the last good copy still holds for up to max_age
        registry.lookup("hotline")
    clock.advance(2.0)
    with pytest.raises(cc.RegistryStale):
        registry.lookup("hotline")
    refresher.stopService()


def test_the_ops_listener_serves_metrics_on_the_loopback_only(bench: Any, live_reactor: Any) -> None:
    import urllib.request

    ops_port = free_tcp_port()
    server = makeService(bench.system.settings, "A", "127.0.0.1", free_tcp_port(), None, live_reactor,
                         marketing=NullMarketing([ACCOUNT]), ops_port=ops_port)
    blockingCallFromThread(live_reactor, server.startService)
    try:
        assert server.ops is not None and server.ops.port.getHost().host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/metrics", timeout=5) as r:
            assert "recharge_leader" in r.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/v1/health", timeout=5) as r:
            assert "lease_token" in json.loads(r.read())
    finally:
        blockingCallFromThread(live_reactor, server.stopService)


def test_a_marketing_mapping_that_does_not_fit_refuses_the_start(system: Any, live_reactor: Any, tmp_path: Any) -> None:
    import dataclasses

    from marketing_iface.mapping import STANDIN_MAPPING
    from marketing_iface.standin import create_standin

    url = f"sqlite:///{tmp_path / 'marketing.db'}"
    create_standin(url)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(STANDIN_MAPPING.read_text(encoding="utf-8").replace('balance = "balance"', 'balance = "ye"'))
    settings = dataclasses.replace(system.settings, marketing_url=url, marketing_mapping=mapping)
    with pytest.raises(ServerStartError, match=r"marketing mapping: .*mapping.toml: accounts table 'accounts' has no column 'ye'"):
        makeService(settings, "A", "127.0.0.1", 0, None, live_reactor)
    mapping.write_text("[accounts]\n")
    with pytest.raises(ServerStartError, match="lacks the \\[interface\\] section"):
        makeService(settings, "A", "127.0.0.1", 0, None, live_reactor)


def test_a_reactor_that_runs_its_timers_late_is_logged_and_one_on_time_is_not() -> None:
    from twisted.internet.task import Clock
    from twisted.logger import capturedLogs

    from recharge_server.service import _ReactorLag

    clock = Clock()
    with capturedLogs() as events:
        _ReactorLag(clock, every=0.05, clock=clock.seconds).start()
        clock.advance(0.05)  # on time
        clock.advance(0.05 + 0.08)  # the next tick 80 ms late: a reactor busy elsewhere
        clock.advance(0.05 + 0.01)  # 10 ms late: not worth a line
    lines = [formatEvent(e) for e in events]
    assert lines == ["reactor late ms=80.0"]
