"""``call``: recharge a card through the server pair by the phone dialog's own rules, keyed from the command line.

The command has no flow of its own: it runs ``ivr.dialog``'s state machine
over a channel whose keys come from the options (the account, ``1`` to
confirm it, the PIN, the recharge confirmation, ``2`` for no further card),
so what is asked, when a held card is released and how an unanswered commit
is repeated are exactly what a caller gets.  When the dialog asks for
something a second time (a refused account or card), the channel hangs up,
as a caller with nothing more to key would.  What the servers answered is
printed as it arrives; the PIN is read without echo and never printed.
"""

# test-case-name: tests.cli.test_call

import logging
import secrets
import sys
from collections.abc import Callable
from typing import Any

import click

from cardmgmt import channel_clients, fields, tls
from cardmgmt.keys import load_api_key
from cardmgmt.money import format_fen
from cli import App, cli, pass_app
from ivr import dialog
from ivr.dialog import CallerHungUp, Prompt


class KeyedChannel:
    """A ``dialog.Channel`` that answers each question once, from ``answers``; asked again, the caller hangs up."""

    def __init__(self, answers: dict[str, Callable[[], str]]) -> None:
        self.answers = answers
        self.asked: set[str] = set()

    def read_digits(self, prompt_id: str, max_digits: int, timeout_ms: int) -> str | None:
        if prompt_id in self.asked or prompt_id not in self.answers:
            raise CallerHungUp()
        self.asked.add(prompt_id)
        return self.answers[prompt_id]()

    # Nothing is spoken at a terminal, and no key interrupts what is not spoken.
    def play(self, prompt_id: str, escape_digits: str = "") -> str:
        return ""

    def say_digits(self, digits: str, escape_digits: str = "") -> str:
        return ""

    def say_amount(self, fen: int, escape_digits: str = "") -> str:
        return ""

    def set_language(self, lang: str) -> None:
        pass

    def send_text(self, text: str) -> None:
        pass

    def hangup(self) -> None:
        pass

    # A terminal has no dialplan behind it: nothing to tell it when a commit goes out, and no agent to hand
    # the call to (each question is answered once, so the repeated failures that transfer never happen).
    def commit_sent(self) -> None:
        pass

    def transfer(self) -> None:
        pass


class ReportingBackend:
    """The recharge client, with each answer kept and the good news printed as it comes."""

    def __init__(self, client: Any, account_no: str) -> None:
        self.client, self.account_no = client, account_no
        self.answers: dict[str, dict[str, Any]] = {}

    def account(self, *, call_id: str, account_no: str) -> dict[str, Any]:
        a = self.answers["account"] = self.client.account(call_id=call_id, account_no=account_no)
        if a.get("outcome") == dialog.OK:
            click.echo(f"account {account_no}: {a['holder']}, balance {format_fen(a['balance'])} yuan")
        return a

    def quote(self, *, call_id: str, seq: int, account_no: str, pin: str, caller: str) -> dict[str, Any]:
        a = self.answers["quote"] = self.client.quote(call_id=call_id, seq=seq, account_no=account_no, pin=pin, caller=caller)
        if a.get("outcome") == dialog.OK:
            click.echo(f"card ...{a['serial_tail']}: {format_fen(a['amount'])} yuan")
        return a

    def commit(self, *, call_id: str, seq: int) -> dict[str, Any]:
        a = self.answers["commit"] = self.client.commit(call_id=call_id, seq=seq)
        if a.get("outcome") == dialog.OK:
            click.echo(f"recharged {format_fen(a['amount'])} yuan to {self.account_no}; reference {a['recharge_ref']}")
        return a

    def cancel(self, *, call_id: str, seq: int) -> dict[str, Any]:
        a = self.answers["cancel"] = self.client.cancel(call_id=call_id, seq=seq)
        return a

    def refusal(self) -> str | None:
        """Why the call did not recharge, in one line; ``None`` when it did."""
        outcome = {name: a.get("outcome") for name, a in self.answers.items()}
        if outcome.get("commit") == dialog.OK:
            return None
        if outcome.get("account") != dialog.OK:
            return f"account {self.account_no}: {outcome.get('account')}"
        if outcome.get("quote") != dialog.OK:
            return f"card refused: {outcome.get('quote')}"
        if "commit" not in outcome:
            return "recharge declined; the card was not used"
        return f"recharge not confirmed: {outcome.get('commit')}"


def parse_server(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, int]]:
    out = []
    for v in values:
        host, _, port = v.rpartition(":")
        if not host or not port.isdigit():
            raise click.BadParameter(f"{v!r} is not HOST:PORT")
        out.append((host, int(port)))
    return out


def read_pin() -> str:
    return click.prompt("card PIN", hide_input=True, err=True) if sys.stdin.isatty() else sys.stdin.readline().strip()


@cli.command()
@click.option("--server", "servers", multiple=True, required=True, callback=parse_server, help="HOST:PORT of a recharge server, primary first (repeat).")
@click.option("--account", required=True, help=f"The {fields.ACCOUNT_DIGITS}-digit electricity account number.")
@click.option("--caller", default="", help="The caller's number, for lockout counting.")
@click.option("--yes", is_flag=True, help="Confirm the recharge without asking.")
@pass_app
def call(app: App, servers: list[tuple[str, int]], account: str, caller: str, yes: bool) -> None:
    """Recharge a card through the server pair, the way the phone dialog does (for testers and operations).

    The PIN is read without echo (or from standard input when it is not a terminal) and never printed.

    Example: cli.py call --server 127.0.0.1:8441 --server 127.0.0.1:8442 --account 3100000001
    """
    from ivr.client import RechargeClient, tls_context

    # The dialog logs for Asterisk's log; here its outcome is the one line printed below.
    logging.getLogger(dialog.__name__).addHandler(logging.NullHandler())
    channel = KeyedChannel({
        Prompt.ENTER_ACCOUNT.value: lambda: account,
        Prompt.CONFIRM_ACCOUNT.value: lambda: "1",
        Prompt.ENTER_PIN.value: read_pin,
        Prompt.CONFIRM_RECHARGE.value: lambda: "1" if yes or click.confirm("recharge?", default=True) else "2",
        Prompt.ANOTHER_CARD.value: lambda: "2",
    })
    # As the hotline: its key (keys/api.key) and the installation's CA.
    context = tls_context(str(tls.ca_file(app.settings.key_dir)))
    with RechargeClient(servers, load_api_key(app.settings.key_dir), tls=context, client=channel_clients.HOTLINE) as client:
        backend = ReportingBackend(client, account)
        dialog.run_call(channel, backend, call_id=f"cli-{secrets.token_hex(8)}", caller=caller)
    refusal = backend.refusal()
    if refusal:
        raise click.ClickException(refusal)
