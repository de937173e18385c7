"""``call``: the phone dialog's flow keyed from the command line, against a stand-in recharge client.

The servers themselves are in the end-to-end tests; here the client is a
stub so each outcome (recharged, account unknown, card refused, declined)
is checked for its output, its exit code and what the dialog sent.
"""

from pathlib import Path
from typing import Any

import pytest

from testkit.commandline import Installation, assert_ok, assert_one_line_error

PIN = "918273645546372819"


class StubClient:
    """Answers like a recharge server pair; records every request (a quote's PIN included, to check it went no further)."""

    def __init__(self, account: str = "ok", quote: str = "ok") -> None:
        self.outcomes = {"account": account, "quote": quote}
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, servers: Any, key: bytes, *, tls: Any = None, client: str | None = None) -> "StubClient":
        self.tls, self.client = tls, client
        return self

    def __enter__(self) -> "StubClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def account(self, **kw: Any) -> dict[str, Any]:
        self.requests.append(("account", kw))
        if self.outcomes["account"] != "ok":
            return {"outcome": self.outcomes["account"]}
        return {"outcome": "ok", "holder": "Wang Li", "balance": 1234}

    def quote(self, **kw: Any) -> dict[str, Any]:
        self.requests.append(("quote", kw))
        if self.outcomes["quote"] != "ok":
            return {"outcome": self.outcomes["quote"], "attempts_left": 2}
        return {"outcome": "ok", "amount": 5000, "serial_tail": "0017", "hold_seconds": 120}

    def commit(self, **kw: Any) -> dict[str, Any]:
        self.requests.append(("commit", kw))
        return {"outcome": "ok", "amount": 5000, "recharge_ref": "202611220001"}

    def cancel(self, **kw: Any) -> dict[str, Any]:
        self.requests.append(("cancel", kw))
        return {"outcome": "ok", "cancelled": True}


def run_call(inst: Installation, monkeypatch: pytest.MonkeyPatch, client: StubClient, *extra: str, input: str = PIN + "\n") -> Any:
    import ivr.client

    monkeypatch.setattr(ivr.client, "RechargeClient", client)
    return inst.run("call", "--server", "127.0.0.1:1", "--account", "3100000001", *extra, user=None, input=input)


def test_a_confirmed_recharge(inst: Installation, monkeypatch: pytest.MonkeyPatch) -> None:
    client = StubClient()
    stdout = assert_ok(run_call(inst, monkeypatch, client, "--yes", "--caller", "13800000001"))
    assert stdout == (
        "account 3100000001: Wang Li, balance 12.34 yuan\n"
        "card ...0017: 50.00 yuan\n"
        "recharged 50.00 yuan to 3100000001; reference 202611220001\n"
    )
    assert [name for name, _ in client.requests] == ["account", "quote", "commit"]
    assert client.client == "hotline" and client.tls is not None, "as the hotline, over TLS"
    assert client.requests[1][1]["caller"] == "13800000001"


def test_an_unknown_account_is_one_line(inst: Installation, monkeypatch: pytest.MonkeyPatch) -> None:
    client = StubClient(account="unknown_account")
    assert_one_line_error(run_call(inst, monkeypatch, client, "--yes"), "account 3100000001: unknown_account")
    assert [name for name, _ in client.requests] == ["account"]


def test_a_refused_card_is_one_line_and_never_shows_the_pin(inst: Installation, monkeypatch: pytest.MonkeyPatch) -> None:
    client = StubClient(quote="wrong_pin")
    result = run_call(inst, monkeypatch, client, "--yes")
    assert PIN not in result.output
    # The account summary is printed before the card is refused, so stdout is not empty.
    assert result.exit_code == 1 and result.stderr == "Error: card refused: wrong_pin\n"
    assert [name for name, _ in client.requests] == ["account", "quote"]


def test_a_declined_recharge_releases_the_card(inst: Installation, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    client = StubClient()
    result = run_call(inst, monkeypatch, client, input=PIN + "\nn\n")
    assert result.exit_code == 1 and "recharge declined; the card was not used" in result.stderr
    assert PIN not in result.output
    assert [name for name, _ in client.requests] == ["account", "quote", "cancel"]


def test_the_keyed_channel_offers_everything_the_dialog_asks_of_a_channel() -> None:
    from cli.call import KeyedChannel
    from ivr.dialog import Channel

    assert [n for n in vars(Channel) if not n.startswith("_") and not hasattr(KeyedChannel, n)] == []
