"""End-to-end tests of a pair of recharge servers built by ``makeService``, with the real recharge core.

Two servers run in one live reactor on loopback ports, over the real card
database (SQLite and PostgreSQL) with issued cards, and a ``NullMarketing``
stand-in for the marketing system.  The AGI client drives them; server A is
stopped half way and the same commit is answered by B, which also takes over
the jobs lease and posts the recharge through the outbox.
"""

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import formatEvent, globalLogPublisher

from cardmgmt.errors import KeyFileError
from cardmgmt.keys import load_api_key, write_private
from cardmgmt.marketing import Account
from cardmgmt.recharge import Outcome
from ivr.client import RechargeClient
from marketing_iface.null import NullMarketing
from recharge_server.service import RechargeServer, ServerStartError, ha_status, makeService
from testkit.lifecycle import issued_batch
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
    pins = issued_batch(bench, "B1", quantity=3)
    settings = bench.system.settings
    marketing = NullMarketing([ACCOUNT])
    ports = {"A": free_tcp_port(), "B": free_tcp_port()}
    servers: dict[str, RechargeServer] = {}
    for name, other in (("A", "B"), ("B", "A")):
        servers[name] = makeService(
            settings, name, "127.0.0.1", ports[name], f"http://127.0.0.1:{ports[other]}", live_reactor,
            marketing=marketing,
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
    a, b = pair["servers"]["A"], pair["servers"]["B"]
    # Generous per-server time: this test is about losing a server, not about a slow one on a busy machine.
    client = RechargeClient(
        [("127.0.0.1", pair["ports"]["A"]), ("127.0.0.1", pair["ports"]["B"])], load_api_key(pair["settings"].key_dir),
        timeout=5.0, total_timeout=10.0,
    )
    serial, pin = sorted(pair["pins"].items())[0]
    call = "1790000000.1"

    assert wait_for(lambda: on_reactor(live_reactor, lambda: a.keeper.is_leader))
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
    assert client.health()["name"] == "B"

    # B takes the jobs over and the outbox posts the recharge, once.
    assert wait_for(lambda: on_reactor(live_reactor, lambda: b.keeper.is_leader))
    assert wait_for(lambda: committed["recharge_ref"] in pair["marketing"].postings)
    assert len(pair["marketing"].postings) == 1
    assert pair["marketing"].accounts[ACCOUNT.account_no].balance == 12_850 + 5000

    def status_once_b_noticed() -> dict[str, Any] | None:
        # B's heartbeat row says what B's last look at its peer found; give it a moment to notice A is gone.
        rows = {r["name"]: r for r in ha_status(pair["settings"])}
        return rows if rows["B"]["peer"]["reachable"] is False else None

    rows = wait_for(status_once_b_noticed)
    assert rows is not None
    assert rows["A"]["role"] == "stopped" and not rows["A"]["alive"]
    assert rows["B"]["role"] == "leader" and rows["B"]["holds_lease"] and rows["B"]["lease_token"] == 2

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
    options.parseOptions(["--name", "A", "--port", "8441", "--peer", "http://127.0.0.1:8442",
                          "--database-url", "sqlite:///cards.db", "--key-dir", str(tmp_path)])
    assert (options["name"], options["port"], options["host"]) == ("A", 8441, "127.0.0.1")
