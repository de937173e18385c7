"""``replay``: phone the hotline with call scripts (SIPp) and check every step; a tester's tool.

The call-script machinery (``testkit.replay``) is imported only when the
command runs, so the product command line never loads tester code at
start-up; the defaults shown in the help are therefore written out here, and
a test keeps them equal to ``testkit.replay``'s.
"""

# test-case-name: tests.cli.test_replay

import sys
from pathlib import Path

import click

from cli import cli

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5160  # the Asterisk sandbox's SIP port
CALLER_AUDIO = Path("/usr/share/sip-tester/g711a.pcap")  # G.711 alaw RTP that ships with sip-tester


def parse_vars(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    from testkit import replay as replay_tool

    try:
        return dict(replay_tool.parse_var(v) for v in values)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@cli.command()
@click.argument("scripts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Asterisk's SIP address.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535), help="Asterisk's SIP UDP port (the sandbox's by default).")
@click.option("--var", "variables", multiple=True, callback=parse_vars, metavar="NAME=VALUE", help="A value for ${NAME} in the scripts (repeat).")
@click.option("--secret", "secrets", multiple=True, metavar="NAME", help="Read ${NAME} from standard input, a line each (hidden prompt at a terminal); for PINs (repeat).")
@click.option("--inject", type=click.Path(path_type=Path), metavar="CSV", help="Per-call values: a header line of names, then one line per call.")
@click.option("--concurrent", default=1, show_default=True, type=click.IntRange(1), help="Calls at once.")
@click.option("--calls", type=click.IntRange(1), help="Calls in all [default: the injection's rows, else --concurrent].")
@click.option("--workdir", type=click.Path(path_type=Path), help="Where the scenarios and SIPp's files go [default: a new temporary folder].")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), metavar="SECONDS", help="Give up on a script after this long.")
@click.option("--audio", type=click.Path(path_type=Path), default=CALLER_AUDIO, show_default=True, metavar="PCAP", help="The caller's voice (G.711 RTP), sent once the call is answered.")
@click.option("--no-audio", is_flag=True, help="Send no caller audio (Asterisk's Answer() then waits 0.5 s).")
@click.option("--audio-only", is_flag=True, help="Check only what the caller hears (no MESSAGE text needed: any Asterisk playing the hotline's prompts).")
@click.option("--text-only", is_flag=True, help="Check only the texts the dialog sends (no listening).")
@click.option("--prompts", type=click.Path(path_type=Path), metavar="DIR", help="The rendered prompts to listen for [default: the catalogue rendered once into ~/.cache/recharge-hotline/prompts].")
def replay(scripts: tuple[Path, ...], host: str, port: int, variables: dict[str, str], secrets: tuple[str, ...],
           inject: Path | None, concurrent: int, calls: int | None, workdir: Path | None, timeout: float | None,
           audio: Path, no_audio: bool, audio_only: bool, text_only: bool, prompts: Path | None) -> None:
    """Phone the hotline with call scripts (SIPp) and check each step: what it said and what it decided.

    Works against the Asterisk sandbox (python -m testkit.sandbox start) or
    any Asterisk running the hotline.  Each expected prompt, number and amount
    is checked in the dialog's text and in the call's audio (matched against
    the rendered prompts); --audio-only needs no text, --text-only does not
    listen.  Prints each step's PASS or FAIL; exits 3
    when a step failed, 1 (one line, nothing phoned) when a script, a value or
    the address is wrong.  Values read with --secret are never shown, and the
    files of the run that held them are deleted.

    \b
    Example:
      cli.py replay tests/calls/recharge-one-card.call --port 5160 --var CALLER=13800000001 \\
             --var ACCOUNT=3100000001 --var AMOUNT=5000 --secret PIN < pin.txt
    """
    from testkit import replay as replay_tool

    if audio_only and text_only:
        raise click.UsageError("--audio-only and --text-only exclude each other")
    try:
        ask = (lambda name: click.prompt(name, hide_input=True, err=True)) if sys.stdin.isatty() else None
        values = replay_tool.read_secrets(secrets, sys.stdin, ask=ask, given=variables)
        job = replay_tool.ReplayJob(scripts, host, port, {**variables, **values}, frozenset(values), inject,
                                    concurrent, calls, workdir, timeout, None if no_audio else audio,
                                    "audio" if audio_only else "text" if text_only else "both", prompts)
        code = replay_tool.run_job(job, echo=click.echo)
    except replay_tool.ReplayError as e:
        raise click.ClickException(str(e)) from None
    sys.exit(code)
